package envs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// The lifecycle of builds beyond a change: hibernation (a build unused for HIBERNATE_AFTER, or
// beyond DISK_BUDGET_BYTES least recently used first, is removed and its environments show
// HIBERNATED until a run or a sync wakes them), the removal of builds no environment's current
// revision references (cleanup), and the periodic verification of builds against their
// packages' RECORD files. A build a run holds is never removed: the agent refuses (in_use).

// hibernateBatch bounds the builds one maintenance pass hibernates; verifyBatch the builds one
// verification pass reads (bounded I/O: each reads the sizes of every file of a build).
const (
	hibernateBatch = 20
	verifyBatch    = 4
)

// buildKey is the key the audit rows of a build's removal carry: "_fabric" is not a valid
// workflow id, so no environment shares it.
func buildKey(id string) envid.Key {
	return envid.Key{WorkflowID: "_fabric", NodeID: "builds", VersionID: id}
}

// BuildEntry is one build a cleanup or a hibernation pass considered.
type BuildEntry struct {
	BuildID     string
	CurrentEnvs int
	LastUsedAt  time.Time
	BytesFreed  int64
	Reason      string // why it was removed, or why it was skipped
}

// removeBuild removes one build through any agent (builds live on the shared storage) and
// records it REMOVED, which moves the environments whose current build it is to HIBERNATED.
// Audited as remove_build under buildKey. It reports whether the build is gone.
func (s *Service) removeBuild(ctx context.Context, b store.Build, reason string) (BuildEntry, bool) {
	entry := BuildEntry{BuildID: b.ID, CurrentEnvs: b.CurrentEnvs, LastUsedAt: b.LastUsedAt, Reason: reason}
	removed := false
	o := op{key: buildKey(b.ID), kind: "remove_build", noLease: true, caller: Caller{Actor: "maintenance"}, need: &Need{},
		params: map[string]any{"build_id": b.ID, "reason": reason, "current_envs": b.CurrentEnvs, "last_used_at": b.LastUsedAt}}
	err := s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		out, err := r.agent.RemoveBuild(rctx, b.ID)
		if err != nil {
			return nil, err
		}
		if out.InUse {
			entry.Reason = "in use by a run"
			return map[string]any{"in_use": true}, nil
		}
		if err := s.store.SetBuildState(ctx, b.ID, store.BuildRemoved, s.now()); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, dbErr("recording the build removed", err)
		}
		entry.BytesFreed, removed = out.BytesFreed, true
		return map[string]any{"existed": out.Existed, "bytes_freed": out.BytesFreed}, nil
	})
	if err != nil {
		entry.Reason = err.Error()
		s.log.Warn("removing a build", "build", b.ID, "reason", reason, "err", err)
	}
	return entry, removed
}

// Hibernate removes the builds unused for HIBERNATE_AFTER, then, beyond DISK_BUDGET_BYTES, the
// least recently used READY builds until the rest fits. It returns what it removed.
func (s *Service) Hibernate(ctx context.Context) []BuildEntry {
	var out []BuildEntry
	now := s.now()
	if s.opt.HibernateAfter > 0 {
		old, err := s.store.ListBuilds(ctx, store.BuildFilter{State: store.BuildReady, UnusedBefore: now.Add(-s.opt.HibernateAfter), Limit: hibernateBatch})
		if err != nil {
			s.log.Warn("listing builds to hibernate", "err", err)
		}
		for _, b := range old {
			if e, ok := s.removeBuild(ctx, b, "hibernate: unused for HIBERNATE_AFTER"); ok {
				out = append(out, e)
			}
		}
	}
	if s.opt.DiskBudgetBytes > 0 {
		ready, err := s.store.ListBuilds(ctx, store.BuildFilter{State: store.BuildReady, Limit: 10000})
		if err != nil {
			s.log.Warn("listing builds for the disk budget", "err", err)
			return out
		}
		var total int64
		for _, b := range ready {
			total += b.Bytes
		}
		// Bounded attempts per pass: builds that runs hold are skipped and tried again next pass.
		for i := 0; i < len(ready) && i < 10*hibernateBatch && total > s.opt.DiskBudgetBytes; i++ {
			if e, ok := s.removeBuild(ctx, ready[i], "hibernate: beyond DISK_BUDGET_BYTES"); ok {
				total -= ready[i].Bytes
				out = append(out, e)
			}
		}
	}
	return out
}

// cleanupBuilds removes the builds no environment's current revision references (never one a
// run holds: the agent refuses). With dryRun it only lists them. A change materialises its build
// a moment before it commits it, when nothing references the build yet: so builds are removed
// only while no change is under way in the fleet, and only those unused for a lease TTL.
func (s *Service) cleanupBuilds(ctx context.Context, dryRun bool) (removed, skipped []BuildEntry, err error) {
	removed, skipped = []BuildEntry{}, []BuildEntry{}
	if !dryRun {
		n, err := s.store.CountLeases(ctx, s.now(), true)
		if err != nil {
			return removed, skipped, dbErr("counting leases", err)
		}
		if n > 0 {
			s.log.Info("builds cleanup postponed: changes are under way", "changes", n)
			return removed, skipped, nil
		}
	}
	cutoff := s.now().Add(-s.graceAfterLease())
	// Every unreferenced build, a batch at a time after a cursor; a real pass keeps the cursor in
	// the database (as the environments' pass does), so the next leader resumes it.
	err = s.cursorPass(ctx, store.CursorBuilds, "builds cleanup", dryRun, func(after store.CleanupCursor) (store.CleanupCursor, int, error) {
		builds, err := s.store.ListBuilds(ctx, store.BuildFilter{OnDisk: true, Unreferenced: true, UnusedBefore: cutoff, After: after, Limit: s.cleanupBatch()})
		if err != nil {
			return after, 0, dbErr("listing unreferenced builds", err)
		}
		for _, b := range builds {
			if dryRun {
				removed = append(removed, BuildEntry{BuildID: b.ID, LastUsedAt: b.LastUsedAt, BytesFreed: b.Bytes, Reason: "unreferenced"})
				continue
			}
			// Look again: a change may have made it current since the list was read.
			if cur, err := s.store.GetBuild(ctx, b.ID); err != nil || cur.CurrentEnvs > 0 || !cur.LastUsedAt.Before(cutoff) {
				continue
			}
			if e, ok := s.removeBuild(ctx, b, "unreferenced"); ok {
				removed = append(removed, e)
			} else {
				skipped = append(skipped, e)
			}
		}
		if len(builds) == 0 {
			return after, 0, nil
		}
		last := builds[len(builds)-1]
		return store.CleanupCursor{LastUsedAt: last.LastUsedAt, BuildID: last.ID}, len(builds), nil
	})
	return removed, skipped, err
}

// verifyIfDue runs a verification pass when BUILD_VERIFY_INTERVAL has passed since the last.
func (s *Service) verifyIfDue(ctx context.Context) {
	if s.opt.BuildVerifyInterval <= 0 {
		return
	}
	s.verifyMu.Lock()
	due := s.now().Sub(s.lastVerify) >= s.opt.BuildVerifyInterval
	if due {
		s.lastVerify = s.now()
	}
	s.verifyMu.Unlock()
	if due {
		s.VerifyBuilds(ctx, verifyBatch)
	}
}

// Verified is one build a verification pass checked.
type Verified struct {
	BuildID string
	Intact  bool
	Damaged []string
}

// VerifyBuilds checks up to n builds against their packages' RECORD files, going on where the
// last pass stopped (through the environments, whose current builds they are), and records the
// damaged ones DAMAGED (a sync of one of their environments replaces them).
func (s *Service) VerifyBuilds(ctx context.Context, n int) []Verified {
	s.verifyMu.Lock()
	after := s.verifyFrom
	s.verifyMu.Unlock()
	var out []Verified
	seen := map[string]bool{}
	wrapped := false
	for len(out) < n && ctx.Err() == nil {
		page, err := s.store.ListEnvs(ctx, store.ListFilter{After: after, Limit: 50})
		if err != nil {
			s.log.Warn("listing environments to verify their builds", "err", err)
			return out
		}
		if len(page) == 0 {
			if wrapped || after == (envid.Key{}) {
				break
			}
			wrapped, after = true, envid.Key{} // from the start again, once
			continue
		}
		for _, e := range page {
			after = e.Key
			if e.BuildID == "" || seen[e.BuildID] || e.State == store.StateHibernated || e.Revision == 0 {
				continue
			}
			seen[e.BuildID] = true
			v, err := s.verifyOne(ctx, e)
			if err != nil {
				s.log.Warn("verifying a build", "build", e.BuildID, "env", e.Key.String(), "err", err)
				continue
			}
			out = append(out, v)
			if len(out) >= n {
				break
			}
		}
	}
	s.verifyMu.Lock()
	s.verifyFrom = after
	s.verifyMu.Unlock()
	return out
}

// verifyOne verifies env's current build through an agent with its interpreter and records
// damage.
func (s *Service) verifyOne(ctx context.Context, e store.Env) (Verified, error) {
	v := Verified{BuildID: e.BuildID}
	a, err := s.agents.Pick(ctx, Need{PythonPath: e.PythonPath})
	if err != nil {
		return v, err
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	disk, err := a.Inspect(ictx, InspectRequest{Key: e.Key, PythonPath: e.PythonPath, Verify: true, ExpectedBuildID: e.BuildID})
	if err != nil {
		return v, err
	}
	if disk.Check == nil {
		return v, fmt.Errorf("the agent did not verify build %s", e.BuildID)
	}
	v.Intact = disk.Check.Intact
	for _, d := range disk.Check.Damaged {
		v.Damaged = append(v.Damaged, d.Name)
	}
	s.recordCheck(ctx, disk.Check)
	return v, nil
}

// recordCheck records a build found damaged as DAMAGED (only a complete build: an incomplete or
// missing one is hibernated or removed, which its state says already).
func (s *Service) recordCheck(ctx context.Context, c *BuildCheck) {
	if c == nil || c.BuildID == "" || !c.Complete || c.Intact {
		return
	}
	b, err := s.store.GetBuild(ctx, c.BuildID)
	if err != nil || b.State != store.BuildReady {
		return
	}
	if err := s.store.SetBuildState(ctx, c.BuildID, store.BuildDamaged, s.now()); err != nil {
		s.log.Warn("recording a damaged build", "build", c.BuildID, "err", err)
		return
	}
	s.log.Warn("a build is damaged: its files no longer match its packages' RECORD; a sync of its environments replaces it",
		"build", c.BuildID, "packages", len(c.Damaged))
}
