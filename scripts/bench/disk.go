package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// DiskPoint is the disk used after N environments in one link mode.
type DiskPoint struct {
	Mode  string `json:"mode"` // hardlink or copy
	Envs  int    `json:"envs"`
	Bytes int64  `json:"bytes"` // environments + cache, each inode once
	// EnvBytes and CacheBytes split Bytes: files linked into environments from the cache count
	// under the cache.
	EnvBytes   int64 `json:"env_bytes"`
	CacheBytes int64 `json:"cache_bytes"`
	// EnvDirBytes and EnvDirs are the directories among EnvBytes: a hardlink shares a file,
	// never a directory, so every environment has its own site-packages tree.
	EnvDirBytes int64 `json:"env_dir_bytes"`
	EnvDirs     int64 `json:"env_dirs"`
}

// DiskResults is the disk comparison.
type DiskResults struct {
	Points []DiskPoint `json:"points"`
	// AfterImport is the hardlink fabric after `import numpy, pandas` ran once in ImportEnvs of its
	// environments: Python writes bytecode into each environment's own site-packages directories.
	ImportEnvs        int   `json:"import_envs"`
	AfterImportBytes  int64 `json:"after_import_bytes"`
	BeforeImportBytes int64 `json:"before_import_bytes"`
	// FirstImport is how long those first runs took through the API (bytecode compiled on the
	// way); compare with the warm import in the run section.
	FirstImport Samples `json:"first_import"`
	// OwnFiles describes the files one hardlinked environment does not share with the cache,
	// largest first ("size path").
	OwnFiles      []string `json:"own_files_example"`
	OwnFileCount  int      `json:"own_file_count"`
	OwnFilesBytes int64    `json:"own_files_bytes"`
}

// du is what usage found.
type du struct {
	Bytes, DirBytes, Dirs int64
}

// usage sums st_blocks*512 over everything under roots, each (device, inode) once; seen carries
// inodes already counted (by an earlier root) and is updated.
func usage(seen map[[2]uint64]bool, roots ...string) (du, error) {
	var total du
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			fi, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				return fmt.Errorf("%s: no stat information", path)
			}
			id := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
			total.Bytes += st.Blocks * 512
			if d.IsDir() {
				total.DirBytes += st.Blocks * 512
				total.Dirs++
			}
			return nil
		})
		if err != nil {
			return du{}, err
		}
	}
	return total, nil
}

// diskSection creates 1, 10 and 100 numpy+pandas environments on a fabric in hardlink mode and
// on one in copy mode, each with its own fresh cache, and measures what they use.
func (b *bench) diskSection(ctx context.Context) error {
	res := &DiskResults{}
	b.res.Disk = res
	for _, mode := range []string{"hardlink", "copy"} {
		f, err := startFabric(ctx, b.cfg, b.bins, "disk-"+mode, mode)
		if err != nil {
			return err
		}
		err = b.diskMode(ctx, f, mode, res)
		f.Stop()
		if err != nil {
			return fmt.Errorf("%s mode: %w", mode, err)
		}
		// Copy mode writes the whole of numpy and pandas per environment: give the space back.
		if err := os.RemoveAll(f.DataRoot); err != nil {
			b.log.Warn("removing a disk fabric's data", "err", err)
		}
	}
	return nil
}

func (b *bench) diskMode(ctx context.Context, f *fabric, mode string, res *DiskResults) error {
	made := 0
	var keys []envKey
	for _, n := range b.cfg.DiskSteps {
		t := time.Now()
		var batch []envKey
		for ; made < n; made++ {
			batch = append(batch, envKey{"bench-disk", fmt.Sprintf("env-%03d", made)})
		}
		// Two at a time: the fabric runs creates of different environments side by side.
		if err := parallel(ctx, 2, len(batch), func(i int) error {
			return f.create(ctx, batch[i], packageSets[0].Packages)
		}); err != nil {
			return err
		}
		keys = append(keys, batch...)
		p, err := measureDisk(f, mode, n)
		if err != nil {
			return err
		}
		res.Points = append(res.Points, p)
		b.log.Info("disk", "mode", mode, "envs", n, "MB", p.Bytes>>20, "create_seconds", time.Since(t).Seconds())
	}
	if mode != "hardlink" {
		return nil
	}
	if err := ownFiles(f, keys[0], res); err != nil {
		return err
	}
	// What a first import adds: bytecode in every environment's own __pycache__ directories.
	before, err := measureDisk(f, mode, made)
	if err != nil {
		return err
	}
	res.BeforeImportBytes = before.Bytes
	res.ImportEnvs = min(10, len(keys))
	res.FirstImport.Name = "first import numpy, pandas in a new environment (API)"
	for _, k := range keys[:res.ImportEnvs] {
		d, err := timed(func() error {
			_, err := f.run(ctx, k, runCodes[1].Code, runCodes[1].Want)
			return err
		})
		if err != nil {
			return err
		}
		res.FirstImport.add(d)
	}
	res.FirstImport.finish()
	after, err := measureDisk(f, mode, made)
	if err != nil {
		return err
	}
	res.AfterImportBytes = after.Bytes
	return nil
}

// ownFiles lists the files of environment k that are not hardlinks into the cache.
func ownFiles(f *fabric, k envKey, res *DiskResults) error {
	seen := map[[2]uint64]bool{}
	if _, err := usage(seen, f.Cache); err != nil {
		return err
	}
	type file struct {
		path  string
		bytes int64
	}
	var own []file
	root := f.envDir(k)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if seen[[2]uint64{uint64(st.Dev), st.Ino}] {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		own = append(own, file{rel, st.Blocks * 512})
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(own, func(i, j int) bool { return own[i].bytes > own[j].bytes })
	res.OwnFileCount = len(own)
	for i, o := range own {
		res.OwnFilesBytes += o.bytes
		if i < 8 {
			res.OwnFiles = append(res.OwnFiles, fmt.Sprintf("%d KiB %s", o.bytes>>10, o.path))
		}
	}
	return nil
}

func measureDisk(f *fabric, mode string, n int) (DiskPoint, error) {
	seen := map[[2]uint64]bool{}
	cache, err := usage(seen, f.Cache)
	if err != nil {
		return DiskPoint{}, err
	}
	own, err := usage(seen, f.Envs)
	if err != nil {
		return DiskPoint{}, err
	}
	return DiskPoint{Mode: mode, Envs: n, Bytes: cache.Bytes + own.Bytes, EnvBytes: own.Bytes, CacheBytes: cache.Bytes,
		EnvDirBytes: own.DirBytes, EnvDirs: own.Dirs}, nil
}

// parallel runs fn(0..n-1) on at most workers goroutines and returns the first error (the rest
// still finish: each one is a request the fabric is already serving).
func parallel(ctx context.Context, workers, n int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil || ctx.Err() != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
