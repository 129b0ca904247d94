package envs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// CleanupRequest is POST /envs/cleanup.
type CleanupRequest struct {
	IdleFor time.Duration // negative: CLEANUP_IDLE_HOURS; 0: everything not in use now
	DryRun  bool
}

// CleanupEntry is one environment cleanup considered.
type CleanupEntry struct {
	WorkflowID string
	NodeID     string
	VersionID  string
	LastUsedAt time.Time
	BytesFreed int64
	Reason     string
}

// CleanupResult is the outcome of a cleanup pass.
type CleanupResult struct {
	IdleHours float64
	DryRun    bool
	Removed   []CleanupEntry
	Skipped   []CleanupEntry
	// BytesFreed is what the removals freed, or with a dry run what they would free.
	BytesFreed int64
	// UsageReports counts the agents whose usage reports were merged before choosing.
	UsageReports int
	// BuildsRemoved are the builds no environment's current revision referenced, removed (or,
	// with a dry run, that would be); BuildsSkipped those a run held.
	BuildsRemoved []BuildEntry
	BuildsSkipped []BuildEntry
}

// Cleanup removes environments unused for longer than the idle limit; each removal is audited
// as "cleanup". Environments busy with another operation are skipped, not waited for. Then it
// removes the builds no environment's current revision references (never one a run holds),
// each audited as remove_build.
func (s *Service) Cleanup(ctx context.Context, c Caller, req CleanupRequest) (CleanupResult, error) {
	if req.IdleFor < 0 {
		req.IdleFor = s.opt.CleanupIdle
	}
	res := CleanupResult{IdleHours: req.IdleFor.Hours(), DryRun: req.DryRun, Removed: []CleanupEntry{}, Skipped: []CleanupEntry{}}
	// Uses seen on the hosts, outside the API, count: an environment a workflow executor runs
	// directly is not idle.
	res.UsageReports = s.CollectUsage(ctx)
	cutoff := s.now().Add(-req.IdleFor)
	idle, err := s.store.IdleEnvs(ctx, cutoff, 1000)
	if err != nil {
		return res, dbErr("finding idle environments", err)
	}
	var measurer Agent // a dry run measures what each removal would free through one agent
	if req.DryRun && len(idle) > 0 {
		measurer, _ = s.agents.Pick(ctx, Need{})
	}
	for _, e := range idle {
		entry := CleanupEntry{WorkflowID: e.Key.WorkflowID, NodeID: e.Key.NodeID, VersionID: e.Key.VersionID, LastUsedAt: e.LastUsedAt}
		if req.DryRun {
			if measurer != nil {
				dctx, cancel := context.WithTimeout(ctx, time.Minute)
				entry.BytesFreed, _ = measurer.DiskUsage(dctx, e.Key)
				cancel()
			}
			res.BytesFreed += entry.BytesFreed
			res.Removed = append(res.Removed, entry)
			continue
		}
		d, err := s.remove(ctx, c, e.Key, "cleanup", map[string]any{"idle_hours": req.IdleFor.Hours(), "last_used_at": e.LastUsedAt})
		if err != nil {
			if errcode.Of(err) == errcode.DBAuditError {
				return res, err
			}
			entry.Reason = err.Error()
			res.Skipped = append(res.Skipped, entry)
			continue
		}
		entry.BytesFreed = d.BytesFreed
		res.BytesFreed += d.BytesFreed
		res.Removed = append(res.Removed, entry)
	}
	res.BuildsRemoved, res.BuildsSkipped, err = s.cleanupBuilds(ctx, req.DryRun)
	for _, b := range res.BuildsRemoved {
		res.BytesFreed += b.BytesFreed
	}
	return res, err
}

// CollectUsage merges the last uses every live agent reports into the database, and returns how
// many agents answered. Each agent is asked only for what is newer than its last report.
func (s *Service) CollectUsage(ctx context.Context) int {
	answered := 0
	for _, a := range s.agents.All(ctx) {
		s.usageMu.Lock()
		since := s.usageSince[a.Name()]
		s.usageMu.Unlock()
		uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		uses, err := a.Usage(uctx, since)
		cancel()
		if err != nil {
			s.log.Warn("collecting usage from an agent", "agent", a.Name(), "err", err)
			continue
		}
		answered++
		newest := since
		for _, u := range uses {
			err := s.store.Touch(ctx, u.Key, u.At)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				s.log.Warn("recording a reported use", "env", u.Key.String(), "err", err)
				continue
			}
			if u.At.After(newest) {
				newest = u.At
			}
		}
		s.usageMu.Lock()
		s.usageSince[a.Name()] = newest
		s.usageMu.Unlock()
	}
	return answered
}

// PruneResult is a cache prune.
type PruneResult struct {
	Pruned      bool
	Reason      string
	Agent       string
	BytesBefore int64
	BytesAfter  int64
}

// cacheKey is the key the audit rows and the lease of a cache prune carry: the shared uv cache
// is not an environment, and "_fabric" is not a valid workflow id, so no environment shares it.
var cacheKey = envid.Key{WorkflowID: "_fabric", NodeID: "uv_cache", VersionID: "prune"}

// PruneCache prunes the shared uv cache through one agent, but only while the fleet holds no
// mutation: `uv cache prune` locks the cache exclusively and every uv command waits for it. A
// mutation that starts after the check waits on uv's own lock, so the check is for smoothness,
// uv's lock for safety. A prune is audited like every side effect (kind prune_cache, under
// cacheKey, with the agent and the cache's size before and after), and its lease keeps two
// control planes from pruning at once.
func (s *Service) PruneCache(ctx context.Context, c Caller) (PruneResult, error) {
	n, err := s.store.CountLeases(ctx, s.now(), true)
	if err != nil {
		return PruneResult{}, dbErr("counting leases", err)
	}
	if n > 0 {
		return PruneResult{Reason: fmt.Sprintf("%d uv operation(s) under way in the fleet", n)}, nil
	}
	if _, err := s.agents.Pick(ctx, Need{}); err != nil {
		return PruneResult{Reason: err.Error()}, nil
	}
	var res PruneResult
	o := op{key: cacheKey, kind: "prune_cache", mode: store.LeaseChange, caller: c, need: &Need{}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		res.Agent = r.agent.Name()
		before, after, err := r.agent.PruneCache(ctx)
		if err != nil {
			return nil, err
		}
		res.Pruned, res.BytesBefore, res.BytesAfter = true, before, after
		return map[string]any{"bytes_before": before, "bytes_after": after}, nil
	})
	var locked *LockedError
	if errors.As(err, &locked) {
		return PruneResult{Reason: "another control plane is pruning the cache"}, nil
	}
	return res, err
}
