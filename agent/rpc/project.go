package rpc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
)

const (
	pyprojectFile = "pyproject.toml"
	lockFile      = "uv.lock"
	venvDir       = ".venv"
)

// newPyproject is the pyproject.toml of a fresh environment: no build system, so uv treats the
// project as virtual and installs only its dependencies.
func newPyproject(name, pythonFullVersion string) ([]byte, error) {
	parts := strings.SplitN(pythonFullVersion, ".", 3)
	if len(parts) < 2 {
		return nil, fmt.Errorf("unexpected python version %q", pythonFullVersion)
	}
	return fmt.Appendf(nil, "[project]\nname = %q\nversion = \"0.1.0\"\nrequires-python = \"==%s.%s.*\"\ndependencies = []\n",
		name, parts[0], parts[1]), nil
}

// readFiles reads the project's revision from disk.
func readFiles(dir string) (*agentv1.ProjectFiles, error) {
	py, err := os.ReadFile(filepath.Join(dir, pyprojectFile))
	if err != nil {
		return nil, err
	}
	lock, err := os.ReadFile(filepath.Join(dir, lockFile))
	if err != nil {
		return nil, err
	}
	return &agentv1.ProjectFiles{PyprojectToml: string(py), UvLock: string(lock)}, nil
}

// fileEquals reports whether path holds exactly want.
func fileEquals(path, want string) bool {
	got, err := os.ReadFile(path)
	return err == nil && bytes.Equal(got, []byte(want))
}

// writeFiles puts files on disk where they differ and reports whether it wrote anything.
func writeFiles(dir string, files *agentv1.ProjectFiles) (bool, error) {
	wrote := false
	for _, f := range []struct{ name, body string }{
		{pyprojectFile, files.GetPyprojectToml()},
		{lockFile, files.GetUvLock()},
	} {
		p := filepath.Join(dir, f.name)
		if fileEquals(p, f.body) {
			continue
		}
		if err := writeAtomic(p, []byte(f.body)); err != nil {
			return wrote, err
		}
		wrote = true
	}
	return wrote, nil
}

// writeAtomic replaces path with data through a temporary file in the same directory, mode 0644.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(0o644), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// sitePackages is the venv's site-packages directory, or "" when there is none.
func sitePackages(dir string) string {
	m, _ := filepath.Glob(filepath.Join(dir, venvDir, "lib", "python*", "site-packages"))
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// packagesInstalled counts the distributions installed in the project's venv.
func packagesInstalled(dir string) int32 {
	sp := sitePackages(dir)
	if sp == "" {
		return 0
	}
	m, _ := filepath.Glob(filepath.Join(sp, "*.dist-info"))
	return int32(len(m))
}

// lastUsed is the latest access time of the venv's pyvenv.cfg or bin/python, 0 if neither exists.
func lastUsed(dir string) time.Time {
	var latest time.Time
	for _, p := range []string{filepath.Join(dir, venvDir, "pyvenv.cfg"), filepath.Join(dir, venvDir, "bin", "python")} {
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if at := time.Unix(st.Atim.Sec, st.Atim.Nsec); at.After(latest) {
				latest = at
			}
		}
	}
	return latest
}

// markUsed sets pyvenv.cfg's access time to now, so last use is exact even on relatime or noatime
// mounts.
func markUsed(dir string) error {
	p := filepath.Join(dir, venvDir, "pyvenv.cfg")
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	return os.Chtimes(p, time.Now(), fi.ModTime())
}

// uniquelyOwnedBytes sums the sizes of regular files under dir with one link: what deleting dir
// really frees (hardlinked files stay in the cache).
func uniquelyOwnedBytes(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 1 {
			total += fi.Size()
		}
		return nil
	})
	return total
}
