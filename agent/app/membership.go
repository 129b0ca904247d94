package app

// This agent's membership in the fleet: gossip, and the metadata it gossips.

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/shared/gossip"
)

// interpreters is what this host offers environments, as gossiped.
func interpreters(ctx context.Context, ex *uv.Executor, defaultPython string) []gossip.Python {
	var out []gossip.Python
	for _, p := range ex.Offered(ctx, defaultPython) {
		out = append(out, gossip.Python{Version: p.Version, Path: p.Path})
	}
	return out
}

// membership is the agent's place in the fleet. One goroutine (refresh) owns its metadata: it
// alone changes and stores it, as the load and the interpreters change; memberlist's own
// goroutines only read the last stored copy.
type membership struct {
	member  *gossip.Member
	meta    atomic.Pointer[gossip.Meta]
	load    func() int
	pythons func(context.Context) []gossip.Python
	log     *slog.Logger
	done    chan struct{}
	stop    context.CancelFunc
	once    sync.Once
}

// Intervals at which the metadata is looked at again: the load changes with every operation and
// is gossiped at most this often; interpreters change only when an operator installs one.
const (
	loadRefresh    = time.Second
	pythonsRefresh = 5 * time.Minute
)

func joinFleet(ctx context.Context, cfg config.Config, base gossip.Meta, load func() int,
	pythons func(context.Context) []gossip.Python, logger *slog.Logger) (*membership, error) {
	m := &membership{load: load, pythons: pythons, log: logger, done: make(chan struct{})}
	m.meta.Store(&base)
	member, err := gossip.Join(ctx, cfg.Gossip, gossip.Hooks{
		Meta: func() gossip.Meta { return *m.meta.Load() },
		Accept: func(peer gossip.Meta) error {
			// Peers on another share are not this fleet; control planes carry the fleet id they
			// adopted, or none yet.
			if peer.Fleet != "" && peer.Fleet != base.Fleet {
				return fmt.Errorf("wrong storage: fleet %s, this agent's share is %s", peer.Fleet, base.Fleet)
			}
			return nil
		},
	}, logger)
	if err != nil {
		return nil, err
	}
	m.member = member
	var lctx context.Context
	lctx, m.stop = context.WithCancel(ctx)
	go m.refresh(lctx)
	return m, nil
}

// refresh owns the metadata: it gossips the load when it changes and the interpreters when an
// operator added or removed one.
func (m *membership) refresh(ctx context.Context) {
	defer close(m.done)
	load := time.NewTicker(loadRefresh)
	defer load.Stop()
	pythons := time.NewTicker(pythonsRefresh)
	defer pythons.Stop()
	for {
		next := *m.meta.Load()
		select {
		case <-ctx.Done():
			return
		case <-load.C:
			next.Load = m.load()
		case <-pythons.C:
			next.Pythons = m.pythons(ctx)
		}
		if reflect.DeepEqual(next, *m.meta.Load()) {
			continue
		}
		m.meta.Store(&next)
		if err := m.member.UpdateMeta(2 * time.Second); err != nil {
			m.log.Debug("gossiping this agent's metadata", "err", err)
		}
	}
}

// close leaves the fleet; control planes stop routing here at once instead of waiting for the
// failure detector.
func (m *membership) close() {
	m.once.Do(func() {
		m.stop()
		<-m.done
		if err := m.member.Close(); err != nil {
			m.log.Warn("leaving the fleet", "err", err)
		}
	})
}
