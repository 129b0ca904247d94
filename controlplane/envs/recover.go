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
// two hosts never work on one project at once. Should the first agent only have been paused, the
// lock on the shared storage makes the restorer wait until it is done, and the restore then
// overwrites what it left (agent/rpc/filelock.go). The caller still gets the failure, marked
// restored when the project is back. A holder that lost its lease restores nothing.
func (s *Service) recoverFrom(ctx context.Context, r *running, key envid.Key, base store.Revision, pythonPath string, cause error) error {
	if errcode.Of(cause) != errcode.AgentUnavailable || r.agent == nil || r.lost() {
		return cause
	}
	failed := r.agent.Name()
	rctx, cancel := context.WithTimeout(ctx, s.restoreTimeout())
	defer cancel()
	by := r.agent
	if s.agents.Gone(rctx, failed) {
		a, err := s.agents.Pick(rctx, Need{PythonPath: pythonPath, Avoid: failed})
		if err != nil {
			s.log.Error("an agent died mid-operation and no other agent can restore the environment; a repair pass will",
				"env", key.String(), "agent", failed, "err", err)
			return cause
		}
		by = a
	}
	if _, err := by.Sync(rctx, s.syncOf(key, base, pythonPath, r.id)); err != nil {
		s.log.Error("restoring the last good revision after an agent failure", "env", key.String(), "agent", failed, "restorer", by.Name(), "err", err)
		return cause
	}
	s.log.Warn("an agent failed mid-operation; the last good revision was restored", "env", key.String(), "agent", failed, "restorer", by.Name())
	return &AgentError{
		Code: errcode.AgentUnavailable,
		Message: fmt.Sprintf("agent %s stopped answering during the operation; the environment was put back at its last good revision by agent %s; retry",
			failed, by.Name()),
		Agent: failed, Restored: true, RestoredBy: by.Name(), Err: cause,
	}
}

// uncommitted handles a commit that failed after the agent changed the project. It returns the
// committed revision when the commit did land after all (its answer was lost), and otherwise the
// failure to answer with, after putting the last good revision back on disk when this control
// plane still holds the lease. With the lease lost it touches nothing: another holder may be
// writing the project, and that holder writes its own base before it mutates.
func (s *Service) uncommitted(ctx context.Context, r *running, key envid.Key, base store.Revision, pythonPath string, cause error) (int64, *UncommittedError) {
	e := &UncommittedError{Key: key, Base: base.Number, Err: cause}
	if errors.Is(cause, store.ErrLeaseLost) || r.lost() {
		e.LeaseLost = true
		s.log.Error("a change could not be published: the lease was lost; leaving the files to the next holder", "env", key.String(), "err", cause)
		return 0, e
	}
	target := base
	if cur, err := s.store.GetRevision(ctx, key, 0); err == nil {
		if cur.OperationID == r.id && cur.Number > base.Number {
			return cur.Number, nil // committed; only the answer went missing
		}
		// With a stale base the files must match what the database holds now.
		target = cur
	}
	rctx, cancel := context.WithTimeout(ctx, s.restoreTimeout())
	defer cancel()
	if _, err := r.agent.Sync(rctx, s.syncOf(key, target, pythonPath, r.id)); err != nil {
		s.log.Error("putting the last good revision back after a failed commit", "env", key.String(), "revision", target.Number, "err", err)
		s.leaveState(ctx, key, store.StateError, truncate(e.ErrorMessage(), 500))
		return 0, e
	}
	e.Restored, e.RestoredTo = true, target.Number
	s.log.Warn("a change could not be committed; the last good revision was put back", "env", key.String(), "revision", target.Number, "err", cause)
	s.leaveState(ctx, key, store.StateActive, "")
	return 0, e
}

// syncOf asks for revision rev of key on disk, on behalf of operation opID.
func (s *Service) syncOf(key envid.Key, rev store.Revision, pythonPath string, opID int64) SyncRequest {
	return SyncRequest{Key: key, Files: Files{PyprojectTOML: rev.PyprojectTOML, UvLock: rev.UvLock},
		Revision: rev.Number, OperationID: opID, PythonPath: pythonPath}
}

// clearAfterDeadAgent removes the half-made directory of a create whose agent died, through another
// agent, so that the next create of the same environment starts clean.
func (s *Service) clearAfterDeadAgent(ctx context.Context, r *running, key envid.Key, cause error) {
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

// setStateAfter records the state a failure leaves the environment in (failState).
func (s *Service) setStateAfter(ctx context.Context, key envid.Key, err error) {
	state, msg := failState(err)
	s.leaveState(ctx, key, state, msg)
}

// leaveState records an environment's state at the end of an operation, even when ctx is done.
// When the database cannot take it, the state stays transitional and a repair pass settles it.
func (s *Service) leaveState(ctx context.Context, key envid.Key, state, msg string) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.store.SetState(sctx, key, state, msg, s.now()); err != nil {
		s.log.Error("recording the state after a failure", "env", key.String(), "state", state, "err", err)
	}
}
