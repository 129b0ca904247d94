// Command chaos is a Jepsen-style fault-injection harness for Environment Fabric (`make chaos`).
//
// It starts a local fleet — a private PostgreSQL, a package index of small generated wheels, two
// control planes and three agents on loopback sharing one data root, gossip with local timings,
// a short lease TTL — and runs concurrent clients doing create / add / remove / update / sync /
// run / delete / deps against a few environments through both control planes, recording every
// request and answer. Meanwhile a nemesis kills (SIGKILL) and restarts agents and control planes,
// pauses them (SIGSTOP past the lease TTL, then SIGCONT) and stops PostgreSQL for a few seconds.
// Afterwards it heals everything, waits (bounded) until nothing moves, and checks the invariants
// with package check. The last line is exactly
//
//	chaos: N operations, M faults, K invariant violations
//
// and the exit status is 1 when K > 0 (2 when the harness itself failed).
//
//	go run ./scripts/chaos                    # CHAOS_SECONDS=120
//	CHAOS_SECONDS=20 go run ./scripts/chaos   # a short run while developing
//
// Settings (environment): CHAOS_SECONDS (120), CHAOS_CLIENTS (6), CHAOS_ENVS (4), CHAOS_SEED (a
// random seed, printed), CHAOS_LEASE_TTL (5s), CHAOS_REQUEST_TIMEOUT (60s), CHAOS_OUT (where the
// history, report and program logs go; data/chaos/<time>), CHAOS_WORKDIR (the fleet's data root
// and binaries; a temporary directory, removed unless CHAOS_KEEP=1), CHAOS_SANDBOX (the agents'
// RUN_SANDBOX, process), CHAOS_LOG_LEVEL (the programs' LOG_LEVEL, info), UV_BIN (.tools/uv/bin/uv).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/scripts/chaos/check"
	"github.com/envfabric/envfabric/shared/testutil/fabricbin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := loadConfig(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	res, err := run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	res.print(os.Stdout, cfg)
	if len(res.Violations) > 0 {
		os.Exit(1)
	}
}

// config is everything a run needs, fixed before it starts.
type config struct {
	Seconds        time.Duration
	Clients        int
	Envs           int
	Seed           uint64
	LeaseTTL       time.Duration
	RequestTimeout time.Duration
	Out            string
	Workdir        string // empty: a temporary directory
	Keep           bool
	Sandbox        string
	LogLevel       string
	UV             string
	Root           string
	ControlPlanes  int
	Agents         int
}

func loadConfig(log *slog.Logger) (config, error) {
	root, err := repoRoot()
	if err != nil {
		return config{}, err
	}
	c := config{Root: root, ControlPlanes: 2, Agents: 3, Keep: os.Getenv("CHAOS_KEEP") == "1",
		Sandbox: envOr("CHAOS_SANDBOX", "process"), LogLevel: envOr("CHAOS_LOG_LEVEL", "info"),
		Workdir: os.Getenv("CHAOS_WORKDIR"), Seed: rand.Uint64()}
	var errs []error
	intVar := func(name string, def int, dst *int) {
		*dst = def
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive integer", name, v))
				return
			}
			*dst = n
		}
	}
	durVar := func(name string, def time.Duration, dst *time.Duration) {
		*dst = def
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive duration", name, v))
				return
			}
			*dst = d
		}
	}
	var secs int
	intVar("CHAOS_SECONDS", 120, &secs)
	c.Seconds = time.Duration(secs) * time.Second
	intVar("CHAOS_CLIENTS", 6, &c.Clients)
	intVar("CHAOS_ENVS", 4, &c.Envs)
	durVar("CHAOS_LEASE_TTL", 5*time.Second, &c.LeaseTTL)
	durVar("CHAOS_REQUEST_TIMEOUT", 60*time.Second, &c.RequestTimeout)
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		if c.Seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			errs = append(errs, fmt.Errorf("CHAOS_SEED=%q: want an unsigned integer", v))
		}
	}
	if c.LeaseTTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("CHAOS_LEASE_TTL=%s: the control plane wants at least 3s", c.LeaseTTL))
	}
	c.Out = os.Getenv("CHAOS_OUT")
	if c.Out == "" {
		c.Out = filepath.Join(root, "data", "chaos", time.Now().Format("20060102-150405"))
	}
	c.UV = os.Getenv("UV_BIN")
	if c.UV == "" {
		c.UV = filepath.Join(root, ".tools", "uv", "bin", "uv")
	}
	if _, err := os.Stat(c.UV); err != nil {
		errs = append(errs, fmt.Errorf("uv: %w (run make uv, or set UV_BIN)", err))
	}
	return c, errors.Join(errs...)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// result is a finished run: its history, faults and verdict.
type result struct {
	Config     config
	Started    time.Time
	Took       time.Duration
	History    []check.Op
	Faults     []fault
	Quiet      quietState
	WasQuiet   bool
	Observed   check.Input
	Violations []check.Violation
}

// run starts the fleet, runs the workload and the nemesis for cfg.Seconds, heals, waits for
// quiet, checks and writes the report. Every wait in it is bounded; whatever happens, the fleet
// is stopped and the working directory removed before it returns.
func run(ctx context.Context, cfg config, log *slog.Logger) (res *result, err error) {
	res = &result{Config: cfg, Started: time.Now()}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	if cfg.Workdir == "" {
		if cfg.Workdir, err = os.MkdirTemp("", "envfabric-chaos-"); err != nil {
			return nil, err
		}
		res.Config.Workdir = cfg.Workdir
		if !cfg.Keep {
			defer func() {
				if rerr := removeAll(cfg.Workdir); rerr != nil {
					log.Warn("removing the working directory", "dir", cfg.Workdir, "err", rerr)
				}
			}()
		}
	}
	log.Info("chaos", "seconds", cfg.Seconds.Seconds(), "clients", cfg.Clients, "envs", cfg.Envs, "seed", cfg.Seed,
		"lease_ttl", cfg.LeaseTTL, "out", cfg.Out, "workdir", cfg.Workdir)

	log.Info("building the programs")
	bins, err := fabricbin.Build(ctx, cfg.Root, filepath.Join(cfg.Workdir, "bin"))
	if err != nil {
		return nil, err
	}
	f, err := startFleet(ctx, cfg, bins, log)
	if err != nil {
		return nil, fmt.Errorf("starting the fleet: %w", err)
	}
	defer f.close()

	nodes := make([]string, cfg.Envs)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("n%d", i+1)
	}
	api := newAPIClient(f.apiSecret, cfg.RequestTimeout)
	hist := &history{}
	nem := &nemesis{f: f, rng: rand.New(rand.NewPCG(cfg.Seed, 0)), log: log, pause: cfg.LeaseTTL + time.Second}

	log.Info("running the workload and the nemesis")
	runCtx, cancel := context.WithTimeout(ctx, cfg.Seconds)
	var wg sync.WaitGroup
	wg.Go(func() { nem.run(runCtx) })
	for i := range cfg.Clients {
		c := &client{id: i + 1, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i+1))), api: api, cps: f.cps, envs: nodes,
			hist: hist, lastDeps: map[string][]string{}, lastRev: map[string]int64{}}
		wg.Go(func() { c.loop(ctx, runCtx) })
	}
	<-runCtx.Done()
	cancel()
	log.Info("workload over; waiting for requests under way")
	wg.Wait()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	res.History, res.Faults = hist.all(), nem.all()

	log.Info("healing the fleet")
	healErrs := f.heal(ctx)
	if err := f.waitMembership(ctx, 60*time.Second); err != nil {
		healErrs = append(healErrs, err.Error())
	}
	quietFor := 2*cfg.LeaseTTL + 20*time.Second
	log.Info("waiting for the system to go quiet", "at_most", quietFor)
	res.Quiet, res.WasQuiet = f.waitQuiet(ctx, quietFor)
	if !res.WasQuiet {
		log.Warn("the system did not go quiet", "still", res.Quiet.String())
	}

	log.Info("observing and checking")
	octx, ocancel := context.WithTimeout(ctx, 3*time.Minute)
	defer ocancel()
	in, err := f.observe(octx, newAPIClient(f.apiSecret, 30*time.Second), nodes)
	if err != nil {
		return nil, err
	}
	in.History, in.HealErrors = res.History, healErrs
	for _, ft := range res.Faults {
		in.Faults = append(in.Faults, check.Fault{Kind: ft.Kind, Target: ft.Target, Start: ft.Start, End: ft.End})
	}
	res.Observed = in
	res.Violations = check.Check(in)
	res.Took = time.Since(res.Started)
	if err := res.write(cfg.Out); err != nil {
		return nil, fmt.Errorf("writing the report: %w", err)
	}
	return res, nil
}
