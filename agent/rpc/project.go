package rpc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/agent/builds"
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

// writeAtomic replaces path with data by a rename (agent/builds.WriteAtomic).
func writeAtomic(path string, data []byte) error { return builds.WriteAtomic(path, data) }

// packagesInstalled counts the distributions installed in the project's venv.
func packagesInstalled(dir string) int32 {
	sp := builds.SitePackages(filepath.Join(dir, venvDir))
	if sp == "" {
		return 0
	}
	m, _ := filepath.Glob(filepath.Join(sp, "*.dist-info"))
	return int32(len(m))
}

// lastUsed is the latest access time of the environment's own pyvenv.cfg, and, in the layout
// before builds, of its bin/python (with builds that file is the build's, shared by every
// environment on it); 0 if none exists.
func lastUsed(dir string, linked bool) time.Time {
	paths := []string{filepath.Join(dir, venvDir, "pyvenv.cfg")}
	if !linked {
		paths = append(paths, filepath.Join(dir, venvDir, "bin", "python"))
	}
	var latest time.Time
	for _, p := range paths {
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
