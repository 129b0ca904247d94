package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// packageSets are what the create comparison installs: the TRD's example and a handful of small
// pure-Python packages, where fixed costs (process starts, resolution) dominate.
var packageSets = []struct {
	ID       string
	Label    string
	Packages []string
}{
	{"numpy-pandas", "numpy + pandas", []string{"numpy", "pandas"}},
	{"pure-python", "6 pure-Python packages", []string{"six", "attrs", "idna", "packaging", "tomli", "typing-extensions"}},
}

// CreateCase is one package set's comparison.
type CreateCase struct {
	ID       string    `json:"id"`
	Label    string    `json:"label"`
	Packages []string  `json:"packages"`
	Methods  []Samples `json:"methods"` // fabric, uv by hand, venv + pip
	// Note says why a method has no samples (venv + pip failing on a machine without ensurepip).
	Note string `json:"note,omitempty"`
}

// Method names shared by the report and the charts.
const (
	mFabricCreate = "fabric POST /envs"
	mUVByHand     = "uv init + uv add (by hand)"
	mVenvPip      = "python -m venv + pip install"
)

// createSection compares POST /envs with the uv commands a user would type and with venv + pip,
// all with warm caches: each method does one untimed round first.
func (b *bench) createSection(ctx context.Context) error {
	f := b.main
	manualRoot := filepath.Join(f.DataRoot, "by-hand") // same filesystem as the cache: hardlinks work
	pipRoot := filepath.Join(b.cfg.Workdir, "pip")
	for _, d := range []string{manualRoot, pipRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The first create also tells which interpreter the fabric uses; uv by hand and venv get the same.
	first := envKey{"bench-create", "numpy-pandas-warm"}
	if err := f.create(ctx, first, packageSets[0].Packages); err != nil {
		return fmt.Errorf("warm-up create: %w", err)
	}
	b.npEnvs = append(b.npEnvs, first)
	py, err := f.pythonPath(ctx, first)
	if err != nil {
		return err
	}
	b.python = py
	b.res.Meta.EnvPython = py
	uvenv := uvEnv(b.cfg, f.Cache, "hardlink")
	pipEnv := append(os.Environ(), "PIP_DISABLE_PIP_VERSION_CHECK=1")

	for _, set := range packageSets {
		cc := CreateCase{ID: set.ID, Label: set.Label, Packages: set.Packages,
			Methods: []Samples{{Name: mFabricCreate}, {Name: mUVByHand}, {Name: mVenvPip}}}
		n := 0
		fabricOnce := func(measure bool) error {
			n++
			k := envKey{"bench-create", fmt.Sprintf("%s-%d", set.ID, n)}
			d, err := timed(func() error { return f.create(ctx, k, set.Packages) })
			if err != nil {
				return err
			}
			if set.ID == "numpy-pandas" {
				b.npEnvs = append(b.npEnvs, k)
			}
			if measure {
				cc.Methods[0].add(d)
			}
			return nil
		}
		byHandOnce := func(measure bool) error {
			n++
			dir := filepath.Join(manualRoot, fmt.Sprintf("%s-%d", set.ID, n))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			d, err := timed(func() error {
				if err := command(ctx, dir, uvenv, b.cfg.UV, "init", "--bare", "--no-workspace", "--python", py); err != nil {
					return err
				}
				return command(ctx, dir, uvenv, b.cfg.UV, append([]string{"add", "--python", py, "--"}, set.Packages...)...)
			})
			if err != nil {
				return err
			}
			if measure {
				cc.Methods[1].add(d)
			}
			return os.RemoveAll(dir)
		}
		pipOnce := func(measure bool) error {
			n++
			dir := filepath.Join(pipRoot, fmt.Sprintf("%s-%d", set.ID, n))
			d, err := timed(func() error {
				if err := command(ctx, pipRoot, pipEnv, py, "-m", "venv", dir); err != nil {
					return err
				}
				return command(ctx, pipRoot, pipEnv, filepath.Join(dir, "bin", "pip"),
					append([]string{"install", "--quiet"}, set.Packages...)...)
			})
			if err != nil {
				return err
			}
			if measure {
				cc.Methods[2].add(d)
			}
			return os.RemoveAll(dir)
		}
		// Warm-up: fills the uv cache, pip's cache and the page cache.
		for _, fn := range []func(bool) error{fabricOnce, byHandOnce} {
			if err := fn(false); err != nil {
				return fmt.Errorf("%s warm-up: %w", set.ID, err)
			}
		}
		pipReps := b.cfg.PipReps
		if err := pipOnce(false); err != nil {
			// Not the fabric's failure: report it and go on with the other comparisons.
			b.log.Error("venv + pip failed; that comparison is left out", "set", set.ID, "err", err)
			cc.Note = "python -m venv + pip install failed here, so it is left out: " + oneLine(err.Error())
			pipReps = 0
		}
		for i := 0; i < b.cfg.CreateReps; i++ {
			// Rotate the order so that no method always runs right after another.
			order := []func(bool) error{fabricOnce, byHandOnce}
			if i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			if i < pipReps {
				order = append(order, pipOnce)
			}
			for _, fn := range order {
				if err := fn(true); err != nil {
					return fmt.Errorf("%s: %w", set.ID, err)
				}
			}
			b.log.Info("create round", "set", set.ID, "round", i+1, "of", b.cfg.CreateReps)
		}
		for i := range cc.Methods {
			cc.Methods[i].finish()
		}
		b.res.Create = append(b.res.Create, cc)
	}
	return nil
}
