package envs

import (
	"context"
	"errors"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
)

// Nothing the fabric leaves behind after a crash, a lost lease or a database outage stays that
// way: a maintenance pass, run by every control plane, closes the audit rows of operations whose
// holder is gone, fleet-wide, and repairs the environments such operations left in a transitional
// state or in ERROR, by syncing them back to their current database revision under an exclusive
// lease, audited as "repair".

// repairBatch bounds the environments one pass repairs.
const repairBatch = 50

// Maintain runs a maintenance pass every LeaseTTL until ctx ends. The caller owns the goroutine
// that runs it and waits for it to return.
func (s *Service) Maintain(ctx context.Context) {
	t := time.NewTicker(s.graceAfterLease())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.MaintainOnce(ctx)
		}
	}
}

// graceAfterLease is how long a row or a state may look abandoned before the pass acts on it:
// one lease TTL, past which the holder's lease has expired (an intent row is written a moment
// before its lease, a state is recorded a moment before its lease is released).
func (s *Service) graceAfterLease() time.Duration { return s.opt.LeaseTTL }

// MaintainOnce runs one maintenance pass and returns how many audit rows it closed and how many
// environments it repaired.
func (s *Service) MaintainOnce(ctx context.Context) (closed, repaired int) {
	now := s.now()
	cutoff := now.Add(-s.graceAfterLease())
	closed, err := s.store.AbandonStaleOperations(ctx, cutoff, now)
	if err != nil {
		s.log.Warn("closing abandoned operations", "err", err)
	} else if closed > 0 {
		s.log.Warn("closed operations whose holder stopped", "count", closed)
	}
	envs, err := s.store.EnvsToRepair(ctx, cutoff, now, repairBatch)
	if err != nil {
		s.log.Warn("listing environments to repair", "err", err)
		return closed, 0
	}
	for _, e := range envs {
		if ctx.Err() != nil {
			break
		}
		if s.repair(ctx, e) {
			repaired++
		}
	}
	return closed, repaired
}

// repair brings one environment back to its current database revision: a sync of that revision,
// or, for a create that never committed (nothing was acknowledged), the removal of what it left.
func (s *Service) repair(ctx context.Context, e store.Env) bool {
	need := Need{PythonPath: e.PythonPath}
	if e.Revision == 0 {
		need = Need{}
	}
	// Nobody able to do it now: try again next pass, without an audit row for nothing.
	if _, err := s.agents.Pick(ctx, need); err != nil {
		s.log.Debug("no agent can repair an environment now", "env", e.Key.String(), "err", err)
		return false
	}
	o := op{key: e.Key, kind: "repair", exclusive: true, caller: Caller{Actor: "repair"}, need: &need, withCaller: true,
		params: map[string]any{"state": e.State, "revision": e.Revision, "last_error": e.LastError}}
	err := s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		cur, err := s.store.GetEnv(ctx, e.Key)
		if errors.Is(err, store.ErrNotFound) {
			return map[string]any{"action": "none", "reason": "the environment is gone"}, nil
		}
		if err != nil {
			return nil, dbErr("reading the environment", err)
		}
		if cur.State == store.StateActive || cur.State == store.StateIdle {
			return map[string]any{"action": "none", "reason": "another operation settled it"}, nil
		}
		if cur.Revision == 0 {
			uctx, cancel := s.uvContext(ctx)
			defer cancel()
			if _, err := r.agent.Delete(uctx, e.Key); err != nil {
				return nil, err
			}
			if err := s.store.DeleteEnv(ctx, e.Key, r.lease.ID); err != nil {
				return nil, dbErr("removing the record of an unfinished create", err)
			}
			return map[string]any{"action": "removed an unfinished create"}, nil
		}
		n, rev, err := s.syncCurrent(ctx, r, e.Key, cur.PythonPath)
		if err != nil {
			return map[string]any{"action": "sync", "revision": rev.Number}, err
		}
		return map[string]any{"action": "sync", "revision": rev.Number, "packages_installed": n}, nil
	})
	if err != nil {
		s.log.Warn("repairing an environment", "env", e.Key.String(), "state", e.State, "err", err)
		return false
	}
	s.log.Info("repaired an environment", "env", e.Key.String(), "state", e.State, "revision", e.Revision)
	return true
}
