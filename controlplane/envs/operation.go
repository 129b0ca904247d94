package envs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// This file is the one choke point every side effect goes through: the intent row, then the
// lease, then the work, then the outcome row.

// op describes one audited operation.
type op struct {
	key  envid.Key
	kind string
	// mode is the lease the operation takes (run, change or delete); noLease takes none (a dry
	// run, which writes nothing and reads its base in one consistent read).
	mode    store.LeaseMode
	noLease bool
	state   string // state while it runs; empty leaves the state alone
	params  map[string]any
	caller  Caller
	// need, when set, picks the agent that does the work once the lease is held.
	need *Need
	// bound, when set, bounds the whole operation instead of the default (see execute).
	bound time.Duration
	// withCaller keeps the caller's context: for the repair pass, which has no client to outlive
	// and must stop with its control plane (an interrupted repair is repaired by the next pass).
	withCaller bool
}

// running is an operation in progress: its audit row, its lease and its agent.
type running struct {
	id    int64
	lease store.Lease
	start time.Time
	agent Agent
	// lost reports whether the lease was lost: the operation must then publish nothing and touch
	// no files (another holder may be writing them).
	lost func() bool
	// committed is set once the operation's revision is in the database.
	committed bool
}

// execute writes the intent, takes the lease, keeps it alive while fn runs, and records the
// outcome. Nothing of fn happens unless the intent row and the lease were written. fn returns
// the result to record and the error to answer with.
//
// Once the intent row is written the operation is admitted and runs to its end even if the
// caller goes away: its context is detached from the request's (bounded by the operation's own
// limit), so a client that disconnects cannot cut a change or the audit in half.
func (s *Service) execute(ctx context.Context, o op, fn func(ctx context.Context, r *running) (any, error)) error {
	params, err := json.Marshal(o.params)
	if err != nil {
		return fmt.Errorf("encoding parameters: %w", err)
	}
	r := running{start: s.now()}
	r.id, err = s.store.BeginOperation(ctx, store.Operation{
		Key: o.key, Kind: o.kind, Status: store.OpRunning,
		Actor: o.caller.Actor, RequestID: o.caller.RequestID,
		Params: params, StartedAt: r.start,
	})
	if err != nil {
		e := dbErr("writing the intent of "+o.kind, err)
		s.metrics.auditFailed(auditIntent)
		s.metrics.failed(o.kind, e)
		return e
	}
	bound := o.bound
	if bound <= 0 {
		bound = s.operationBound()
	}
	if !o.withCaller {
		ctx = context.WithoutCancel(ctx)
	}
	ctx, cancelAdmitted := context.WithTimeout(ctx, bound)
	defer cancelAdmitted()

	// From here the audit row must be completed whatever happens. finish reports whether it was:
	// the outcome of a success is tried again for a while (the database may be back in seconds),
	// because a caller must not be told of a success the audit does not record.
	finish := func(status string, result any, opErr error) error {
		out := store.Outcome{Status: status, FinishedAt: s.now()}
		s.metrics.observe(o.kind, status, out.FinishedAt.Sub(r.start))
		s.metrics.failed(o.kind, opErr)
		if r.agent != nil {
			out.Agent = r.agent.Name()
		}
		out.DurationMS = out.FinishedAt.Sub(r.start).Milliseconds()
		if result != nil {
			out.Result, _ = json.Marshal(result)
		}
		if opErr != nil {
			out.ErrorCode = string(errcode.Of(opErr))
			out.ErrorMessage = truncate(AuditMessage(opErr), 2000)
		}
		// The outcome of a success is tried again for longer: a caller must not be told of a
		// success the audit does not record.
		budget := 10 * time.Second
		if status == store.OpSucceeded {
			budget = outcomeRetryFor
		}
		return s.recordOutcome(context.WithoutCancel(ctx), o, r.id, out, budget)
	}

	if o.noLease {
		return s.executeUnleased(ctx, o, &r, finish, fn)
	}
	r.lease, err = s.store.AcquireLease(ctx, store.LeaseRequest{
		Key: o.key, Mode: o.mode, Holder: s.opt.Instance,
		Operation: o.kind, OperationID: r.id, TTL: s.opt.LeaseTTL, Now: s.now(),
	})
	if err != nil {
		var locked *store.LockedError
		if errors.As(err, &locked) {
			e := &LockedError{Key: o.key, Holder: locked.Held, Err: err}
			s.metrics.refused.WithLabelValues(o.kind).Inc()
			finish(store.OpRejected, nil, e)
			return e
		}
		e := dbErr("taking the lease", err)
		finish(store.OpFailed, nil, e)
		return e
	}

	if o.mode != store.LeaseRun {
		// Holding the environment against every other change, any other operation on it still
		// marked running without a live lease has lost its holder: close its audit row as
		// INTERRUPTED (runs under way hold live leases and are left alone). A caller's row written
		// a moment before its own lease attempt may be caught too; its outcome overwrites this.
		if n, err := s.store.AbandonOperations(ctx, o.key, r.id, s.now()); err != nil {
			s.log.Warn("closing abandoned operations", "env", o.key.String(), "err", err)
		} else if n > 0 {
			s.log.Warn("closed operations whose holder stopped", "env", o.key.String(), "count", n)
		}
	}

	s.metrics.held.Add(1)
	defer s.metrics.held.Add(-1)
	opCtx, cancel := context.WithCancelCause(ctx)
	r.lost = func() bool { return errors.Is(context.Cause(opCtx), store.ErrLeaseLost) }
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.keepLease(opCtx, r.lease, cancel)
	}()
	defer func() {
		cancel(nil)
		wg.Wait()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer rcancel()
		if err := s.store.ReleaseLease(rctx, r.lease.ID); err != nil {
			s.log.Warn("releasing a lease; it will expire by itself", "lease", r.lease.ID, "err", err)
		}
	}()

	if o.need != nil {
		a, err := s.agents.Pick(opCtx, *o.need)
		if err != nil {
			finish(store.OpFailed, nil, err)
			return err
		}
		r.agent = a
	}
	if o.state != "" {
		if err := s.store.SetState(opCtx, o.key, o.state, "", s.now()); err != nil && !errors.Is(err, store.ErrNotFound) {
			e := dbErr("recording the state", err)
			finish(store.OpFailed, nil, e)
			return e
		}
	}
	result, err := fn(opCtx, &r)
	if err != nil && r.agent != nil && errcode.Of(err) == errcode.AgentUnavailable {
		// Before the answer, wait (bounded) for the fleet to see a dead agent gone, so that the
		// caller's next operation is not sent to it again.
		gctx, gcancel := context.WithTimeout(opCtx, 30*time.Second)
		gone := s.agents.Gone(gctx, r.agent.Name())
		gcancel()
		s.log.Warn("an agent stopped answering during an operation", "agent", r.agent.Name(), "op", o.kind, "env", o.key.String(), "gone", gone)
	}
	if err != nil && r.lost() {
		var ue *UncommittedError
		if !errors.As(err, &ue) {
			err = dbErr("keeping the lease", context.Cause(opCtx))
		}
	}
	if err != nil {
		finish(store.OpFailed, result, err)
		return err
	}
	if err := finish(store.OpSucceeded, result, nil); err != nil && !r.committed {
		// The effect happened (code ran, a project was deleted) but the audit cannot say so: the
		// TRD's rule is DB_AUDIT_ERROR. A committed change is the exception: its revision is the
		// record, the sweep closes the row from it, and the change is what the caller asked for.
		return dbErr("recording the outcome of "+o.kind+" (it took effect; the audit row is closed as interrupted later)", err)
	}
	return nil
}

// executeUnleased runs fn of an operation that takes no lease (it writes nothing an environment
// depends on), with the agent it needs, and records the outcome.
func (s *Service) executeUnleased(ctx context.Context, o op, r *running, finish func(string, any, error) error,
	fn func(ctx context.Context, r *running) (any, error)) error {
	r.lost = func() bool { return false }
	if o.need != nil {
		a, err := s.agents.Pick(ctx, *o.need)
		if err != nil {
			finish(store.OpFailed, nil, err)
			return err
		}
		r.agent = a
	}
	result, err := fn(ctx, r)
	if err != nil {
		finish(store.OpFailed, result, err)
		return err
	}
	if err := finish(store.OpSucceeded, result, nil); err != nil {
		return dbErr("recording the outcome of "+o.kind, err)
	}
	return nil
}

// outcomeRetryFor bounds how long recordOutcome keeps trying the outcome of a success, and so how
// long its answer may wait for the database to come back.
const outcomeRetryFor = time.Minute

// recordOutcome writes an operation's outcome, trying again while the database is away (a
// restart, a failover) before the answer goes out. Giving up at once would leave the row running
// for the sweep (repair.go) to close as INTERRUPTED while the caller is told the operation
// succeeded. A later write of the true outcome replaces what the sweep wrote. Past budget the
// row is left to the sweep, and the error says so.
func (s *Service) recordOutcome(ctx context.Context, o op, id int64, out store.Outcome, budget time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.store.FinishOperation(actx, id, out)
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			s.log.Error("recording the outcome of an operation; the sweep will close it", "op_id", id, "op", o.kind,
				"env", o.key.String(), "status", out.Status, "err", err)
			s.metrics.auditFailed(auditOutcome)
			return err
		case <-time.After(wait):
			s.log.Warn("recording the outcome of an operation; trying again", "op_id", id, "op", o.kind, "env", o.key.String(), "err", err)
		}
	}
}

// operationBound is how long an admitted operation may take in all: two uv operations (a
// resolution and a build, or a build and a run that woke it), and a minute for the database.
func (s *Service) operationBound() time.Duration {
	return 2*s.uvTimeout() + time.Minute
}

// keepLease renews the lease until ctx ends; when the lease is lost it cancels the operation, so
// that a holder that lost its lease stops instead of publishing a result.
func (s *Service) keepLease(ctx context.Context, l store.Lease, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.opt.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := s.store.RenewLease(ctx, l.ID, s.now(), s.opt.LeaseTTL)
			switch {
			case err == nil:
			case errors.Is(err, store.ErrLeaseLost):
				s.log.Error("lease lost; stopping the operation", "lease", l.ID, "env", l.Key.String())
				cancel(store.ErrLeaseLost)
				return
			case ctx.Err() != nil:
				return
			default:
				// A transient failure: try again next tick; the lease outlives two missed renewals.
				s.log.Warn("renewing a lease", "lease", l.ID, "err", err)
			}
		}
	}
}
