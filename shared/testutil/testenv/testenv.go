// Package testenv finds the tools tests need (uv, the repository root) and decides whether a test
// without them is skipped (local runs) or failed (CI=true). Import it only from _test.go files.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RepoRoot is the directory holding go.mod, found by walking up from the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// UV returns the uv binary to test with: $UV_BIN, else <repo>/.tools/uv/bin/uv, else uv on PATH.
// Without one the test fails when CI=true and is skipped otherwise.
func UV(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("UV_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("UV_BIN=%s: %v", p, err)
		}
		return p
	}
	if p := filepath.Join(RepoRoot(t), ".tools", "uv", "bin", "uv"); isExecutable(p) {
		return p
	}
	if p, err := exec.LookPath("uv"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("uv not found: set UV_BIN or run make tools")
	}
	t.Skip("uv not found: set UV_BIN or run make tools")
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// MainWithTempDir is a TestMain body: it runs m with *dir set to a fresh temporary directory
// (pattern as for os.MkdirTemp) and removes the directory afterwards. Packages use it for one uv
// cache shared by all their tests, so that later installs hardlink instead of downloading.
func MainWithTempDir(m *testing.M, pattern string, dir *string) {
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		panic(err)
	}
	*dir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}
