// Command scale measures the fabric at the size of a platform (issue 15): it fills PostgreSQL and
// SQLite with SCALE_ENVS synthetic environments (a million by default: 20,000 workflows of 50
// nodes, 300 distinct locks of 5 to 60 packages spread unevenly, a third with a second revision,
// every revision's operation audited), runs a real control plane and agent on each database, and
// measures through the HTTP API the latency (p50, p99) and throughput of status, deps, the list
// of one workflow and history; a full cleanup pass over every environment; the metadata calls
// the use signal makes against the shared storage; the database's bytes per environment beyond
// the distinct lock contents; the control plane's and the agent's memory; and the convergence of
// SCALE_MEMBERS (200) memberlist members on loopback after joins and after a crash, against
// memberlist's configured detection time. It prints the figures and which goals are met.
//
//	make scale                          # 16 minutes on 2 shared cores
//	SCALE_ENVS=100000 make scale        # a quick run
//	SCALE_DB=postgres make scale        # one database only (postgres or sqlite)
//	SCALE_MEMBERS=50 make scale         # fewer gossip members
//	SCALE_DB=none make scale            # gossip only
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
	"github.com/envfabric/envfabric/scripts/internal/synth"
	"github.com/envfabric/envfabric/shared/testutil/fabricbin"
	"github.com/envfabric/envfabric/shared/testutil/pgtest"
)

func main() {
	if spec := os.Getenv(childVar); spec != "" {
		if err := gossipChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, "scale gossip child:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

type binaries struct{ controlPlane, agent string }

type config struct {
	envs, every, members, killed, requests int
	db, uv                                 string
}

func intVar(name string, def, least int) (int, error) {
	s := os.Getenv(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < least {
		return 0, fmt.Errorf("%s=%q: want a whole number of at least %d", name, s, least)
	}
	return v, nil
}

func run(ctx context.Context) error {
	var cfg config
	var err error
	if cfg.envs, err = intVar("SCALE_ENVS", 1_000_000, 1000); err != nil {
		return err
	}
	if cfg.members, err = intVar("SCALE_MEMBERS", 200, 4); err != nil {
		return err
	}
	if cfg.requests, err = intVar("SCALE_REQUESTS", 1000, 100); err != nil {
		return err
	}
	// One environment in a thousand is idle past CLEANUP_IDLE_HOURS: a pass's candidates.
	if cfg.every, err = intVar("SCALE_IDLE_EVERY", 1000, 2); err != nil {
		return err
	}
	cfg.killed = max(2, cfg.members/10)
	cfg.db = os.Getenv("SCALE_DB")
	if cfg.uv = os.Getenv("UV_BIN"); cfg.uv == "" {
		return fmt.Errorf("UV_BIN is not set (make scale sets it to the pinned uv)")
	}
	work, err := os.MkdirTemp("", "scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root, err := repoRoot()
	if err != nil {
		return err
	}
	var bins binaries
	if cfg.db != "none" {
		b, err := fabricbin.Build(ctx, root, filepath.Join(work, "bin"))
		if err != nil {
			return err
		}
		bins = binaries{controlPlane: b.ControlPlane, agent: b.Agent}
	}
	ls := synth.MakeLocks(rand.New(rand.NewPCG(1, 2)), 300)
	fmt.Printf("scale: %d environments (%d workflows of %d nodes) over %d distinct locks of 5-60 packages, 1 in %d idle; %d gossip members; %d CPUs\n",
		cfg.envs, cfg.envs/nodesPerWorkflow, nodesPerWorkflow, len(ls.Locks), cfg.every, cfg.members, runtime.NumCPU())
	var reports []dbReport
	switch cfg.db {
	case "", "postgres", "sqlite", "none":
	default:
		return fmt.Errorf("SCALE_DB=%q: want postgres, sqlite or none (gossip only)", cfg.db)
	}
	for _, name := range []string{"PostgreSQL", "SQLite"} {
		if cfg.db != "" && !(cfg.db == "postgres" && name == "PostgreSQL" || cfg.db == "sqlite" && name == "SQLite") {
			continue
		}
		r, err := measureDB(ctx, cfg, bins, ls, name, filepath.Join(work, name))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		reports = append(reports, r)
	}
	fmt.Printf("gossip: %d memberlist members on loopback (%d in this process, %d in a child killed with SIGKILL)\n", cfg.members, cfg.members-cfg.killed, cfg.killed)
	g, err := measureGossip(ctx, cfg.members, cfg.killed)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	printReport(cfg, reports, g)
	return nil
}

// repoRoot is the module's root (the harness runs from it, or below it).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// dbReport is what one database measured.
type dbReport struct {
	name                 string
	fill                 time.Duration
	bytesPerEnv          float64 // beyond the distinct lock contents
	lockBytes            int64
	latency              map[string]latency
	throughput           map[string]float64
	cleanup              cleanupResult
	cpRSS, cpPeak        int64
	agentRSS, agentPeak  int64
	candidates, envCount int
}

func measureDB(ctx context.Context, cfg config, bins binaries, ls *synth.Locks, name, root string) (dbReport, error) {
	rep := dbReport{name: name}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	envsBase := filepath.Join(root, "envs")
	if err := os.MkdirAll(filepath.Join(root, "controlplane"), 0o755); err != nil {
		return rep, err
	}
	var (
		st     store.Store
		raw    *sql.DB
		d      sqlstore.Dialect
		dbURL  string
		closer func()
	)
	if name == "PostgreSQL" {
		srv, err := pgtest.Start(ctx, nil)
		if err != nil {
			return rep, fmt.Errorf("starting PostgreSQL: %w", err)
		}
		closer = srv.Close
		dbURL = srv.URL("postgres")
		pst, err := postgres.Open(ctx, dbURL, log)
		if err != nil {
			srv.Close()
			return rep, err
		}
		st, d = pst, postgres.Dialect{}
		raw, err = sql.Open("pgx", dbURL)
		if err != nil {
			srv.Close()
			return rep, err
		}
	} else {
		path := filepath.Join(root, "controlplane", "fabric.db")
		sst, err := sqlite.Open(ctx, path, log)
		if err != nil {
			return rep, err
		}
		st, d = sst, sqlite.Dialect{}
		raw, err = sql.Open("sqlite", path+"?_txlock=immediate&_busy_timeout=10000&_journal_mode=WAL&_foreign_keys=1&_synchronous=NORMAL")
		if err != nil {
			return rep, err
		}
		closer = func() {}
	}
	defer closer()
	start := time.Now()
	fl, err := fill(ctx, name, st, raw, d, cfg.envs, cfg.every, ls, envsBase)
	if err != nil {
		return rep, err
	}
	rep.fill = time.Since(start)
	rep.lockBytes, rep.candidates = fl.lockBytes, len(fl.candidates)
	fmt.Printf("%s: filled %d environments in %s\n", name, cfg.envs, rep.fill.Round(time.Second))
	if rep.bytesPerEnv, rep.envCount, err = bytesPerEnv(ctx, raw, d, root); err != nil {
		return rep, err
	}
	raw.Close()
	st.Close()
	if err := candidateDirs(envsBase, fl.candidates); err != nil {
		return rep, err
	}

	f, err := startFabric(ctx, bins, cfg.uv, root, dbURL)
	if err != nil {
		return rep, err
	}
	defer f.stop()
	if rep.latency, rep.throughput, err = measureAPI(ctx, f, cfg); err != nil {
		return rep, err
	}
	rep.cpRSS, rep.cpPeak = f.cp.rss()
	if rep.cleanup, err = measureCleanup(ctx, f, fl, envsBase); err != nil {
		return rep, err
	}
	_, rep.cpPeak = f.cp.rss()
	rep.agentRSS, rep.agentPeak = f.agent.rss()
	return rep, nil
}
