package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envfabric/envfabric/client"
)

// BuildsResults is the builds section (issue 11: immutable builds): what identical environments
// cost on disk, whether runs are answered while a change of their environment installs, and how
// long a rollback and a wake-up from hibernation take.
type BuildsResults struct {
	// Disk is ENVS_BASE_PATH (every environment's directory and .builds) after N identical
	// numpy + pandas environments, each inode once; WithCache adds the uv cache.
	Disk []BuildsDiskPoint `json:"disk"`

	// DuringChange: Runs trivial runs of one environment, four clients at a time, started while an
	// add of ChangePackage (an install of several seconds) ran on it.
	ChangePackage  string   `json:"change_package"`
	ChangeSeconds  float64  `json:"change_seconds"`
	Runs           int      `json:"runs"`
	RunsOK         int      `json:"runs_ok"`
	RunsDuring     int      `json:"runs_during_change"` // answered before the add answered
	RunErrors      []string `json:"run_errors,omitempty"`
	RunLatency     Samples  `json:"run_latency_during_change"`
	Rollback       Samples  `json:"rollback"`        // POST .../rollback to a revision whose build exists
	AddSameAgain   Samples  `json:"add_install"`     // the add it undoes, for scale (one sample)
	Wake           Samples  `json:"wake"`            // a run of a HIBERNATED numpy + pandas environment
	CreateMaterial Samples  `json:"create_material"` // POST /envs of numpy + pandas whose build must be materialised
	WakeWoke       int      `json:"wake_woke"`       // wake-up runs that answered "woke": true
}

// BuildsDiskPoint is one step of the identical-environments disk measurement.
type BuildsDiskPoint struct {
	Envs      int   `json:"envs"`
	Bytes     int64 `json:"bytes"`      // ENVS_BASE_PATH, builds included
	WithCache int64 `json:"with_cache"` // and the uv cache (files hardlinked from it once)
	Builds    int   `json:"builds"`     // build directories under .builds
}

// buildsSection measures immutable builds on fabrics of their own (fresh caches, so that the
// disk figures hold only these environments; hibernation on only where it is measured).
func (b *bench) buildsSection(ctx context.Context) error {
	res := &BuildsResults{}
	b.res.Builds = res
	f, err := startFabric(ctx, b.cfg, b.bins, "builds", "hardlink")
	if err != nil {
		return err
	}
	err = b.buildsDisk(ctx, f, res)
	if err == nil {
		err = b.buildsChange(ctx, f, res)
	}
	f.Stop()
	if err != nil {
		return err
	}
	// The maintenance pass (each LEASE_TTL) hibernates builds unused for HIBERNATE_AFTER.
	h, err := startFabric(ctx, b.cfg, b.bins, "builds-hibernate", "hardlink", "HIBERNATE_AFTER=1s", "LEASE_TTL=3s")
	if err != nil {
		return err
	}
	defer h.Stop()
	return b.buildsWake(ctx, h, res)
}

// buildsDisk creates identical numpy + pandas environments (the same requirements give
// byte-identical files, hence one build) and measures the disk after each step.
func (b *bench) buildsDisk(ctx context.Context, f *fabric, res *BuildsResults) error {
	made := 0
	for _, n := range b.cfg.DiskSteps {
		var batch []envKey
		for ; made < n; made++ {
			batch = append(batch, envKey{"bench-builds", fmt.Sprintf("same-%03d", made)})
		}
		if err := parallel(ctx, 2, len(batch), func(i int) error {
			return f.create(ctx, batch[i], packageSets[0].Packages)
		}); err != nil {
			return err
		}
		envs, err := usage(map[[2]uint64]bool{}, f.Envs)
		if err != nil {
			return err
		}
		all, err := usage(map[[2]uint64]bool{}, f.Cache, f.Envs)
		if err != nil {
			return err
		}
		builds, err := countBuilds(f)
		if err != nil {
			return err
		}
		res.Disk = append(res.Disk, BuildsDiskPoint{Envs: n, Bytes: envs.Bytes, WithCache: all.Bytes, Builds: builds})
		b.log.Info("builds disk", "envs", n, "MiB", envs.Bytes>>20, "with_cache_MiB", all.Bytes>>20, "builds", builds)
	}
	return nil
}

// countBuilds counts the build directories on the shared storage (docs/builds.md layout).
func countBuilds(f *fabric) (int, error) {
	entries, err := os.ReadDir(filepath.Join(f.Envs, ".builds"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() && len(e.Name()) == 32 { // a build id: 32 hex digits; .locks and set-aside builds are not
			n++
		}
	}
	return n, nil
}

// buildsChange runs a loop of runs of one environment while an add that installs for seconds
// runs on it, then rolls back and forth between the two revisions.
func (b *bench) buildsChange(ctx context.Context, f *fabric, res *BuildsResults) error {
	k := envKey{"bench-builds", "change"}
	if err := f.create(ctx, k, packageSets[0].Packages); err != nil {
		return err
	}
	// scipy: tens of MB to download and install into a new build, while the old one serves runs.
	res.ChangePackage = "scipy"
	const runs, clients = 200, 4
	res.Runs = runs
	res.RunLatency.Name = "trivial run during the add"
	var (
		addDone atomic.Bool
		addErr  error
		addTook time.Duration
		wg      sync.WaitGroup
		mu      sync.Mutex
		started = make(chan struct{})
		next    atomic.Int64
	)
	wg.Go(func() {
		close(started)
		addTook, addErr = timed(func() error {
			_, err := f.api.Add(ctx, k.env(), []string{res.ChangePackage})
			return err
		})
		addDone.Store(true)
	})
	<-started
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= runs {
				during := !addDone.Load()
				d, err := timed(func() error {
					_, err := f.run(ctx, k, runCodes[0].Code, runCodes[0].Want)
					return err
				})
				during = during && !addDone.Load()
				mu.Lock()
				if err == nil {
					res.RunsOK++
					res.RunLatency.add(d)
					if during {
						res.RunsDuring++
					}
				} else if len(res.RunErrors) < 5 {
					res.RunErrors = append(res.RunErrors, err.Error())
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.RunLatency.finish()
	if addErr != nil {
		return fmt.Errorf("the add during the runs: %w", addErr)
	}
	res.ChangeSeconds = addTook.Seconds()
	res.AddSameAgain.Name = "add " + res.ChangePackage + " (installs a new build)"
	res.AddSameAgain.add(addTook)
	res.AddSameAgain.finish()
	b.log.Info("runs during a change", "ok", res.RunsOK, "of", runs, "during", res.RunsDuring, "add_seconds", res.ChangeSeconds)

	// Revision 1 (numpy + pandas) and 2 (+ scipy) both have their build: a rollback to either is
	// a new revision pointing at an existing build.
	res.Rollback.Name = "rollback to a revision whose build exists"
	reps := max(3, b.cfg.CreateReps)
	for i := range 2 * reps {
		target := 1 + i%2
		d, err := timed(func() error {
			_, err := f.api.Rollback(ctx, k.env(), int64(target))
			return err
		})
		if err != nil {
			return err
		}
		res.Rollback.add(d)
	}
	res.Rollback.finish()
	return nil
}

// buildsWake compares a run that wakes a hibernated numpy + pandas environment (materialising
// its build again from the recorded lock) with a create that materialises the same build, each
// after the build was hibernated, interleaved.
func (b *bench) buildsWake(ctx context.Context, f *fabric, res *BuildsResults) error {
	k := envKey{"bench-wake", "sleeper"}
	if err := f.create(ctx, k, packageSets[0].Packages); err != nil { // fills the cache
		return err
	}
	res.Wake.Name = "run in a HIBERNATED numpy + pandas environment (wake-up)"
	res.CreateMaterial.Name = "POST /envs numpy + pandas, build materialised"
	reps := max(3, b.cfg.CreateReps/3)
	for i := range reps {
		if err := waitState(ctx, f, k, "HIBERNATED", 2*time.Minute); err != nil {
			return err
		}
		var woke *client.RunResult
		d, err := timed(func() (err error) {
			woke, err = f.api.Run(ctx, k.env(), client.RunRequest{Code: runCodes[0].Code, Timeout: 120 * time.Second})
			return err
		})
		if err != nil {
			return err
		}
		if woke.ExitCode != 0 || string(woke.Stdout) != runCodes[0].Want {
			return fmt.Errorf("wake-up run: exit %d, stdout %q, stderr %q", woke.ExitCode, woke.Stdout, woke.Stderr)
		}
		res.Wake.add(d)
		if woke.Woke {
			res.WakeWoke++
		}
		if err := waitState(ctx, f, k, "HIBERNATED", 2*time.Minute); err != nil {
			return err
		}
		other := envKey{"bench-wake", fmt.Sprintf("create-%02d", i)}
		d, err = timed(func() error { return f.create(ctx, other, packageSets[0].Packages) })
		if err != nil {
			return err
		}
		res.CreateMaterial.add(d)
		// Not in the way of the next round: the create's environment shares the build.
		if _, err := f.api.Delete(ctx, other.env()); err != nil {
			return err
		}
	}
	res.Wake.finish()
	res.CreateMaterial.finish()
	b.log.Info("wake-up", "wake_p50_ms", res.Wake.Summary.Median, "create_p50_ms", res.CreateMaterial.Summary.Median, "woke", res.WakeWoke)
	return nil
}

// waitState polls GET status until the environment is in state.
func waitState(ctx context.Context, f *fabric, k envKey, state string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		st, err := f.api.Status(ctx, k.env())
		if err != nil {
			return err
		}
		if last = st.State; last == state {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return errors.New(k.path() + " still " + last + ", not " + state + ", after " + limit.String())
}

// evaluateBuildsTargets adds issue 11's targets.
func evaluateBuildsTargets(r *Results) {
	bl := r.Builds
	if bl == nil {
		return
	}
	var one, most BuildsDiskPoint
	for _, p := range bl.Disk {
		if p.Envs == 1 {
			one = p
		}
		if p.Envs > most.Envs {
			most = p
		}
	}
	if one.Envs == 1 && most.Envs > 1 {
		x := ratio(float64(most.Bytes), float64(one.Bytes))
		r.Targets = append(r.Targets, Target{Name: "identical environments on disk (builds)",
			Goal:     fmt.Sprintf("%d identical environments within 1.1x the disk of one (ENVS_BASE_PATH, builds included)", most.Envs),
			Measured: fmt.Sprintf("%s vs %s: %.3fx", mib(most.Bytes), mib(one.Bytes), x),
			Met:      x <= 1.1})
	}
	if bl.Runs > 0 {
		r.Targets = append(r.Targets, Target{Name: "runs during a change (builds)",
			Goal: fmt.Sprintf("all %d runs of an environment answered while an add of %s installs", bl.Runs, bl.ChangePackage),
			Measured: fmt.Sprintf("%d of %d answered, %d of them before the %.1f s add answered", bl.RunsOK, bl.Runs, bl.RunsDuring,
				bl.ChangeSeconds),
			Met: bl.RunsOK == bl.Runs})
	}
}

// buildsReport is the builds section of benchmarks.md.
func buildsReport(bl *BuildsResults) string {
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("## 6. Immutable builds\n\n")
	p("Fabrics of their own, fresh uv caches, `UV_LINK_MODE=hardlink`. An environment points at a build (docs/builds.md):\n")
	p("environments with the same requirements share one, a change builds beside the current one and switches.\n\n")
	if len(bl.Disk) > 0 {
		p("**Identical numpy + pandas environments.** Disk = `st_blocks × 512` over `ENVS_BASE_PATH` (every environment's\n")
		p("directory and `.builds`), each inode once; then with the uv cache too (a file hardlinked from it counts once).\n\n")
		p("| environments | builds | ENVS_BASE_PATH | vs 1 env | with the cache |\n|---:|---:|---:|---:|---:|\n")
		first := bl.Disk[0].Bytes
		for _, d := range bl.Disk {
			p("| %d | %d | %s | %.3fx | %s |\n", d.Envs, d.Builds, mib(d.Bytes), ratio(float64(d.Bytes), float64(first)), mib(d.WithCache))
		}
		p("\n")
	}
	if bl.Runs > 0 {
		p("**Runs during a change.** %d trivial runs of one numpy + pandas environment, 4 clients, started with an add of\n", bl.Runs)
		p("`%s` to it (%.1f s, a new build installed beside the current one): %d answered `200` with the expected output,\n",
			bl.ChangePackage, bl.ChangeSeconds, bl.RunsOK)
		p("%d of them before the add answered. Run latency meanwhile: p50 %.1f ms, p99 %.1f ms.\n", bl.RunsDuring,
			bl.RunLatency.Summary.Median, bl.RunLatency.Summary.P99)
		for _, e := range bl.RunErrors {
			p("- error: `%s`\n", oneLine(e))
		}
		p("\n")
	}
	p("| operation | n | p50 ms | p99 ms | min ms |\n|---|---:|---:|---:|---:|\n")
	for _, s := range []Samples{bl.Rollback, bl.AddSameAgain, bl.Wake, bl.CreateMaterial} {
		if s.Summary.N > 0 {
			p("| %s | %d | %.0f | %.0f | %.0f |\n", s.Name, s.Summary.N, s.Summary.Median, s.Summary.P99, s.Summary.Min)
		}
	}
	if bl.Wake.Summary.N > 0 {
		p("\nThe wake-up is a run of an environment whose build hibernation removed (`HIBERNATE_AFTER=1s` on that fabric):\n")
		p("the control plane materialises the build again from the recorded lock and runs (%d of %d answered `\"woke\": true`),\n",
			bl.WakeWoke, bl.Wake.Summary.N)
		p("against a create of the same requirements after the build was removed again (resolve, then the same\n")
		p("materialisation); interleaved round by round, warm cache.\n")
	}
	p("\n")
	return w.String()
}
