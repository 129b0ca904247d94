// Package envs holds the lifecycle rules of environments: validation, the audit trail written
// before and after every side effect, the leases that make one mutation per environment the rule,
// revisions that let a failed mutation fall back to the last good project files, and idle cleanup.
// It knows neither SQL nor the wire: it talks to a store.Store and an Agent.
package envs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/hostdeps"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Options configures a Service.
type Options struct {
	Instance         string        // this control plane's id, the lease holder
	DefaultPython    string        // used when a create names none
	DefaultTimeout   time.Duration // run timeout when a request names none
	MaxTimeout       time.Duration // the largest run timeout a request may ask for
	MaxOutputBytes   int64         // per stream, for runs
	LeaseTTL         time.Duration // leases expire this long after their last renewal
	OperationTimeout time.Duration // bound on one uv operation
	IdleAfter        time.Duration // an ACTIVE environment unused this long is reported IDLE
	CleanupIdle      time.Duration // environments unused this long are removed by cleanup
	Now              func() time.Time
	Packages         reqspec.Policy // what package references beyond the index an operator allows
	// Registry, when set, receives the lifecycle's metrics.
	Registry prometheus.Registerer
}

// Service is the environment lifecycle.
type Service struct {
	store  store.Store
	agents Agents
	host   *hostdeps.Constraints
	opt    Options
	log    *slog.Logger

	metrics *metrics

	usageMu    sync.Mutex
	usageSince map[string]time.Time // agent name → the newest use already merged from it
}

// New makes a Service.
func New(st store.Store, agents Agents, host *hostdeps.Constraints, opt Options, log *slog.Logger) *Service {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if host == nil {
		host = &hostdeps.Constraints{}
	}
	return &Service{store: st, agents: agents, host: host, opt: opt, log: log, usageSince: map[string]time.Time{},
		metrics: newMetrics(opt.Registry, st)}
}

// Caller says who asked, for the audit.
type Caller struct {
	Actor     string
	RequestID string
}

func (s *Service) now() time.Time { return s.opt.Now().UTC() }

// dbErr turns a store failure into the TRD's DB_AUDIT_ERROR.
func dbErr(what string, err error) error {
	return errcode.Wrap(errcode.DBAuditError, err, fmt.Sprintf("audit database: %s: %v", what, err))
}

var pythonVersionRe = regexp.MustCompile(`^3\.[0-9]{1,2}(\.[0-9]{1,2})?$`)

// op describes one audited operation.
type op struct {
	key       envid.Key
	kind      string
	exclusive bool
	state     string // state while it runs; empty leaves the state alone
	params    map[string]any
	caller    Caller
	// need, when set, picks the agent that does the work once the lease is held.
	need *Need
}

// running is an operation in progress: its audit row, its lease and its agent.
type running struct {
	id    int64
	lease store.Lease
	start time.Time
	agent Agent
}

// execute writes the intent, takes the lease, keeps it alive while fn runs, and records the
// outcome. Nothing of fn happens unless the intent row and the lease were written. fn returns
// the result to record and the error to answer with.
func (s *Service) execute(ctx context.Context, o op, fn func(ctx context.Context, r running) (any, error)) error {
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
		return dbErr("writing the intent of "+o.kind, err)
	}
	// From here the audit row must be completed whatever happens, even if the caller goes away.
	finish := func(status string, result any, opErr error) {
		out := store.Outcome{Status: status, FinishedAt: s.now()}
		s.metrics.observe(o.kind, status, out.FinishedAt.Sub(r.start))
		if r.agent != nil {
			out.Agent = r.agent.Name()
		}
		out.DurationMS = out.FinishedAt.Sub(r.start).Milliseconds()
		if result != nil {
			out.Result, _ = json.Marshal(result)
		}
		if opErr != nil {
			out.ErrorCode = string(errcode.Of(opErr))
			out.ErrorMessage = truncate(opErr.Error(), 2000)
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.store.FinishOperation(fctx, r.id, out); err != nil {
			s.log.Error("recording the outcome of an operation", "op_id", r.id, "op", o.kind, "env", o.key.String(), "err", err)
		}
	}

	r.lease, err = s.store.AcquireLease(ctx, store.LeaseRequest{
		Key: o.key, Exclusive: o.exclusive, Holder: s.opt.Instance,
		Operation: o.kind, OperationID: r.id, TTL: s.opt.LeaseTTL, Now: s.now(),
	})
	if err != nil {
		var locked *store.LockedError
		if errors.As(err, &locked) {
			e := &errcode.Error{
				Code:    errcode.EnvLocked,
				Message: fmt.Sprintf("environment %s is busy: %s (operation %d) holds it", o.key, locked.Held.Operation, locked.Held.OperationID),
				Details: map[string]any{"held_by": map[string]any{
					"operation": locked.Held.Operation, "operation_id": locked.Held.OperationID,
					"expires_at": locked.Held.ExpiresAt.UTC().Format(time.RFC3339),
				}},
				Err: err,
			}
			s.metrics.refused.WithLabelValues(o.kind).Inc()
			finish(store.OpRejected, nil, e)
			return e
		}
		e := dbErr("taking the lease", err)
		finish(store.OpFailed, nil, e)
		return e
	}

	if o.exclusive {
		// Holding the environment alone, any other operation on it still marked running has lost
		// its holder (its lease expired): close its audit row as INTERRUPTED. A caller's row written
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
	result, err := fn(opCtx, r)
	if cause := context.Cause(opCtx); err != nil && errors.Is(cause, store.ErrLeaseLost) {
		err = dbErr("keeping the lease", cause)
	}
	if err != nil {
		finish(store.OpFailed, result, err)
		return err
	}
	finish(store.OpSucceeded, result, nil)
	return nil
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

// getEnv loads an environment, mapping absence to ENV_NOT_FOUND.
func (s *Service) getEnv(ctx context.Context, key envid.Key) (store.Env, error) {
	env, err := s.store.GetEnv(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return env, errcode.New(errcode.EnvNotFound, fmt.Sprintf("environment %s does not exist", key))
	}
	if err != nil {
		return env, dbErr("reading the environment", err)
	}
	return env, nil
}

// ready checks that an environment has a revision to work from.
func ready(env store.Env) error {
	if env.Revision == 0 {
		return errcode.New(errcode.EnvNotReady, fmt.Sprintf("environment %s is still being created", env.Key))
	}
	return nil
}

func (s *Service) currentFiles(ctx context.Context, key envid.Key) (Files, store.Revision, error) {
	rev, err := s.store.GetRevision(ctx, key, 0)
	if err != nil {
		return Files{}, rev, dbErr("reading the current revision", err)
	}
	return Files{PyprojectTOML: rev.PyprojectTOML, UvLock: rev.UvLock}, rev, nil
}

// failState is the state an environment is left in after a failed operation: ACTIVE when the
// agent put the last good revision back (or nothing was touched), ERROR otherwise.
func failState(err error) (string, string) {
	var e *errcode.Error
	if errors.As(err, &e) {
		if r, _ := e.Details["restored"].(bool); r {
			return store.StateActive, ""
		}
		switch e.Code {
		case errcode.PackageResolutionFailed, errcode.InvalidPackages, errcode.DependencyNotFound, errcode.EnvLocked:
			return store.StateActive, ""
		}
	}
	return store.StateError, truncate(err.Error(), 500)
}

func (s *Service) setStateAfter(ctx context.Context, key envid.Key, err error) {
	state, msg := failState(err)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if serr := s.store.SetState(sctx, key, state, msg, s.now()); serr != nil {
		s.log.Error("recording the state after a failure", "env", key.String(), "err", serr)
	}
}

func (s *Service) uvContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.opt.OperationTimeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.opt.OperationTimeout)
}

func codeDigest(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func unmarshalObject(raw []byte, v *map[string]any) error {
	if len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, v)
}
