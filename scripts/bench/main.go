// Command bench measures the single-host Environment Fabric against the ways people make Python
// environments without it, and writes docs/benchmarks.md, PNG charts and the raw figures.
//
// It builds the real binaries, starts agents and control planes on loopback (SQLite, data in a
// temporary directory on the same filesystem), and resolves numpy and pandas against the real
// package index, found at run time the way the end-to-end test finds it. Every comparison is
// measured in the same run, its methods interleaved round by round, so a noisy neighbour slows
// all of them alike.
//
//	go run ./scripts/bench                 # the full run (make bench), about 15 minutes
//	BENCH_QUICK=1 go run ./scripts/bench   # few repetitions, for development; output to a temp dir
//
// Settings (environment): BENCH_QUICK=1, BENCH_OUT (output directory; docs in a full run),
// BENCH_WORKDIR (where fabrics keep their data; a temp dir, removed unless BENCH_KEEP=1),
// UV_BIN (default .tools/uv/bin/uv), BENCH_PYTHON (the interpreter for venv+pip and charts,
// default python3.11).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/shared/testutil/fabricbin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// config is everything a run needs, fixed before it starts.
type config struct {
	Quick   bool
	Out     string // docs directory: benchmarks.md here, charts and raw figures in Out/bench
	Workdir string
	Keep    bool
	Root    string // repository root
	UV      string
	Python  string // interpreter for venv+pip and for the chart script
	Index   index
	Only    map[string]bool // sections to run (empty: all)
	log     *slog.Logger

	// Repetitions and sizes; the quick mode shrinks them.
	CreateReps     int
	PipReps        int
	RunTrivialReps int
	RunImportReps  int
	ProfileReps    int
	DiskSteps      []int
	ConcEnvs       int
	ConcClients    []int
	ConcDuration   time.Duration
	ConcCreates    int
	ReadEnvs       int
	ReadClients    int
	ReadDuration   time.Duration
}

func loadConfig() (config, error) {
	var c config
	only := flag.String("only", "", "comma-separated sections to run: create,run,disk,concurrency,read,builds (default all)")
	flag.Parse()
	c.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c.Quick = os.Getenv("BENCH_QUICK") == "1"
	c.Keep = os.Getenv("BENCH_KEEP") == "1"
	wd, err := os.Getwd()
	if err != nil {
		return c, err
	}
	c.Root, err = repoRoot(wd)
	if err != nil {
		return c, err
	}
	c.UV = os.Getenv("UV_BIN")
	if c.UV == "" {
		c.UV = filepath.Join(c.Root, ".tools/uv/bin/uv")
	}
	if _, err := os.Stat(c.UV); err != nil {
		return c, fmt.Errorf("uv not found at %s (run make uv, or set UV_BIN): %w", c.UV, err)
	}
	c.Python = os.Getenv("BENCH_PYTHON")
	if c.Python == "" {
		c.Python = "python3.11"
	}
	c.Index = discoverIndex()
	c.Only = map[string]bool{}
	for _, s := range splitComma(*only) {
		c.Only[s] = true
	}

	c.Out = os.Getenv("BENCH_OUT")
	if c.Out == "" {
		if c.Quick {
			c.Out = filepath.Join(os.TempDir(), "envfabric-bench-quick")
		} else {
			c.Out = filepath.Join(c.Root, "docs")
		}
	}
	c.Workdir = os.Getenv("BENCH_WORKDIR")
	if c.Quick {
		c.CreateReps, c.PipReps = 3, 2
		c.RunTrivialReps, c.RunImportReps, c.ProfileReps = 30, 5, 30
		c.DiskSteps = []int{1, 5, 10}
		c.ConcEnvs, c.ConcClients, c.ConcDuration, c.ConcCreates = 5, []int{1, 4, 32}, 2*time.Second, 4
		c.ReadEnvs, c.ReadClients, c.ReadDuration = 1000, 8, 2*time.Second
	} else {
		// Chosen so the medians move by a few percent between runs on a busy 2-core machine and the
		// whole run stays within about 15 minutes. p99 over fewer than 100 samples is the maximum.
		c.CreateReps, c.PipReps = 15, 5
		c.RunTrivialReps, c.RunImportReps, c.ProfileReps = 200, 30, 200
		c.DiskSteps = []int{1, 10, 100}
		c.ConcEnvs, c.ConcClients, c.ConcDuration, c.ConcCreates = 20, []int{1, 2, 4, 8, 16, 32}, 8*time.Second, 8
		c.ReadEnvs, c.ReadClients, c.ReadDuration = 10000, 16, 10*time.Second
	}
	return c, nil
}

func (c config) want(section string) bool { return len(c.Only) == 0 || c.Only[section] }

// repoRoot walks up from dir to the directory holding go.mod.
func repoRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("not inside the repository (no go.mod above the working directory)")
		}
	}
}

func run(ctx context.Context, cfg config) error {
	start := time.Now()
	log := cfg.log
	if cfg.Workdir == "" {
		d, err := os.MkdirTemp("", "envfabric-bench-")
		if err != nil {
			return err
		}
		cfg.Workdir = d
	}
	if !cfg.Keep {
		defer func() {
			log.Info("removing the work directory", "dir", cfg.Workdir)
			if err := os.RemoveAll(cfg.Workdir); err != nil {
				log.Warn("removing the work directory", "err", err)
			}
		}()
	}
	log.Info("bench starting", "quick", cfg.Quick, "workdir", cfg.Workdir, "out", cfg.Out, "index", cfg.Index.Source)

	bins, err := fabricbin.Build(ctx, cfg.Root, filepath.Join(cfg.Workdir, "bin"))
	if err != nil {
		return err
	}
	res := &Results{Meta: collectMeta(ctx, cfg)}

	// One fabric for creates, runs, concurrency and the read path; the disk comparison gets two
	// fabrics of its own so that each cache holds only what its environments use.
	fab, err := startFabric(ctx, cfg, bins, "main", "hardlink")
	if err != nil {
		return err
	}
	defer fab.Stop()

	b := &bench{cfg: cfg, log: log, main: fab, bins: bins, res: res}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"create", b.createSection},
		{"run", b.runSection},
		{"concurrency", b.concurrencySection},
		{"read", b.readSection},
		{"disk", b.diskSection},
		{"builds", b.buildsSection},
	}
	for _, s := range steps {
		if !cfg.want(s.name) {
			continue
		}
		t := time.Now()
		log.Info("section starting", "section", s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		log.Info("section done", "section", s.name, "took", time.Since(t).Round(time.Second))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	res.Meta.TotalSeconds = time.Since(start).Seconds()
	if err := writeOutputs(ctx, cfg, res); err != nil {
		return err
	}
	log.Info("bench done", "took", time.Since(start).Round(time.Second), "report", filepath.Join(cfg.Out, "benchmarks.md"))
	return nil
}

// bench carries what the sections share.
type bench struct {
	cfg  config
	log  *slog.Logger
	main *fabric
	bins fabricbin.Binaries
	res  *Results

	python string   // the interpreter the fabric's environments are bound to
	npEnvs []envKey // numpy+pandas environments on main, reused by the run and concurrency sections
}
