package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/envfabric/envfabric/client"
)

// runCodes are what the run comparison executes: the fixed cost of a run, and a realistic import.
var runCodes = []struct {
	ID, Label, Code, Want string
}{
	{"trivial", "trivial code (print)", `print("ok")`, "ok\n"},
	{"import", "import numpy, pandas and a small DataFrame operation",
		"import numpy, pandas\ndf = pandas.DataFrame({\"a\": numpy.arange(1000)})\nprint(int(df[\"a\"].sum()))", "499500\n"},
}

// RunCase is one code's comparison.
type RunCase struct {
	ID      string    `json:"id"`
	Label   string    `json:"label"`
	Methods []Samples `json:"methods"` // API (warm), direct python, uv run, API cold
	// AgentPython is python's own run inside the API method, as the agent timed it (whole ms).
	AgentPython Samples `json:"agent_python"`
	// WarmHits counts the measured API runs (the first method) the agent served from the build's
	// warm interpreter, of WarmRuns.
	WarmHits int `json:"warm_hits"`
	WarmRuns int `json:"warm_runs"`
}

const (
	mAPIRun     = "fabric POST /run (warm)"
	mDirectRun  = ".venv/bin/python directly"
	mUVRun      = "uv run"
	mAPIColdRun = `fabric POST /run, "warm": false (cold)`
)

// runSection compares a run through the API with starting the environment's python directly and
// with uv run, round-robin on one numpy+pandas environment.
func (b *bench) runSection(ctx context.Context) error {
	if err := b.ensureNumpyEnvs(ctx, 1); err != nil {
		return err
	}
	f := b.main
	k := b.npEnvs[0]
	dir := f.envDir(k)
	venv := filepath.Join(dir, ".venv")
	work, err := os.MkdirTemp(b.cfg.Workdir, "direct-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// What the agent's runner gives the code (agent/runner), so that direct differs only in the
	// path the request takes.
	directEnv := []string{"PATH=" + filepath.Join(venv, "bin") + ":/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV=" + venv,
		"HOME=" + work, "TMPDIR=" + work, "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "PYTHONUNBUFFERED=1", "PYTHONNOUSERSITE=1"}
	uvenv := uvEnv(b.cfg, f.Cache, "hardlink")
	// The control plane's lifecycle code in process, measured in the same rounds as the API, to
	// split a run's time into its phases.
	prof, err := b.newProfiler(ctx, k)
	if err != nil {
		return err
	}
	defer prof.close()

	for _, rc := range runCodes {
		reps := b.cfg.RunTrivialReps
		if rc.ID == "import" {
			reps = b.cfg.RunImportReps
		}
		cs := RunCase{ID: rc.ID, Label: rc.Label, Methods: []Samples{{Name: mAPIRun}, {Name: mDirectRun}, {Name: mUVRun}, {Name: mAPIColdRun}},
			AgentPython: Samples{Name: "python inside the agent (as it reports, whole ms)"}}
		measuring := false
		methods := []func() error{
			func() error {
				r, err := f.run(ctx, k, rc.Code, rc.Want)
				if measuring {
					cs.AgentPython.Samples = append(cs.AgentPython.Samples, r.DurationMS)
					cs.WarmRuns++
					if r.Warm {
						cs.WarmHits++
					}
				}
				return err
			},
			func() error {
				return checkOutput(ctx, work, directEnv, rc.Want, filepath.Join(venv, "bin", "python"), "-c", rc.Code)
			},
			func() error {
				return checkOutput(ctx, work, uvenv, rc.Want, b.cfg.UV, "run", "--project", dir, "python", "-c", rc.Code)
			},
			func() error {
				_, err := f.runWith(ctx, k, client.RunRequest{Code: rc.Code, Cold: true}, rc.Want)
				return err
			},
		}
		if rc.ID == "trivial" {
			cs.Methods = append(cs.Methods, Samples{Name: phServiceRun})
			methods = append(methods, func() error { return prof.run(ctx, rc.Code, rc.Want) })
		}
		// Warm-up rounds: page cache, bytecode caches, the control plane's connections.
		warm := 3
		if rc.ID == "import" {
			warm = 1
		}
		for i := 0; i < warm; i++ {
			for _, m := range methods {
				if err := m(); err != nil {
					return fmt.Errorf("%s warm-up: %w", rc.ID, err)
				}
			}
		}
		// The first runs of a build go cold while its warm interpreter starts (it imports numpy and
		// pandas): the measurement is of the steady state, once a run is answered warm.
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			r, err := f.run(ctx, k, rc.Code, rc.Want)
			if err != nil {
				return fmt.Errorf("%s warm-up: %w", rc.ID, err)
			}
			if r.Warm {
				break
			}
		}
		measuring = true
		prof.reset()
		for i := 0; i < reps; i++ {
			for j := range methods {
				m := (i + j) % len(methods) // rotate which method goes first
				d, err := timed(methods[m])
				if err != nil {
					return fmt.Errorf("%s, %s: %w", rc.ID, cs.Methods[m].Name, err)
				}
				cs.Methods[m].add(d)
			}
		}
		for i := range cs.Methods {
			cs.Methods[i].finish()
		}
		cs.AgentPython.finish()
		if rc.ID == "trivial" {
			b.res.RunProfile = &RunProfile{Phases: prof.phases(cs.Methods[4])}
		}
		b.log.Info("run case done", "case", rc.ID, "api_p50_ms", cs.Methods[0].Summary.Median, "warm_hits", cs.WarmHits, "of", cs.WarmRuns,
			"cold_p50_ms", cs.Methods[3].Summary.Median,
			"direct_p50_ms", cs.Methods[1].Summary.Median, "uvrun_p50_ms", cs.Methods[2].Summary.Median)
		b.res.Run = append(b.res.Run, cs)
	}
	if b.res.RunProfile != nil {
		top, err := b.cpuProfile(ctx, prof, b.cfg.ProfileReps)
		if err != nil {
			return err
		}
		b.res.RunProfile.CPUTop = top
		d := 10 * time.Second
		if b.cfg.Quick {
			d = 3 * time.Second
		}
		if b.res.RunProfile.Perf, err = b.perfProfile(ctx, k, d); err != nil {
			return err
		}
		if b.res.RunProfile.WhatIf, err = b.compressionWhatIf(ctx, k, b.cfg.ProfileReps); err != nil {
			return err
		}
	}
	return nil
}

// checkOutput runs a program and checks what it printed on stdout.
func checkOutput(ctx context.Context, dir string, env []string, want, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, stderr.String())
	}
	if string(out) != want {
		return fmt.Errorf("%s printed %q; want %q (stderr %q)", name, out, want, stderr.String())
	}
	return nil
}

// ensureNumpyEnvs makes sure main has at least n numpy+pandas environments.
func (b *bench) ensureNumpyEnvs(ctx context.Context, n int) error {
	for i := len(b.npEnvs); i < n; i++ {
		k := envKey{"bench-np", fmt.Sprintf("env-%d", i)}
		if err := b.main.create(ctx, k, packageSets[0].Packages); err != nil {
			return fmt.Errorf("creating %s: %w", k.path(), err)
		}
		b.npEnvs = append(b.npEnvs, k)
	}
	if b.python == "" {
		py, err := b.main.pythonPath(ctx, b.npEnvs[0])
		if err != nil {
			return err
		}
		b.python = py
		b.res.Meta.EnvPython = py
	}
	return nil
}
