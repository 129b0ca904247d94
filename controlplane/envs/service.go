// Package envs holds the lifecycle rules of environments: validation, the audit trail written
// before and after every side effect, the leases that make one change per environment the rule,
// builds (an environment never changes in place: a change builds beside the current build, then
// commits and switches a pointer; see docs/builds.md), hibernation and idle cleanup.
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

	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/pkgpolicy"

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
	// CleanupBatch bounds the environments (and builds) one step of a cleanup pass reads and
	// asks the shared storage about (0: 500).
	CleanupBatch int
	// HibernateAfter: a build unused this long is removed and its environments show HIBERNATED
	// until their next run or sync (0: never).
	HibernateAfter time.Duration
	// DiskBudgetBytes: beyond this many bytes held by builds, the least recently used are
	// removed (hibernated) first (0: no budget).
	DiskBudgetBytes int64
	// BuildVerifyInterval: how often the maintenance pass verifies a few builds against their
	// packages' RECORD files (0: never).
	BuildVerifyInterval time.Duration
	Now                 func() time.Time
	Packages            reqspec.Policy // what package references beyond the index an operator allows
	// PackagePolicy is PACKAGE_POLICY, checked on the lock of every create, add and update
	// before anything is built (policy.go); nil denies nothing. Advisories returns the OSV data
	// loaded now, for its severity rule (nil: none).
	PackagePolicy *pkgpolicy.Policy
	Advisories    func() *osv.DB
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

	verifyMu   sync.Mutex
	lastVerify time.Time // when the maintenance pass last verified builds
	verifyFrom envid.Key // keyset cursor through the environments, for the next verification
}

// New makes a Service.
func New(st store.Store, agents Agents, host *hostdeps.Constraints, opt Options, log *slog.Logger) *Service {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if host == nil {
		host = &hostdeps.Constraints{}
	}
	s := &Service{store: st, agents: agents, host: host, opt: opt, log: log, usageSince: map[string]time.Time{}}
	s.metrics = newMetrics(opt.Registry, s)
	return s
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

// settle records the state a change that did not commit leaves an environment in: at rest on
// its current build, which the change never touched (see restingState).
func (s *Service) settle(ctx context.Context, key envid.Key) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	state := s.restingState(sctx, key)
	if err := s.store.SetState(sctx, key, state, "", s.now()); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("recording the state after a change that did not commit; the maintenance pass will", "env", key.String(), "state", state, "err", err)
	}
}

// restingState is the state of an environment no operation holds: HIBERNATED when its current
// build was removed, ACTIVE otherwise (an environment of the layout before builds too).
func (s *Service) restingState(ctx context.Context, key envid.Key) string {
	env, err := s.store.GetEnv(ctx, key)
	if err != nil || env.BuildID == "" {
		return store.StateActive
	}
	if b, err := s.store.GetBuild(ctx, env.BuildID); err == nil && b.State == store.BuildRemoved {
		return store.StateHibernated
	}
	return store.StateActive
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
