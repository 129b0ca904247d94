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
	"github.com/envfabric/envfabric/controlplane/hostdeps"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
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
	agent := agentclient.New(cfg.AgentURL, cfg.AgentToken)
	svc := envs.New(st, agent, host, envs.Options{
		Instance: cfg.InstanceID, DefaultPython: cfg.DefaultPython,
		DefaultTimeout: cfg.ExecutionTimeout, MaxTimeout: cfg.MaxExecutionTime, MaxOutputBytes: cfg.MaxOutputBytes,
		LeaseTTL: cfg.LeaseTTL, OperationTimeout: cfg.OperationTimeout,
		IdleAfter: cfg.IdleAfter, CleanupIdle: cfg.CleanupIdle, Packages: packages,
	}, log)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	handler := api.New(svc, api.Options{
		MaxBodyBytes: cfg.MaxBodyBytes,
		BodyTimeout:  cfg.API.BodyTimeout,
		Registry:     reg,
		Tokens:       tokens,
		Packages:     packages,
		Ready: map[string]api.Checker{
			"database": st.Ping,
			"agent":    agent.Ping,
		},
		Agents: func(ctx context.Context) any {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			info, err := agent.Info(ictx)
			entry := map[string]any{"url": cfg.AgentURL, "reachable": err == nil}
			if err != nil {
				entry["error"] = err.Error()
			} else {
				entry["info"] = info
			}
			return []any{entry}
		},
	}, log)

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.ListenAddr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if cfg.CleanupInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cleanupLoop(runCtx, svc, cfg.CleanupInterval, log)
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("control plane serving", "addr", ln.Addr().String(), "agent", cfg.AgentURL,
		"database", map[bool]string{true: "postgresql", false: "sqlite:" + cfg.SQLitePath}[cfg.DatabaseURL != ""])

	select {
	case <-ctx.Done():
	case err := <-errc:
		cancel()
		wg.Wait()
		return fmt.Errorf("serving: %w", err)
	}
	log.Info("control plane stopping")
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

// cleanupLoop removes idle environments on a schedule, audited with the actor "scheduler".
func cleanupLoop(ctx context.Context, svc *envs.Service, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			res, err := svc.Cleanup(ctx, envs.Caller{Actor: "scheduler"}, envs.CleanupRequest{IdleFor: -1})
			if err != nil {
				log.Error("scheduled cleanup", "err", err)
				continue
			}
			if len(res.Removed)+len(res.Skipped) > 0 {
				log.Info("scheduled cleanup", "removed", len(res.Removed), "skipped", len(res.Skipped))
			}
		}
	}
}
