// Package app wires the agent together: it prepares the directories, proves that uv can hardlink
// from the cache into the environments, and serves the Connect service with health endpoints until
// its context ends.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/rpc"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/usage"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/agent/warm"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
	"github.com/envfabric/envfabric/shared/fleettls"
	"github.com/envfabric/envfabric/shared/gossip"
	"github.com/envfabric/envfabric/shared/httpserver"
	"github.com/envfabric/envfabric/shared/sdnotify"
)

// Version is the agent's version, set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// shutdownTimeout bounds the graceful stop: cancelled uv commands get their SIGINT grace period
// (a cancelled materialisation leaves a half build, never used, which the next Build replaces).
const shutdownTimeout = 60 * time.Second

// Run serves until ctx is cancelled, then stops gracefully. In-flight requests see their context
// cancelled, so running uv commands are interrupted; nothing an environment runs on was being
// modified (changes resolve in staging copies and build beside), so nothing needs restoring.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	for _, d := range []string{cfg.EnvsBasePath, cfg.UVCacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := checkLinks(cfg, logger); err != nil {
		return err
	}
	met := newMetrics()
	met.watchStorage(cfg.EnvsBasePath)
	sb, err := sandboxConfig(cfg, logger)
	if err != nil {
		return err
	}
	uvPath := cfg.Path
	if sb.Tier.DropsPrivileges() {
		var dropped []string
		uvPath, dropped = sandbox.SearchablePath(cfg.Path, sb.UID, sb.GID)
		if len(dropped) > 0 {
			logger.Warn("PATH directories the run user cannot search are not used to find interpreters: code could not start them",
				"dropped", dropped)
		}
	}
	ex := uv.New(uv.Config{
		Bin:          cfg.UVBin,
		CacheDir:     cfg.UVCacheDir,
		LinkMode:     cfg.UVLinkMode,
		DefaultIndex: cfg.UVDefaultIndex,
		Path:         uvPath,
		Home:         cfg.Home,
		Passthrough:  cfg.UVPassthrough,
		Observe:      met.observeUV,
		NoBuild:      cfg.UVWheelsOnly,
	}, logger)
	uvVersion, err := ex.Version(ctx)
	if err != nil {
		return fmt.Errorf("uv at %s does not answer: %w", cfg.UVBin, err)
	}
	tracker := usage.New(cfg.EnvsBasePath, logger.With("component", "usage"))
	met.watchUsage(tracker)
	if err := checkDefaultPython(ctx, ex, sb, cfg.DefaultPython, logger); err != nil {
		return err
	}
	pool := warm.New(warm.Config{
		Sandbox:         sb,
		ParentsPerBuild: cfg.Warm.ParentsPerBuild,
		MaxRuns:         cfg.Warm.MaxRuns,
		TTL:             cfg.Warm.TTL,
		MaxGrowth:       cfg.Warm.MaxGrowth,
		MemoryBytes:     cfg.Warm.MemoryBytes,
		Start:           cfg.Warm.Start,
		WaitFree:        cfg.Warm.WaitFree,
		Logger:          logger.With("component", "warm"),
	})
	// Stopped last: after the server, whose runs use it.
	defer pool.Close()
	met.reg.MustRegister(pool.Collectors()...)
	if cfg.Warm.MemoryBytes > 0 && !pool.Enabled() {
		logger.Warn("warm runs are off: they need a PID namespace for runs (RUN_SANDBOX=namespace)", "sandbox", sb.Describe())
	}
	svc := rpc.New(rpc.Config{
		AgentID:           cfg.AgentID,
		Version:           Version,
		EnvsBasePath:      cfg.EnvsBasePath,
		UVCacheDir:        cfg.UVCacheDir,
		LinkMode:          cfg.UVLinkMode,
		DefaultPython:     cfg.DefaultPython,
		RunMaxOutputBytes: cfg.RunMaxOutputBytes,
		Usage:             tracker,
		OnRun:             met.observeRun,
		OnBuild:           met.observeBuild,
		Sandbox:           sb,
		Warm:              pool,
	}, ex, logger)
	sweepTrash(cfg.EnvsBasePath, 10*time.Minute, logger)
	svc.Builds().Sweep(10 * time.Minute)

	// Background work, each loop owned here and waited for before Run returns.
	bgCtx, stopBG := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		stopBG()
		bg.Wait()
	}()
	bg.Add(2)
	go func() { defer bg.Done(); tracker.Run(bgCtx, cfg.UsageScanInterval) }()
	go func() { defer bg.Done(); met.measureCache(bgCtx, cfg.UVCacheDir, cfg.CacheScanInterval, logger) }()

	policy, tlsConfig, protocols, err := transport(cfg, met, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	advertise := advertiseURL(cfg, ln.Addr())
	ready := []string{sdnotify.AddrVar + "=" + ln.Addr().String()}

	var fleet *membership
	if cfg.Gossip.Enabled() {
		id, err := fleetID(cfg.DataRoot, logger)
		if err != nil {
			return err
		}
		fleet, err = joinFleet(bgCtx, cfg, gossip.Meta{
			Role: gossip.RoleAgent, ID: cfg.AgentID, URL: advertise, Fleet: id, Version: Version,
			Pythons: interpreters(ctx, ex, cfg.DefaultPython), Sandbox: string(sb.Tier),
		}, func() int { return int(met.inFlight.Load()) },
			func(ctx context.Context) []gossip.Python { return interpreters(ctx, ex, cfg.DefaultPython) },
			logger.With("fleet_id", id))
		if err != nil {
			return fmt.Errorf("joining the fleet: %w", err)
		}
		defer fleet.close()
		ready = append(ready, sdnotify.GossipAddrVar+"="+fleet.member.Addr())
	}

	srv := httpserver.New(httpserver.Config{
		Limits:       cfg.HTTP,
		Probes:       []string{"/healthz", "/readyz"},
		TLS:          tlsConfig,
		Protocols:    protocols,
		BaseContext:  ctx,
		Logger:       logger,
		Registerer:   met.reg,
		MetricPrefix: "envfabric_agent_",
	}, Handler(policy, svc, ex, met, "sandbox: "+sb.Describe()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("agent serving", "addr", ln.Addr().String(), "agent_id", cfg.AgentID, "version", Version,
		"uv_version", uvVersion, "envs", cfg.EnvsBasePath, "cache", cfg.UVCacheDir, "link_mode", cfg.UVLinkMode,
		"auth", cfg.Token != "", "tls", tlsConfig != nil, "metrics_token", cfg.MetricsToken != "", "gossip", cfg.Gossip.BindAddr, "sandbox", sb.Describe(), "wheels_only", cfg.UVWheelsOnly)
	if err := sdnotify.Ready(ready...); err != nil {
		logger.Warn("telling systemd we are ready", "err", err)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("agent stopping")
	_ = sdnotify.Stopping()
	if fleet != nil {
		// Leave first, so control planes stop sending work while in-flight calls finish.
		fleet.close()
	}
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

// readOnlyPaths are what the metrics credential opens.
var readOnlyPaths = []string{"/metrics", "/healthz", "/readyz"}

// transport is how the agent meets its callers: the authorisation policy, and the TLS
// configuration with the protocols it serves (nil: plaintext, which config allows only on
// loopback or when AGENT_ALLOW_PLAINTEXT says so).
func transport(cfg config.Config, met *metrics, logger *slog.Logger) (agentauth.Policy, *tls.Config, *http.Protocols, error) {
	policy := agentauth.Policy{Token: cfg.Token, MetricsToken: cfg.MetricsToken, ReadOnly: readOnlyPaths}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if !cfg.TLS.Set() {
		protocols.SetUnencryptedHTTP2(true)
		return policy, nil, protocols, nil
	}
	src, err := fleettls.Open(cfg.TLS, fleettls.Agent, logger.With("component", "tls"))
	if err != nil {
		return policy, nil, nil, fmt.Errorf("FLEET_TLS_*: %w", err)
	}
	met.watchCertificate(src)
	// Every RPC shows a control plane's certificate, checked against the CA bundle in force at
	// each request, and the token: two factors.
	policy.Peer = func(cs *tls.ConnectionState) error {
		err := src.VerifyPeer(cs, fleettls.ControlPlane)
		if errors.Is(err, fleettls.ErrNoCertificate) {
			return agentauth.ErrNoPeer
		}
		if err != nil {
			logger.Warn("refused a caller's certificate", "err", err)
		}
		return err
	}
	protocols.SetHTTP2(true)
	return policy, src.ServerConfig([]string{"h2", "http/1.1"}), protocols, nil
}

// Handler is the agent's HTTP surface, all of it behind policy (nothing on an agent is open to an
// anonymous caller): the Connect service, /healthz (the process answers), /readyz (uv answers; the
// body is "ok" and then readyLines, one per line, such as the sandbox tier) and /metrics; the last
// three are open to the read-only metrics credential too.
func Handler(policy agentauth.Policy, svc agentv1connect.AgentServiceHandler, ex *uv.Executor, met *metrics, readyLines ...string) http.Handler {
	mux := http.NewServeMux()
	path, h := agentv1connect.NewAgentServiceHandler(svc)
	mux.Handle(path, met.count(h))
	mux.Handle("GET /metrics", promhttp.HandlerFor(met.reg, promhttp.HandlerOpts{}))
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
		_, _ = w.Write([]byte(strings.Join(append([]string{"ok"}, readyLines...), "\n")))
	})
	return agentauth.Middleware(policy, mux)
}

// sandboxConfig turns the RUN_* settings into the runner's sandbox and proves that this host can
// provide it. There is no fallback: a host that cannot give the configured tier must not run
// code with less isolation than the operator asked for.
func sandboxConfig(cfg config.Config, logger *slog.Logger) (sandbox.Config, error) {
	s := cfg.Sandbox
	if s.Tier == "" {
		s.Tier = sandbox.Namespace // the default of config.Load: never a weaker one by omission
	}
	if s.Tier.DropsPrivileges() && s.UID == 0 {
		name := s.User
		if name == "" {
			name = "nobody"
		}
		uid, gid, err := config.LookupRunUser(name)
		if err != nil {
			return sandbox.Config{}, fmt.Errorf("RUN_USER: %w", err)
		}
		s.UID, s.GID = uid, gid
	}
	sb := sandbox.Config{
		Tier:         s.Tier,
		UID:          s.UID,
		GID:          s.GID,
		AllowNetwork: s.AllowNetwork,
		NetworkDeny:  s.NetworkDeny,
		Limits:       s.Limits,
		RunLimits:    s.RunLimits,
	}
	if sb.RunLimits != (sandbox.RunLimits{}) {
		g, err := sandbox.FindCgroups(sb.RunLimits)
		if err != nil {
			return sandbox.Config{}, fmt.Errorf("RUN_LIMIT_TOTAL_MEMORY_BYTES=%d and RUN_LIMIT_TOTAL_PROCESSES=%d cannot be enforced on this host (%w); "+
				"the agent does not run code without a configured limit: give it cgroups (docs/sandbox.md) or set both to 0", sb.RunLimits.MemoryBytes, sb.RunLimits.Processes, err)
		}
		sb.Cgroups = g
	}
	// What code must not see: every environment but its own, the cache, the control plane's
	// database under DATA_ROOT, and the agent's home (uv state, maybe credentials).
	for _, d := range []string{cfg.DataRoot, cfg.EnvsBasePath, cfg.UVCacheDir, cfg.Home} {
		if d = filepath.Clean(d); d != "" && d != "/" && filepath.IsAbs(d) {
			sb.Hide = append(sb.Hide, d)
		}
	}
	if sb.Tier != sandbox.Namespace {
		// A PID namespace is the only way to kill descendants that left the process group;
		// take it where the kernel allows it.
		sb.PIDNamespace = true
		if err := sb.Probe(sandbox.Program{}); err != nil {
			logger.Warn("no PID namespace here: code that calls setsid can outlive its run", "tier", sb.Tier, "err", err)
			sb.PIDNamespace = false
		}
	}
	if err := sb.Probe(sandbox.Program{}); err != nil {
		return sandbox.Config{}, fmt.Errorf("RUN_SANDBOX=%s is not available on this host (%w); the agent does not fall back to a weaker tier: "+
			"fix the host (docs/sandbox.md) or set RUN_SANDBOX to a tier it can provide", sb.Tier, err)
	}
	if sb.Tier == sandbox.Process && os.Geteuid() == 0 {
		logger.Warn("RUN_SANDBOX=process while the agent runs as root: user code runs as root; use the user or namespace tier")
	}
	return sb, nil
}

// checkDefaultPython proves that the interpreter new environments get can be started by user
// code in the sandbox (an interpreter under a 0700 home cannot be, by the run user).
func checkDefaultPython(ctx context.Context, ex *uv.Executor, sb sandbox.Config, version string, logger *slog.Logger) error {
	py, _, err := ex.FindPython(ctx, version)
	if err != nil {
		logger.Warn("DEFAULT_PYTHON is not available on this host; creates that name no version will fail", "default_python", version, "err", err)
		return nil
	}
	prog := sandbox.Program{Path: py, Args: []string{py, "-c", ""}}
	if prefix := filepath.Dir(filepath.Dir(py)); sb.Hidden(prefix) {
		prog.ReadOnly = []string{prefix}
	}
	if err := sb.Probe(prog); err != nil {
		return fmt.Errorf("DEFAULT_PYTHON=%s is %s, which user code cannot start in the %s sandbox: %w; install a Python every user can read (under /usr or /opt), see docs/sandbox.md",
			version, py, sb.Tier, err)
	}
	logger.Info("default interpreter usable in the sandbox", "default_python", version, "path", py)
	return nil
}

// sweepTrash removes what deletes left behind when their agent died between renaming an
// environment out of sight (.trash-*) and removing it, and the staging copies of Lock calls
// whose agent died (.staging/*). Only entries older than minAge go, so a delete or a Lock under
// way on another host is not raced. Builds sweep their own leftovers (agent/builds.Sweep).
func sweepTrash(base string, minAge time.Duration, logger *slog.Logger) {
	var found []string
	if entries, err := os.ReadDir(base); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".trash-") {
				found = append(found, filepath.Join(base, e.Name()))
			}
		}
	}
	if entries, err := os.ReadDir(filepath.Join(base, ".staging")); err == nil {
		for _, e := range entries {
			found = append(found, filepath.Join(base, ".staging", e.Name()))
		}
	}
	for _, p := range found {
		fi, err := os.Lstat(p)
		if err != nil || time.Since(fi.ModTime()) < minAge {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			logger.Warn("removing what an interrupted delete or lock left behind", "path", p, "err", err)
			continue
		}
		logger.Info("removed what an interrupted delete or lock left behind", "path", p)
	}
}

// advertiseURL is the Connect URL control planes are told: AGENT_ADVERTISE_URL, or, when it was
// left to its default and the agent took any free port (AGENT_LISTEN_ADDR with port 0), the port
// it was given.
func advertiseURL(cfg config.Config, bound net.Addr) string {
	host, port, err := net.SplitHostPort(cfg.ListenAddr)
	if err != nil || port != "0" {
		return cfg.AdvertiseURL
	}
	for _, scheme := range []string{"http://", "https://"} {
		if cfg.AdvertiseURL == scheme+cfg.ListenAddr {
			_, got, _ := net.SplitHostPort(bound.String())
			return scheme + net.JoinHostPort(host, got)
		}
	}
	return cfg.AdvertiseURL
}
