package envs

import (
	"context"
	"errors"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
)

// Nothing the fabric leaves behind after a crash, a lost lease or a database outage stays that
// way: a maintenance pass, run by every control plane, closes the audit rows of operations whose
// holder is gone, fleet-wide, and settles the environments such operations left in a
// transitional state or in ERROR, under a change lease, audited as "repair". With builds there
// is nothing to put back: a change interrupted before its commit never touched the current build,
// so the environment is settled at rest on it; one interrupted after its commit is switched
// again (the project directory follows the database). The same pass switches environments whose
// directory is behind their revision, hibernates builds (HIBERNATE_AFTER, DISK_BUDGET_BYTES) and
// now and then verifies a few builds (BUILD_VERIFY_INTERVAL).

// repairBatch bounds the environments one pass repairs, and switches.
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
// environments it repaired or switched.
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
	}
	for _, e := range envs {
		if ctx.Err() != nil {
			break
		}
		if s.repair(ctx, e, "settle") {
			repaired++
		}
	}
	behind, err := s.store.EnvsBehindDisk(ctx, cutoff, now, repairBatch)
	if err != nil {
		s.log.Warn("listing environments whose directory is behind", "err", err)
	}
	for _, e := range behind {
		if ctx.Err() != nil {
			break
		}
		if s.repair(ctx, e, "switch") {
			repaired++
		}
	}
	s.Hibernate(ctx)
	s.verifyIfDue(ctx)
	return closed, repaired
}

// repair brings one environment to rest on its current revision: the removal of what a create
// that never committed left (nothing was acknowledged), the directory switched to the current
// revision and its build, and the state settled. An environment of the layout before builds in
// ERROR (a change of that layout failed in place) is synced, which moves it to a build.
func (s *Service) repair(ctx context.Context, e store.Env, why string) bool {
	need := Need{PythonPath: e.PythonPath}
	if e.Revision == 0 {
		need = Need{}
	}
	// Nobody able to do it now: try again next pass, without an audit row for nothing.
	if _, err := s.agents.Pick(ctx, need); err != nil {
		s.log.Debug("no agent can repair an environment now", "env", e.Key.String(), "err", err)
		return false
	}
	o := op{key: e.Key, kind: "repair", mode: store.LeaseChange, caller: Caller{Actor: "repair"}, need: &need, withCaller: true,
		params: map[string]any{"state": e.State, "revision": e.Revision, "disk_revision": e.DiskRevision, "build_id": e.BuildID,
			"last_error": e.LastError, "reason": why}}
	err := s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		cur, err := s.store.GetEnv(ctx, e.Key)
		if errors.Is(err, store.ErrNotFound) {
			return map[string]any{"action": "none", "reason": "the environment is gone"}, nil
		}
		if err != nil {
			return nil, dbErr("reading the environment", err)
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
		if cur.BuildID == "" && (cur.State == store.StateError || cur.State == store.StateDeleting || why == "switch") {
			out, err := s.syncCurrent(ctx, r, e.Key)
			if err != nil {
				s.settle(ctx, e.Key)
				return map[string]any{"action": "sync", "revision": out.Revision}, err
			}
			return map[string]any{"action": "sync", "revision": out.Revision, "build_id": out.BuildID, "packages_installed": out.PackagesInstalled}, nil
		}
		settled := cur.State
		if why == "settle" || transitional(cur.State) || cur.State == store.StateError {
			settled = s.restingState(ctx, e.Key)
			if err := s.store.SetState(ctx, e.Key, settled, "", s.now()); err != nil {
				return nil, dbErr("settling the state", err)
			}
		}
		switched := false
		if cur.BuildID != "" && (cur.DiskRevision < cur.Revision || cur.State == store.StateDeleting || why == "switch") {
			files, rev, err := s.currentFiles(ctx, e.Key)
			if err != nil {
				return nil, err
			}
			if !s.switchTo(ctx, r.agent, e.Key, files, rev.BuildID, rev.Number, r.id) {
				return map[string]any{"action": "switch", "state": settled}, errors.New("the switch failed; the next pass tries again")
			}
			switched = true
		}
		return map[string]any{"action": "settle", "state": settled, "switched": switched, "revision": cur.Revision}, nil
	})
	if err != nil {
		s.log.Warn("repairing an environment", "env", e.Key.String(), "state", e.State, "err", err)
		return false
	}
	s.log.Info("repaired an environment", "env", e.Key.String(), "state", e.State, "revision", e.Revision, "reason", why)
	return true
}
