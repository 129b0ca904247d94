package rpc_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/agent/uv"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// TestOldLayoutMovesToBuilds: an environment of the layout before builds (its own full .venv, a
// project name of its own) runs as before, and its next change moves it to the reserved name and
// a build, its old .venv removed.
func TestOldLayoutMovesToBuilds(t *testing.T) {
	f := newFixture(t)
	dir := keyOf("old").Dir(f.envs)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	oldName := "envfabric-env-0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte("[project]\nname = \""+oldName+"\"\nversion = \"0.1.0\"\nrequires-python = \"==3.11.*\"\ndependencies = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ex := uv.New(uv.Config{Bin: testenv.UV(t), CacheDir: cacheDir, LinkMode: "hardlink", DefaultIndex: index.URL, Path: os.Getenv("PATH"), Home: t.TempDir()}, slog.New(slog.DiscardHandler))
	py, _, err := ex.FindPython(t.Context(), "3.11")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ex.Add(t.Context(), uv.Project{Dir: dir, Python: py}, []string{"alpha==1.0.0"}, nil); err != nil {
		t.Fatalf("old-layout environment: %v\n%s", err, out)
	}
	if got := string(f.run(t, "old", "", "import alpha\nprint(alpha.__version__)").GetStdout()); got != "1.0.0\n" {
		t.Fatalf("old layout run: %q", got)
	}
	files := readProject(t, dir)
	e := &env{node: "old", files: files, python: py, path: dir, rev: 1, op: 1}
	next := f.change(t, e, agentv1.LockKind_LOCK_KIND_ADD, []string{"delta"})
	if !strings.Contains(next.files.GetPyprojectToml(), `name = "`+envid.ProjectName+`"`) || strings.Contains(next.files.GetUvLock(), oldName) {
		t.Errorf("the change kept the old project name:\n%s", next.files.GetPyprojectToml())
	}
	if fi, err := os.Lstat(filepath.Join(dir, ".venv", "lib")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf(".venv/lib after the switch: %v, %v; want a link into the build", fi, err)
	}
	if got := python(t, dir, "import alpha, delta; print(alpha.__version__)"); got != "1.0.0" {
		t.Errorf("after moving to builds: %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".venv.tmp-*")); len(left) != 0 {
		t.Errorf("the old .venv was left at %v", left)
	}
}

func readProject(t *testing.T, dir string) *agentv1.ProjectFiles {
	t.Helper()
	py, err := os.ReadFile(filepath.Join(dir, "pyproject.toml"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.ReadFile(filepath.Join(dir, "uv.lock"))
	if err != nil {
		t.Fatal(err)
	}
	return &agentv1.ProjectFiles{PyprojectToml: string(py), UvLock: string(lock)}
}
