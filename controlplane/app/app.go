// Package app wires the control plane: configuration in, a running REST server out.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/envfabric/envfabric/controlplane/agentclient"
	"github.com/envfabric/envfabric/controlplane/api"
	"github.com/envfabric/envfabric/controlplane/api/auth"
	"github.com/envfabric/envfabric/controlplane/config"
	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/fleet"
	"github.com/envfabric/envfabric/controlplane/hostdeps"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/shared/fleettls"
	"github.com/envfabric/envfabric/shared/httpserver"
	"github.com/envfabric/envfabric/shared/sdnotify"
)

// OpenStore opens the audit database the configuration names: PostgreSQL when DATABASE_URL is
// set, embedded SQLite under DATA_ROOT otherwise. Either way the schema is migrated and the
// connection checked; without a database there is no service.
func OpenStore(ctx context.Context, cfg config.Config, log *slog.Logger) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		st, err := postgres.Open(ctx, cfg.DatabaseURL, log)
		if err != nil {
			return nil, fmt.Errorf("opening the audit database (PostgreSQL): %w", err)
		}
		return st, nil
	}
	st, err := sqlite.Open(ctx, cfg.SQLitePath, log)
	if err != nil {
		return nil, fmt.Errorf("opening the audit database (SQLite at %s): %w", cfg.SQLitePath, err)
	}
	return st, nil
}

// Run serves the control plane until ctx is cancelled.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("checking the audit database: %w", err)
	}
	ready, err := readiness(cfg, st, log)
	if err != nil {
		return err
	}
	host, err := hostdeps.Load(cfg.HostPyproject)
	if err != nil {
		return err
	}
	if cfg.HostPyproject != "" {
		log.Info("host dependency constraints loaded", "path", cfg.HostPyproject, "packages", host.Len())
	}
	tokens, err := auth.NewSet(cfg.API.Tokens)
	if err != nil {
		return fmt.Errorf("API tokens: %w", err)
	}
	if !tokens.Enabled() {
		log.Warn("the REST API is open: no API tokens configured, every caller may do everything", "listen", cfg.ListenAddr)
	}
	packages := reqspec.Policy{URLPrefixes: cfg.API.PackageURLPrefixes}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	dial, agentTLS, err := agentTransport(cfg, reg, log)
	if err != nil {
		return err
	}
	// Agents: found by gossip in a fleet, or the one agent at AGENT_URL on a single host.
	var (
		agents     envs.Agents
		agentsView envs.Viewer
		agentReady api.Checker
		gossipAddr string
	)
	if cfg.Gossiping() {
		fl, err := fleet.Join(ctx, fleet.Config{
			Instance: cfg.InstanceID, Version: Version, AgentToken: cfg.AgentToken, FleetID: cfg.FleetID,
			Gossip: cfg.Gossip, AgentTLS: agentTLS, AllowPlaintext: cfg.AllowPlaintext,
		}, st, reg, log)
		if err != nil {
			return fmt.Errorf("joining the fleet: %w", err)
		}
		defer fl.Close()
		agents = fl
		gossipAddr = fl.Addr()
		agentsView = fl
		agentReady = func(ctx context.Context) error {
			if len(fl.All(ctx)) == 0 {
				return errors.New("no agent alive in the fleet")
			}
			return nil
		}
	} else {
		agent := agentclient.New(cfg.AgentURL, cfg.AgentToken, dial...)
		one := envs.One(agent)
		agents, agentsView, agentReady = one, one, agent.Ping
	}
	ready["agent"] = agentReady
	deps, err := dependencyIntel(cfg, st, reg, log)
	if err != nil {
		return err
	}
	svc := envs.New(st, agents, host, envs.Options{
		Instance: cfg.InstanceID, DefaultPython: cfg.DefaultPython,
		DefaultTimeout: cfg.ExecutionTimeout, MaxTimeout: cfg.MaxExecutionTime, MaxOutputBytes: cfg.MaxOutputBytes,
		LeaseTTL: cfg.LeaseTTL, OperationTimeout: cfg.OperationTimeout,
		IdleAfter: cfg.IdleAfter, CleanupIdle: cfg.CleanupIdle, Registry: reg, Packages: packages,
		HibernateAfter: cfg.HibernateAfter, DiskBudgetBytes: cfg.DiskBudgetBytes, BuildVerifyInterval: cfg.BuildVerifyInterval,
		PackagePolicy: deps.policy, Advisories: deps.watcher.Current,
	}, log)

	handler := api.New(svc, api.Options{
		MaxBodyBytes: cfg.MaxBodyBytes,
		BodyTimeout:  cfg.API.BodyTimeout,
		Registry:     reg,
		Tokens:       tokens,
		Ready:        ready,
		Agents:       agentsView,
		Deps:         deps.svc,
	}, log)

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.ListenAddr, err)
	}
	srv := httpserver.New(httpserver.Config{
		Limits:       cfg.HTTP,
		Probes:       []string{"/healthz", "/readyz"},
		Logger:       log,
		Registerer:   reg,
		MetricPrefix: "envfabric_",
	}, handler)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if cfg.CleanupInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := maintainer{svc: svc, st: st, instance: cfg.InstanceID, every: cfg.CleanupInterval,
				pruneEvery: cfg.CachePruneInterval, lastPrune: time.Now(), log: log.With("component", "maintenance")}
			m.run(runCtx)
		}()
	}
	// Every control plane closes abandoned audit rows, settles interrupted environments, switches
	// project directories behind their revision, hibernates builds and verifies a few of them.
	wg.Add(1)
	go func() {
		defer wg.Done()
		svc.Maintain(runCtx)
	}()
	// The advisories' watcher and the vulnerable-environments gauge (deps.go).
	wg.Add(2)
	go func() {
		defer wg.Done()
		deps.watcher.Run(runCtx)
	}()
	go func() {
		defer wg.Done()
		deps.metrics.Run(runCtx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("control plane serving", "addr", ln.Addr().String(), "instance", cfg.InstanceID,
		"agents", map[bool]string{true: "gossip:" + cfg.Gossip.BindAddr, false: cfg.AgentURL}[cfg.Gossiping()],
		"database", map[bool]string{true: "postgresql", false: "sqlite:" + cfg.SQLitePath}[cfg.DatabaseURL != ""])
	notify := []string{sdnotify.AddrVar + "=" + ln.Addr().String()}
	if gossipAddr != "" {
		notify = append(notify, sdnotify.GossipAddrVar+"="+gossipAddr)
	}
	if err := sdnotify.Ready(notify...); err != nil {
		log.Warn("telling systemd we are ready", "err", err)
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		cancel()
		wg.Wait()
		return fmt.Errorf("serving: %w", err)
	}
	log.Info("control plane stopping")
	_ = sdnotify.Stopping()
	cancel()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer scancel()
	err = srv.Shutdown(sctx)
	wg.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

// agentTransport opens this control plane's TLS material for calling agents (none: plaintext,
// which config allows only to loopback or when AGENT_ALLOW_PLAINTEXT says so) and says how
// agent clients dial.
func agentTransport(cfg config.Config, reg prometheus.Registerer, log *slog.Logger) ([]agentclient.Option, *fleettls.Source, error) {
	opts := []agentclient.Option{agentclient.AllowPlaintext(cfg.AllowPlaintext)}
	if !cfg.AgentTLS.Set() {
		return opts, nil, nil
	}
	src, err := fleettls.Open(cfg.AgentTLS, fleettls.ControlPlane, log.With("component", "tls"))
	if err != nil {
		return nil, nil, fmt.Errorf("FLEET_TLS_*: %w", err)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "envfabric_tls_certificate_expiry_timestamp_seconds", Help: "When the control plane's TLS certificate for calling agents expires.",
	}, func() float64 { return float64(src.NotAfter().Unix()) }))
	log.Info("agents are reached over mutual TLS", "cert", cfg.AgentTLS.Cert, "ca", cfg.AgentTLS.CA, "not_after", src.NotAfter())
	return append(opts, agentclient.WithTLS(src)), src, nil
}

// Version is the control plane's version, set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// leaderRole names the database-held role of the control plane that cleans up for the fleet.
const leaderRole = "cleanup"

// maintainer runs the fleet-wide housekeeping on the one control plane that holds the cleanup
// role: idle cleanup (after merging the agents' usage reports) every interval, and a uv cache
// prune when due and the fleet holds no uv operation. The role is a term in the database,
// renewed at every tick; when its holder dies another control plane takes it after the term.
type maintainer struct {
	svc        *envs.Service
	st         store.Store
	instance   string
	every      time.Duration
	pruneEvery time.Duration
	log        *slog.Logger
	lastPrune  time.Time
	leading    bool
}

func (m *maintainer) run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	defer func() {
		if m.leading {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = m.st.ResignLeadership(rctx, leaderRole, m.instance)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.tick(ctx)
		}
	}
}

func (m *maintainer) tick(ctx context.Context) {
	// The term outlives two missed ticks, so a slow pass does not hand the role over mid-way.
	lead, err := m.st.AcquireLeadership(ctx, leaderRole, m.instance, time.Now(), 3*m.every)
	if err != nil {
		m.log.Error("taking the cleanup role", "err", err)
		return
	}
	if lead != m.leading {
		m.log.Info("cleanup role", "leading", lead)
		m.leading = lead
	}
	if !lead {
		return
	}
	res, err := m.svc.Cleanup(ctx, envs.Caller{Actor: "scheduler"}, envs.CleanupRequest{IdleFor: -1})
	if err != nil {
		m.log.Error("scheduled cleanup", "err", err)
	} else if len(res.Removed)+len(res.Skipped) > 0 {
		m.log.Info("scheduled cleanup", "removed", len(res.Removed), "skipped", len(res.Skipped), "bytes_freed", res.BytesFreed)
	}
	if m.pruneEvery <= 0 || time.Since(m.lastPrune) < m.pruneEvery {
		return
	}
	pr, err := m.svc.PruneCache(ctx, envs.Caller{Actor: "scheduler"})
	switch {
	case err != nil:
		m.log.Error("pruning the uv cache", "err", err)
	case pr.Pruned:
		m.lastPrune = time.Now()
		m.log.Info("pruned the uv cache", "agent", pr.Agent, "bytes_before", pr.BytesBefore, "bytes_after", pr.BytesAfter)
	default:
		m.log.Info("uv cache prune postponed", "reason", pr.Reason)
	}
}
