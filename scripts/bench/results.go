package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Results is everything one run measured; written as bench/results.json next to the report.
type Results struct {
	Meta        Meta           `json:"meta"`
	Create      []CreateCase   `json:"create"`
	Run         []RunCase      `json:"run"`
	RunProfile  *RunProfile    `json:"run_profile,omitempty"`
	Concurrency *ConcResults   `json:"concurrency,omitempty"`
	Read        *ReadResults   `json:"read,omitempty"`
	Disk        *DiskResults   `json:"disk,omitempty"`
	Builds      *BuildsResults `json:"builds,omitempty"`
	Targets     []Target       `json:"targets"`
}

// Meta says where and how the figures were taken.
type Meta struct {
	Date         string  `json:"date"`
	Commit       string  `json:"commit"`
	Quick        bool    `json:"quick"`
	CPU          string  `json:"cpu"`
	CPUs         int     `json:"cpus"`
	Kernel       string  `json:"kernel"`
	LoadAtStart  string  `json:"loadavg_at_start"`
	LoadAtEnd    string  `json:"loadavg_at_end"`
	GoVersion    string  `json:"go_version"`
	UVVersion    string  `json:"uv_version"`
	EnvPython    string  `json:"env_python"`
	IndexSource  string  `json:"index_source"` // never the URL
	TotalSeconds float64 `json:"total_seconds"`
}

// Target is one of the goals and how this run did.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

func collectMeta(ctx context.Context, cfg config) Meta {
	m := Meta{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Quick: cfg.Quick, CPUs: runtime.NumCPU(),
		GoVersion: runtime.Version(), IndexSource: cfg.Index.Source}
	out := func(name string, args ...string) string {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = cfg.Root
		b, _ := cmd.Output()
		return strings.TrimSpace(string(b))
	}
	m.Commit = out("git", "rev-parse", "--short", "HEAD")
	if out("git", "status", "--porcelain", "--untracked-files=no") != "" {
		m.Commit += " (with local changes)"
	}
	m.UVVersion = out(cfg.UV, "--version")
	m.Kernel = out("uname", "-r")
	m.LoadAtStart = loadAvg()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// evaluateTargets checks the targets against what was measured.
func evaluateTargets(r *Results) {
	for _, rc := range r.Run {
		api, direct := rc.Methods[0].Summary.Median, rc.Methods[1].Summary.Median
		hits := fmt.Sprintf(" (%d of %d runs warm)", rc.WarmHits, rc.WarmRuns)
		switch rc.ID {
		case "trivial":
			r.Targets = append(r.Targets, Target{Name: "warm trivial run",
				Goal:     "API p50 at most 0.5x the env's python started directly",
				Measured: fmt.Sprintf("%.1f ms vs %.1f ms: %.2fx%s", api, direct, ratio(api, direct), hits),
				Met:      ratio(api, direct) <= 0.5})
			if len(rc.Methods) > 3 {
				cold := rc.Methods[3].Summary.Median
				r.Targets = append(r.Targets, Target{Name: "cold trivial run overhead",
					Goal:     "a cold run through the API within 5 ms of the env's python started directly",
					Measured: fmt.Sprintf("%.1f ms vs %.1f ms: %+.1f ms", cold, direct, cold-direct),
					Met:      cold-direct <= 5})
			}
		case "import":
			r.Targets = append(r.Targets, Target{Name: "warm import numpy, pandas and a DataFrame operation",
				Goal:     "API p50 at most 0.1x the env's python started directly",
				Measured: fmt.Sprintf("%.1f ms vs %.1f ms: %.3fx%s", api, direct, ratio(api, direct), hits),
				Met:      ratio(api, direct) <= 0.1})
		}
	}
	for _, cc := range r.Create {
		f, u := cc.Methods[0].Summary.Median, cc.Methods[1].Summary.Median
		r.Targets = append(r.Targets, Target{Name: "create, " + cc.Label,
			Goal:     "fabric p50 within 10% of uv by hand",
			Measured: fmt.Sprintf("%.0f ms vs %.0f ms: %.2fx", f, u, ratio(f, u)),
			Met:      ratio(f, u) <= 1.10})
	}
	if d := r.Disk; d != nil {
		var one, most DiskPoint
		for _, p := range d.Points {
			if p.Mode != "hardlink" {
				continue
			}
			if p.Envs == 1 {
				one = p
			}
			if p.Envs > most.Envs {
				most = p
			}
		}
		if one.Envs == 1 && most.Envs > 1 {
			x := ratio(float64(most.Bytes), float64(one.Bytes))
			r.Targets = append(r.Targets, Target{Name: "disk",
				Goal:     fmt.Sprintf("%d environments within 1.1x the disk of one", most.Envs),
				Measured: fmt.Sprintf("%s vs %s: %.2fx", mib(most.Bytes), mib(one.Bytes), x),
				Met:      x <= 1.1})
		}
	}
	evaluateBuildsTargets(r)
	if r.Concurrency != nil || r.Read != nil {
		failed, total := 0, 0
		if c := r.Concurrency; c != nil {
			for _, l := range c.Runs {
				failed += l.Errors
				total += l.Requests
			}
			failed += c.Creates.Errors
			total += c.Creates.N
		}
		if rd := r.Read; rd != nil {
			for _, l := range rd.Endpoints {
				failed += l.Errors
				total += l.Requests
			}
		}
		r.Targets = append(r.Targets, Target{Name: "errors under concurrency",
			Goal:     "no failed request",
			Measured: fmt.Sprintf("%d failed of %d", failed, total),
			Met:      failed == 0})
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// writeOutputs writes results.json, the charts and benchmarks.md.
func writeOutputs(ctx context.Context, cfg config, r *Results) error {
	r.Meta.LoadAtEnd = loadAvg()
	evaluateTargets(r)
	dir := filepath.Join(cfg.Out, "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), []byte(scrub(cfg, string(raw))+"\n"), 0o644); err != nil {
		return err
	}
	if src := filepath.Join(cfg.Workdir, "run-cpu.pprof"); r.RunProfile != nil {
		if b, err := os.ReadFile(src); err == nil {
			_ = os.WriteFile(filepath.Join(dir, "run-cpu.pprof"), b, 0o644)
		}
	}
	chartErr := drawCharts(ctx, cfg, dir)
	if chartErr != nil {
		cfg.log.Error("drawing the charts failed; the report is written without them", "err", chartErr)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "benchmarks.md"), []byte(scrub(cfg, report(cfg, r))), 0o644); err != nil {
		return err
	}
	printTargets(r)
	return chartErr
}

// scrub keeps the package index's address out of every file written: an error message quoted in
// the results may name it.
func scrub(cfg config, s string) string {
	if cfg.Index.URL == "" {
		return s
	}
	s = strings.ReplaceAll(s, cfg.Index.URL, "<index>")
	if u, err := url.Parse(cfg.Index.URL); err == nil && u.Host != "" {
		s = strings.ReplaceAll(s, u.Host, "<index-host>")
	}
	return s
}

// printTargets prints the targets and how this run did.
func printTargets(r *Results) {
	fmt.Println("Targets:")
	for _, t := range r.Targets {
		mark := "met"
		if !t.Met {
			mark = "MISSED"
		}
		fmt.Printf("  %-6s  %-32s  %-60s  %s\n", mark, t.Name, t.Goal, t.Measured)
	}
}

// drawCharts runs scripts/bench/charts.py with matplotlib in a throw-away environment made by the
// pinned uv from the discovered index.
func drawCharts(ctx context.Context, cfg config, dir string) error {
	env := uvEnv(cfg, filepath.Join(cfg.Workdir, "charts-uv-cache"), "hardlink")
	cmd := exec.CommandContext(ctx, cfg.UV, "run", "--no-project", "--python", cfg.Python, "--with", "matplotlib",
		"python", filepath.Join(cfg.Root, "scripts/bench/charts.py"), filepath.Join(dir, "results.json"), dir)
	cmd.Env = env
	cmd.Dir = cfg.Root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("charts: %w\n%s", err, out)
	}
	return nil
}
