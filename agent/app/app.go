// Package app wires the agent together: it prepares the directories, proves that uv can hardlink
// from the cache into the environments, and serves the Connect service with health endpoints until
// its context ends.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/rpc"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
)

// Version is the agent's version, set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// shutdownTimeout bounds the graceful stop: cancelled uv commands get their SIGINT grace period
// and failed mutations their restore.
const shutdownTimeout = 60 * time.Second

// Run serves until ctx is cancelled, then stops gracefully. In-flight requests see their context
// cancelled, so running uv commands are interrupted and their projects restored.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	for _, d := range []string{cfg.EnvsBasePath, cfg.UVCacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := checkLinks(cfg, logger); err != nil {
		return err
	}
	ex := uv.New(uv.Config{
		Bin:          cfg.UVBin,
		CacheDir:     cfg.UVCacheDir,
		LinkMode:     cfg.UVLinkMode,
		DefaultIndex: cfg.UVDefaultIndex,
		Path:         cfg.Path,
		Home:         cfg.Home,
		Passthrough:  cfg.UVPassthrough,
	}, logger)
	uvVersion, err := ex.Version(ctx)
	if err != nil {
		return fmt.Errorf("uv at %s does not answer: %w", cfg.UVBin, err)
	}
	svc := rpc.New(rpc.Config{
		AgentID:           cfg.AgentID,
		Version:           Version,
		EnvsBasePath:      cfg.EnvsBasePath,
		UVCacheDir:        cfg.UVCacheDir,
		LinkMode:          cfg.UVLinkMode,
		DefaultPython:     cfg.DefaultPython,
		RunMaxOutputBytes: cfg.RunMaxOutputBytes,
	}, ex, logger)

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           Handler(cfg.Token, svc, ex),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("agent serving", "addr", ln.Addr().String(), "agent_id", cfg.AgentID, "version", Version,
		"uv_version", uvVersion, "envs", cfg.EnvsBasePath, "cache", cfg.UVCacheDir, "link_mode", cfg.UVLinkMode,
		"auth", cfg.Token != "")

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("agent stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("agent stopped")
	return nil
}

// checkLinks refuses to start when uv could not hardlink from the cache into the environments,
// unless copies were asked for.
func checkLinks(cfg config.Config, logger *slog.Logger) error {
	if !uv.Siblings(cfg.UVCacheDir, cfg.EnvsBasePath) {
		logger.Warn("UV_CACHE_DIR and ENVS_BASE_PATH are not siblings; keep them side by side under DATA_ROOT so they stay on one filesystem",
			"uv_cache_dir", cfg.UVCacheDir, "envs_base_path", cfg.EnvsBasePath)
	}
	err := uv.CheckHardlink(cfg.UVCacheDir, cfg.EnvsBasePath)
	switch {
	case err == nil:
		return nil
	case cfg.UVLinkMode == "copy":
		logger.Warn("HARDLINKS DO NOT WORK: every environment will hold a full copy of its packages (UV_LINK_MODE=copy)",
			"err", err)
		return nil
	}
	return err
}

// Handler is the agent's HTTP surface: the Connect service behind the bearer-token check, and
// unauthenticated /healthz (the process answers) and /readyz (uv answers).
func Handler(token string, svc agentv1connect.AgentServiceHandler, ex *uv.Executor) http.Handler {
	mux := http.NewServeMux()
	path, h := agentv1connect.NewAgentServiceHandler(svc)
	mux.Handle(path, agentauth.Middleware(token, h))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if _, err := ex.Version(ctx); err != nil {
			http.Error(w, "uv does not answer: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}
