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

// recoverFrom handles an agent that stopped answering in the middle of a mutation or sync. The
// project on the shared storage may be half-written, and that agent will not restore it. Once the
// agent is confirmed gone, another agent with the environment's interpreter puts the last good
// revision back; an agent that is still there (a dropped connection) is asked to do it itself, so
// two hosts never work on one project at once. The caller still gets the failure, marked restored
// when the project is back.
func (s *Service) recoverFrom(ctx context.Context, r running, key envid.Key, base Files, pythonPath string, cause error) error {
	if errcode.Of(cause) != errcode.AgentUnavailable || r.agent == nil {
		return cause
	}
	failed := r.agent.Name()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.restoreTimeout())
	defer cancel()
	by := r.agent
	if s.agents.Gone(rctx, failed) {
		a, err := s.agents.Pick(rctx, Need{PythonPath: pythonPath, Avoid: failed})
		if err != nil {
			s.log.Error("an agent died mid-operation and no other agent can restore the environment; the next operation will",
				"env", key.String(), "agent", failed, "err", err)
			return cause
		}
		by = a
	}
	if _, err := by.Sync(rctx, key, base, pythonPath); err != nil {
		s.log.Error("restoring the last good revision after an agent failure", "env", key.String(), "agent", failed, "restorer", by.Name(), "err", err)
		return cause
	}
	s.log.Warn("an agent failed mid-operation; the last good revision was restored", "env", key.String(), "agent", failed, "restorer", by.Name())
	return &errcode.Error{
		Code: errcode.AgentUnavailable,
		Message: fmt.Sprintf("agent %s stopped answering during the operation; the environment was put back at its last good revision by agent %s; retry",
			failed, by.Name()),
		Details: map[string]any{"restored": true, "failed_agent": failed, "restored_by": by.Name()},
		Err:     cause,
	}
}

// clearAfterDeadAgent removes the half-made directory of a create whose agent died, through another
// agent, so that the next create of the same environment starts clean.
func (s *Service) clearAfterDeadAgent(ctx context.Context, r running, key envid.Key, cause error) {
	if errcode.Of(cause) != errcode.AgentUnavailable || r.agent == nil || !s.agents.Gone(ctx, r.agent.Name()) {
		return
	}
	a, err := s.agents.Pick(ctx, Need{Avoid: r.agent.Name()})
	if err != nil {
		return
	}
	if _, err := a.Delete(ctx, key); err != nil {
		s.log.Warn("removing a create left half-done by a dead agent", "env", key.String(), "err", err)
	}
}

func (s *Service) restoreTimeout() time.Duration {
	if s.opt.OperationTimeout > 0 {
		return s.opt.OperationTimeout
	}
	return 10 * time.Minute
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
	Pruned      bool   `json:"pruned"`
	Reason      string `json:"reason,omitempty"`
	Agent       string `json:"agent,omitempty"`
	BytesBefore int64  `json:"bytes_before"`
	BytesAfter  int64  `json:"bytes_after"`
}

// PruneCache prunes the shared uv cache through one agent, but only while the fleet holds no
// mutation: `uv cache prune` locks the cache exclusively and every uv command waits for it. A
// mutation that starts after the check waits on uv's own lock, so the check is for smoothness,
// uv's lock for safety.
func (s *Service) PruneCache(ctx context.Context) (PruneResult, error) {
	n, err := s.store.CountLeases(ctx, s.now(), true)
	if err != nil {
		return PruneResult{}, dbErr("counting leases", err)
	}
	if n > 0 {
		return PruneResult{Reason: fmt.Sprintf("%d uv operation(s) under way in the fleet", n)}, nil
	}
	a, err := s.agents.Pick(ctx, Need{})
	if err != nil {
		return PruneResult{Reason: err.Error()}, nil
	}
	before, after, err := a.PruneCache(ctx)
	if err != nil {
		return PruneResult{Agent: a.Name()}, err
	}
	return PruneResult{Pruned: true, Agent: a.Name(), BytesBefore: before, BytesAfter: after}, nil
}
