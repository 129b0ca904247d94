// Command benchdeps measures the dependency questions of issue 14 at fleet scale: it puts
// BENCHDEPS_ENVS environments (100,000 by default) into a fresh database through the store —
// realistic shape: a few hundred distinct locks of 5 to 60 packages, popular packages in most
// of them, environments spread over the locks unevenly — loads a generated OSV dataset, and
// times the package query (GET /packages/{name}, first and later pages, with and without a
// specifier) and the vulnerabilities view (GET /vulnerabilities) through the service the
// handlers call, on SQLite and on PostgreSQL (a private server, as the tests start one). It
// prints p50, p99 and max of each; the goal is p99 < 50 ms.
//
//	go run ./scripts/benchdeps                   # make bench runs it
//	BENCHDEPS_ENVS=10000 go run ./scripts/benchdeps
//	BENCHDEPS_DB=sqlite go run ./scripts/benchdeps  # one database only (sqlite or postgres)
package main

import (
	"archive/zip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/controlplane/depintel"
	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/scripts/internal/synth"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/testutil/pgtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "benchdeps:", err)
		os.Exit(1)
	}
}

const (
	locks    = 300
	names    = synth.Names
	popular  = synth.Popular // the first names appear in most locks
	nQueries = 400
	views    = 100
	pageSize = 100
)

type dataset struct {
	*synth.Locks
	locks     []string
	versions  map[string][]string // name → versions
	advisoryZ string              // the OSV zip
}

var pkgName = synth.PkgName

func makeDataset(r *rand.Rand, dir string) (*dataset, error) {
	ls := synth.MakeLocks(r, locks)
	ds := &dataset{Locks: ls, locks: ls.Locks, versions: ls.Versions}
	// Advisories: 400 records over the names, ranges of the generated versions.
	ds.advisoryZ = filepath.Join(dir, "all.zip")
	f, err := os.Create(ds.advisoryZ)
	if err != nil {
		return nil, err
	}
	zw := zip.NewWriter(f)
	sev := []string{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"}
	for a := 0; a < 400; a++ {
		n := pkgName(r.IntN(names))
		if a < 6 {
			n = pkgName(a) // the popular names have advisories too
		}
		fixed := ds.versions[n][r.IntN(len(ds.versions[n]))]
		rec := map[string]any{
			"id": fmt.Sprintf("PYSEC-2099-%d", a), "modified": "2099-01-01T00:00:00Z", "aliases": []string{fmt.Sprintf("CVE-2099-%d", a)},
			"summary":  "generated advisory " + strconv.Itoa(a),
			"severity": []map[string]string{{"type": "CVSS_V3", "score": sev[a%3]}},
			"affected": []map[string]any{{"package": map[string]string{"ecosystem": "PyPI", "name": n},
				"ranges": []map[string]any{{"type": "ECOSYSTEM", "events": []map[string]string{{"introduced": "0"}, {"fixed": fixed}}}}}},
		}
		if a%50 == 0 {
			rec["withdrawn"] = "2099-01-02T00:00:00Z"
		}
		w, err := zw.Create(fmt.Sprintf("PYSEC-2099-%d.json", a))
		if err != nil {
			return nil, err
		}
		if err := json.NewEncoder(w).Encode(rec); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return ds, f.Close()
}

func (ds *dataset) pickLock(r *rand.Rand) int { return ds.Pick(r) }

func run(ctx context.Context) error {
	n := 100000
	if s := os.Getenv("BENCHDEPS_ENVS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			return fmt.Errorf("BENCHDEPS_ENVS=%q: want a positive number", s)
		}
		n = v
	}
	dir, err := os.MkdirTemp("", "benchdeps-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	r := rand.New(rand.NewPCG(1, 2))
	ds, err := makeDataset(r, dir)
	if err != nil {
		return err
	}
	db, err := osv.Load(ds.advisoryZ)
	if err != nil {
		return err
	}
	fmt.Printf("benchdeps: %d environments over %d distinct locks (5-60 packages), %d package names, %d advisories\n", n, locks, names, db.Len())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	only := os.Getenv("BENCHDEPS_DB")
	if only == "" || only == "sqlite" {
		// BENCHDEPS_SQLITE keeps the SQLite database at a path, and reuses it when it already
		// holds the environments (for profiling the queries without inserting again).
		path := filepath.Join(dir, "fabric.db")
		if p := os.Getenv("BENCHDEPS_SQLITE"); p != "" {
			path = p
		}
		st, err := sqlite.Open(ctx, path, log)
		if err != nil {
			return err
		}
		err = measure(ctx, "SQLite", st, ds, db, n, 1, log)
		st.Close()
		if err != nil {
			return err
		}
	}
	if only == "" || only == "postgres" {
		srv, err := pgtest.Start(ctx, nil)
		if err != nil {
			return fmt.Errorf("starting PostgreSQL: %w", err)
		}
		defer srv.Close()
		st, err := postgres.Open(ctx, srv.URL("postgres"), log)
		if err != nil {
			return err
		}
		err = measure(ctx, "PostgreSQL", st, ds, db, n, 8, log)
		st.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func measure(ctx context.Context, name string, st store.Store, ds *dataset, db *osv.DB, n, workers int, log *slog.Logger) error {
	start := time.Now()
	if refs, err := st.LockRefs(ctx); err != nil {
		return err
	} else if held := sumEnvs(refs); held > 0 {
		if held != n {
			return fmt.Errorf("%s already holds %d environments, not %d", name, held, n)
		}
		fmt.Printf("%s: reusing the %d environments in the database\n", name, held)
		return queries(ctx, name, st, ds, db, n, log)
	}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := w; i < n; i += workers {
				if ctx.Err() != nil {
					errc <- ctx.Err()
					return
				}
				key := envid.Key{WorkflowID: fmt.Sprintf("wf%04d", i/50), NodeID: fmt.Sprintf("node%02d", i%50), VersionID: "v1"}
				if err := insert(ctx, st, key, ds.locks[ds.pickLock(r)]); err != nil {
					errc <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	fmt.Printf("%s: inserted %d environments through the store in %s\n", name, n, time.Since(start).Round(time.Second))
	return queries(ctx, name, st, ds, db, n, log)
}

func sumEnvs(refs map[string]store.LockRef) int {
	n := 0
	for _, r := range refs {
		n += r.Envs
	}
	return n
}

func queries(ctx context.Context, name string, st store.Store, ds *dataset, db *osv.DB, n int, log *slog.Logger) error {
	svc := depintel.New(st, func() *osv.DB { return db }, "bench", log)

	r := rand.New(rand.NewPCG(3, 4))
	specs := []func(vs []string) string{
		func([]string) string { return "" },
		func(vs []string) string { return "<" + vs[len(vs)/2] },
		func(vs []string) string { return ">=" + vs[0] },
		func(vs []string) string { return "==" + vs[len(vs)-1] },
		func([]string) string { return "~=1.0" },
	}
	var first, later []time.Duration
	pcpu0 := cpuTime()
	for q := 0; q < nQueries; q++ {
		nm := pkgName(r.IntN(names))
		if q%2 == 0 {
			nm = pkgName(r.IntN(popular)) // the popular names are the expensive ones
		}
		spec := specs[q%len(specs)](ds.versions[nm])
		t0 := time.Now()
		p, err := svc.Holders(ctx, nm, spec, envid.Key{}, pageSize)
		if err != nil {
			return err
		}
		first = append(first, time.Since(t0))
		if p.Next != (envid.Key{}) {
			// A later page: start from an environment in the middle of the key space.
			after := envid.Key{WorkflowID: fmt.Sprintf("wf%04d", r.IntN(n/50+1)), NodeID: "node00", VersionID: "v1"}
			t0 := time.Now()
			if _, err := svc.Holders(ctx, nm, spec, after, pageSize); err != nil {
				return err
			}
			later = append(later, time.Since(t0))
		}
	}
	if path := os.Getenv("BENCHDEPS_CPUPROFILE"); path != "" {
		f, err := os.Create(path + "." + name)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	pkgCPU := (cpuTime() - pcpu0) / time.Duration(len(first)+len(later))
	// The first view after start reads every lock's packages and samples (a control plane's
	// metrics loop does this at start); it is reported apart from the steady state.
	t0 := time.Now()
	if _, err := svc.Vulnerabilities(ctx, depintel.VulnQuery{Limit: 100, EnvLimit: 20}); err != nil {
		return err
	}
	cold := time.Since(t0)
	var vuln []time.Duration
	var found int
	cpu0 := cpuTime()
	for v := 0; v < views; v++ {
		t0 := time.Now()
		p, err := svc.Vulnerabilities(ctx, depintel.VulnQuery{Limit: 100, EnvLimit: 20})
		if err != nil {
			return err
		}
		vuln = append(vuln, time.Since(t0))
		found = len(p.Findings)
	}
	viewCPU := (cpuTime() - cpu0) / views
	var envv []time.Duration
	for v := 0; v < views; v++ {
		i := r.IntN(n)
		key := envid.Key{WorkflowID: fmt.Sprintf("wf%04d", i/50), NodeID: fmt.Sprintf("node%02d", i%50), VersionID: "v1"}
		t0 := time.Now()
		if _, err := svc.EnvVulnerabilities(ctx, key); err != nil {
			return err
		}
		envv = append(envv, time.Since(t0))
	}
	report(name, "package query, first page (limit 100)", first)
	report(name, "package query, a later page", later)
	report(name, fmt.Sprintf("vulnerabilities view, first page (%d advisories, 20 envs each)", found), vuln)
	report(name, "one environment's vulnerabilities", envv)
	fmt.Printf("%-10s %-62s %s\n", name, "vulnerabilities view, the first after start (cold caches)", cold.Round(10*time.Microsecond))
	fmt.Printf("%-10s %-62s %s (this process; wall times above include waiting for a CPU)\n", name, "package query, CPU per query", pkgCPU.Round(10*time.Microsecond))
	fmt.Printf("%-10s %-62s %s (this process; wall times above include waiting for a CPU)\n", name, "vulnerabilities view, CPU per view", viewCPU.Round(10*time.Microsecond))
	return nil
}

func insert(ctx context.Context, st store.Store, key envid.Key, lock string) error {
	return synth.Insert(ctx, st, key, "[project]\nname = \"envfabric-env\"\n", lock, "", 0)
}

// cpuTime is this process's user and system CPU time so far (the SQLite store runs in it; a
// PostgreSQL server's own CPU is not counted).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(db, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	p := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	verdict := "ok"
	if p(0.99) >= 50*time.Millisecond {
		verdict = "OVER the 50 ms goal"
	}
	fmt.Printf("%-10s %-62s n=%-4d p50 %-8s p99 %-8s max %-8s %s\n", db, what, len(ds), p(0.5).Round(10*time.Microsecond),
		p(0.99).Round(10*time.Microsecond), ds[len(ds)-1].Round(10*time.Microsecond), verdict)
}
