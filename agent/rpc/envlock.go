package rpc

import (
	"context"
	"sync"

	"github.com/envfabric/envfabric/shared/envid"
)

// envLocks serialises the calls that write one project on this host (Switch, delete). The
// control plane's lease already allows one change per environment, but a caller that gives up
// (its RPC cancelled) releases its lease while this agent may still be writing; the next writer
// waits here until that call is done, before it even tries the lock on the shared storage.
type envLocks struct {
	mu   sync.Mutex
	held map[envid.Key]chan struct{} // closed when the holder unlocks
}

// lock waits for key's lock, or for ctx to end.
func (l *envLocks) lock(ctx context.Context, key envid.Key) (unlock func(), err error) {
	for {
		l.mu.Lock()
		if l.held == nil {
			l.held = map[envid.Key]chan struct{}{}
		}
		ch, busy := l.held[key]
		if !busy {
			done := make(chan struct{})
			l.held[key] = done
			l.mu.Unlock()
			return func() {
				l.mu.Lock()
				delete(l.held, key)
				l.mu.Unlock()
				close(done)
			}, nil
		}
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
