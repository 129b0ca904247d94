package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/shared/gossip"
)

// FleetIDFile is where, under DATA_ROOT, the shared storage keeps its identity. The first agent
// on a fresh share writes it; every agent gossips it, and control planes refuse agents whose
// storage has another identity (they would be working on a different share).
const FleetIDFile = ".envfabric-fleet-id"

// fleetID reads the storage's identity, creating it when this is the first agent on the share.
func fleetID(dataRoot string, logger *slog.Logger) (string, error) {
	p := filepath.Join(dataRoot, FleetIDFile)
	for range 3 {
		b, err := os.ReadFile(p)
		if err == nil {
			id := strings.TrimSpace(string(b))
			if id == "" {
				// Being written by another agent right now, or truncated: try again shortly.
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return id, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read the fleet id %s: %w", p, err)
		}
		raw := make([]byte, 16)
		rand.Read(raw)
		id := "fleet-" + hex.EncodeToString(raw)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue // another agent won the race: read its id
		}
		if err != nil {
			return "", fmt.Errorf("create the fleet id %s: %w", p, err)
		}
		_, werr := f.WriteString(id + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", fmt.Errorf("write the fleet id %s: %w", p, werr)
		}
		logger.Warn("this share had no fleet id; this agent created one. Every agent of the fleet must mount the same share",
			"fleet_id", id, "path", p)
		return id, nil
	}
	return "", fmt.Errorf("the fleet id file %s stays empty", p)
}

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
