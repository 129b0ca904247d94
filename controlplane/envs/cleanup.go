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
//
// A pass covers every idle environment, in batches of Options.CleanupBatch read in (last use,
// key) order after a cursor. A real pass saves the cursor after each batch, so a pass cut short
// (the leader stopped, the database went away) is resumed by the next one, whichever control
// plane runs it; a dry run reads from the start and saves nothing. Its cost grows with the
// candidates, not with the environments: the database reads one index from the cursor on, and
// the shared storage's use signal is read by one agent, for the candidates of the batch only.
func (s *Service) Cleanup(ctx context.Context, c Caller, req CleanupRequest) (CleanupResult, error) {
	if req.IdleFor < 0 {
		req.IdleFor = s.opt.CleanupIdle
	}
	res := CleanupResult{IdleHours: req.IdleFor.Hours(), DryRun: req.DryRun, Removed: []CleanupEntry{}, Skipped: []CleanupEntry{}}
	// Uses seen on the hosts, outside the API, count: an environment a workflow executor runs
	// directly is not idle. Every agent reports its own host's (its processes, its runs).
	res.UsageReports = s.CollectUsage(ctx)
	cutoff := s.now().Add(-req.IdleFor)
	var checker Agent // the one agent that reads the shared storage for the fleet, and measures dry runs
	err := s.cursorPass(ctx, store.CursorEnvs, "cleanup", req.DryRun, func(after store.CleanupCursor) (store.CleanupCursor, int, error) {
		batch, err := s.store.IdleEnvsAfter(ctx, cutoff, after, s.cleanupBatch())
		if err != nil {
			return after, 0, dbErr("finding idle environments", err)
		}
		if len(batch) == 0 {
			return after, 0, nil
		}
		if checker == nil {
			checker, _ = s.agents.Pick(ctx, Need{})
		}
		used, unread := s.storageUses(ctx, checker, batch, cutoff)
		for _, e := range batch {
			entry := CleanupEntry{WorkflowID: e.Key.WorkflowID, NodeID: e.Key.NodeID, VersionID: e.Key.VersionID, LastUsedAt: e.LastUsedAt}
			if used[e.Key] {
				continue // used after the cutoff: not idle (the use is recorded)
			}
			if unread != nil {
				// Never remove what might be in use: without the storage's signal it is unknown.
				entry.Reason = unread.Error()
				res.Skipped = append(res.Skipped, entry)
				continue
			}
			if req.DryRun {
				dctx, cancel := context.WithTimeout(ctx, time.Minute)
				entry.BytesFreed, _ = checker.DiskUsage(dctx, e.Key)
				cancel()
				res.BytesFreed += entry.BytesFreed
				res.Removed = append(res.Removed, entry)
				continue
			}
			d, err := s.remove(ctx, c, e.Key, "cleanup", map[string]any{"idle_hours": req.IdleFor.Hours(), "last_used_at": e.LastUsedAt})
			if err != nil {
				if errcode.Of(err) == errcode.DBAuditError {
					return after, 0, err
				}
				entry.Reason = err.Error()
				res.Skipped = append(res.Skipped, entry)
				continue
			}
			entry.BytesFreed = d.BytesFreed
			res.BytesFreed += d.BytesFreed
			res.Removed = append(res.Removed, entry)
		}
		last := batch[len(batch)-1]
		return store.CleanupCursor{LastUsedAt: last.LastUsedAt, Key: last.Key}, len(batch), nil
	})
	if err != nil {
		return res, err
	}
	res.BuildsRemoved, res.BuildsSkipped, err = s.cleanupBuilds(ctx, req.DryRun)
	for _, b := range res.BuildsRemoved {
		res.BytesFreed += b.BytesFreed
	}
	return res, err
}

func (s *Service) cleanupBatch() int {
	if s.opt.CleanupBatch > 0 {
		return s.opt.CleanupBatch
	}
	return 500
}

// cursorPass pages one cleanup pass (what names it: environments or builds): from the cursor
// kept in the database (a dry run from the first and keeping nothing), one batch at a time
// through next, which returns the cursor after its batch and the batch's size; the cursor is
// saved after each batch, so the next leader resumes a pass cut short, and cleared at the end.
func (s *Service) cursorPass(ctx context.Context, name, what string, dryRun bool, next func(after store.CleanupCursor) (store.CleanupCursor, int, error)) error {
	var after store.CleanupCursor
	if !dryRun {
		var err error
		if after, err = s.store.CleanupCursor(ctx, name); err != nil {
			return dbErr("reading the "+what+" cursor", err)
		}
	}
	for {
		cur, n, err := next(after)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		after = cur
		if !dryRun {
			if err := s.store.SaveCleanupCursor(ctx, name, after, s.now()); err != nil {
				return dbErr("saving the "+what+" cursor", err)
			}
		}
		if n < s.cleanupBatch() {
			break
		}
	}
	if dryRun {
		return nil
	}
	if err := s.store.SaveCleanupCursor(ctx, name, store.CleanupCursor{}, s.now()); err != nil {
		return dbErr("ending the "+what+" pass", err)
	}
	return nil
}

// UseSignalError is a cleanup batch whose shared-storage use signal could not be read (no agent
// answered): its candidates are skipped, never removed.
type UseSignalError struct {
	Agent string // empty: no agent to ask
	Err   error
}

func (e *UseSignalError) Error() string {
	if e.Agent == "" {
		return fmt.Sprintf("not removed: the shared storage's use signal could not be read: %v", e.Err)
	}
	return fmt.Sprintf("not removed: agent %s could not read the shared storage's use signal: %v", e.Agent, e.Err)
}

func (e *UseSignalError) Unwrap() error { return e.Err }

// storageUses asks one agent to read the shared storage's use signal of batch's environments,
// records the uses it saw (the file is armed again by the look, so the database must keep what
// it told), and returns the environments used at or after cutoff: not idle after all.
func (s *Service) storageUses(ctx context.Context, a Agent, batch []store.Env, cutoff time.Time) (map[envid.Key]bool, error) {
	if a == nil {
		return nil, &UseSignalError{Err: errors.New("no agent is available")}
	}
	keys := make([]envid.Key, len(batch))
	last := make(map[envid.Key]time.Time, len(batch))
	for i, e := range batch {
		keys[i] = e.Key
		last[e.Key] = e.LastUsedAt
	}
	uctx, cancel := context.WithTimeout(ctx, time.Minute)
	// since = now: only the check's answer; the hosts' own uses were merged before the pass.
	uses, err := a.Usage(uctx, s.now(), keys)
	cancel()
	if err != nil {
		return nil, &UseSignalError{Agent: a.Name(), Err: err}
	}
	used := map[envid.Key]bool{}
	for _, u := range uses {
		at, ok := last[u.Key]
		if !ok || !u.At.After(at) {
			continue
		}
		if err := s.store.Touch(ctx, u.Key, u.At); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("recording a use seen on the shared storage", "env", u.Key.String(), "err", err)
		}
		if !u.At.Before(cutoff) {
			used[u.Key] = true
		}
	}
	return used, nil
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
		uses, err := a.Usage(uctx, since, nil)
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
