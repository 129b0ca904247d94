package pyindex_test

import (
	"archive/zip"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

func TestBuildWheel(t *testing.T) {
	name, data, err := pyindex.BuildWheel(pyindex.Package{Name: "beta", Version: "1.0.0", Requires: []string{"alpha>=1.0,<2"}})
	if err != nil {
		t.Fatal(err)
	}
	if name != "beta-1.0.0-py3-none-any.whl" {
		t.Errorf("got %q; want beta-1.0.0-py3-none-any.whl", name)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	want := "beta/__init__.py beta/data.txt beta-1.0.0.dist-info/METADATA beta-1.0.0.dist-info/WHEEL beta-1.0.0.dist-info/RECORD"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// uv resolves and installs from the index: beta and gamma together pin alpha 1.0.0, and gamma
// with alpha>=2 cannot be resolved.
func TestUVResolvesFromIndex(t *testing.T) {
	uvBin := testenv.UV(t)
	ix := pyindex.Serve(t, pyindex.Universe())
	cache := t.TempDir()
	uv := func(dir string, args ...string) (string, error) {
		cmd := exec.Command(uvBin, args...)
		cmd.Dir = dir
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "UV_CACHE_DIR=" + cache,
			"UV_NO_CONFIG=1", "UV_PYTHON_DOWNLOADS=never", "UV_PYTHON_PREFERENCE=only-system",
			"UV_DEFAULT_INDEX=" + ix.URL, "NO_COLOR=1",
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	newProject := func() string {
		dir := t.TempDir()
		py := "[project]\nname = \"p\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = []\n"
		if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(py), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	dir := newProject()
	if out, err := uv(dir, "add", "--project", dir, "--python", "3.11", "--", "beta", "gamma"); err != nil {
		t.Fatalf("uv add: %v\n%s", err, out)
	}
	lock, err := os.ReadFile(filepath.Join(dir, "uv.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(lock), "name = \"alpha\"\nversion = \"1.0.0\"") {
		t.Errorf("uv.lock does not pin alpha 1.0.0:\n%s", lock)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, ".venv", "lib", "python*", "site-packages", "alpha", "__init__.py"))
	if len(matches) != 1 {
		t.Fatalf("alpha not installed: %v", matches)
	}

	dir = newProject()
	out, err := uv(dir, "add", "--project", dir, "--python", "3.11", "--", "gamma", "alpha>=2")
	if err == nil || !strings.Contains(out, "No solution found") {
		t.Errorf("gamma + alpha>=2: err %v, output %q; want a resolution failure", err, out)
	}
}
