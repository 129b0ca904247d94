package uv_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

var cacheDir string

func TestMain(m *testing.M) { testenv.MainWithTempDir(m, "uv-test-cache-*", &cacheDir) }

func newExecutor(t *testing.T, index string) *uv.Executor {
	t.Helper()
	return uv.New(uv.Config{
		Bin:          testenv.UV(t),
		CacheDir:     cacheDir,
		LinkMode:     "hardlink",
		DefaultIndex: index,
		Path:         os.Getenv("PATH"),
		Home:         t.TempDir(),
		WaitDelay:    5 * time.Second,
	}, slog.New(slog.DiscardHandler))
}

func newProject(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "p")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	py := "[project]\nname = \"p\"\nversion = \"0.1.0\"\nrequires-python = \"==3.11.*\"\ndependencies = []\n"
	if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(py), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		exit   int
		output string
		want   errcode.Code
	}{
		{"no solution", 1, "  × No solution found when resolving dependencies:", errcode.PackageResolutionFailed},
		{"no solution needs exit 1", 2, "No solution found", errcode.UVExecutionError},
		{"parse error", 2, "error: Failed to parse: `foo==`\n  cause: Unexpected end", errcode.InvalidPackages},
		{"pyproject parse error", 2, "error: Failed to parse: p/pyproject.toml", errcode.UVExecutionError},
		{"no interpreter", 2, "error: No interpreter found for Python 3.99 in virtual environments", errcode.PythonUnavailable},
		{"no build, resolving", 1, "  × No solution found when resolving dependencies:\n  hint: Wheels are required for `zeta` because building from source is disabled for all packages (i.e., with `--no-build`)", errcode.SourceBuildDisabled},
		{"no build, frozen sync", 2, "error: Distribution `zeta==1.0.0 @ registry+http://i/simple/` can't be installed because it is marked as `--no-build` but has no binary distribution", errcode.SourceBuildDisabled},
		{"other", 2, "error: The dependency `six` could not be found in `project.dependencies`", errcode.UVExecutionError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := uv.Classify(tt.exit, tt.output); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestEnvIsMinimal(t *testing.T) {
	t.Setenv("ENVFABRIC_SECRET", "x")
	e := uv.New(uv.Config{
		Bin: "/bin/false", CacheDir: "/c", LinkMode: "hardlink", DefaultIndex: "http://i/simple/",
		Path: "/usr/bin", Home: "/h",
		Passthrough: map[string]string{"UV_PYTHON_PREFERENCE": "system", "HTTPS_PROXY": "http://proxy"},
	}, slog.New(slog.DiscardHandler))
	env := e.Env()
	want := []string{
		"HOME=/h", "HTTPS_PROXY=http://proxy", "NO_COLOR=1", "PATH=/usr/bin", "UV_CACHE_DIR=/c",
		"UV_DEFAULT_INDEX=http://i/simple/", "UV_LINK_MODE=hardlink", "UV_NO_CONFIG=1", "UV_NO_PROGRESS=1",
		"UV_PYTHON_DOWNLOADS=never", "UV_PYTHON_PREFERENCE=system",
	}
	if !slices.Equal(env, want) {
		t.Errorf("got %q; want %q", env, want)
	}
	wheels := uv.New(uv.Config{Bin: "/bin/false", CacheDir: "/c", LinkMode: "hardlink", Path: "/usr/bin", Home: "/h", NoBuild: true},
		slog.New(slog.DiscardHandler)).Env()
	if !slices.Contains(wheels, "UV_NO_BUILD=1") || slices.Contains(env, "UV_NO_BUILD=1") {
		t.Errorf("UV_NO_BUILD=1 must be set exactly in wheels-only mode: %q / %q", wheels, env)
	}
}

func TestVersionAndPythons(t *testing.T) {
	e := newExecutor(t, "")
	v, err := e.Version(t.Context())
	if err != nil || !strings.HasPrefix(v, "0.") {
		t.Errorf("Version: got %q, %v; want 0.x", v, err)
	}
	path, full, err := e.FindPython(t.Context(), "3.11")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(path) || !strings.HasPrefix(full, "3.11.") {
		t.Errorf("FindPython: got %q %q; want an absolute path and 3.11.x", path, full)
	}
	if _, _, err := e.FindPython(t.Context(), "3.99"); errcode.Of(err) != errcode.PythonUnavailable {
		t.Errorf("FindPython 3.99: got %v; want %s", err, errcode.PythonUnavailable)
	}
	if _, _, err := e.FindPython(t.Context(), "--help"); errcode.Of(err) != errcode.InvalidRequest {
		t.Errorf("FindPython --help: got %v; want %s", err, errcode.InvalidRequest)
	}
	ps, err := e.ListPythons(t.Context())
	if err != nil || len(ps) == 0 {
		t.Errorf("ListPythons: got %v, %v; want some", ps, err)
	}
}

func TestAddRemoveSync(t *testing.T) {
	ix := pyindex.Serve(t, pyindex.Universe())
	e := newExecutor(t, ix.URL)
	dir := newProject(t)
	p := uv.Project{Dir: dir, Python: "3.11"}
	ctx := t.Context()

	if _, err := e.Add(ctx, p, []string{"beta", "gamma"}, nil); err != nil {
		t.Fatalf("add: %v\n%s", err, uv.OutputOf(err))
	}
	if ok, err := e.InSync(ctx, p); !ok || err != nil {
		t.Errorf("InSync after add: got %v, %v; want true", ok, err)
	}
	_, err := e.Add(ctx, p, []string{"alpha>=2"}, nil)
	if errcode.Of(err) != errcode.PackageResolutionFailed || !strings.Contains(uv.OutputOf(err), "No solution found") {
		t.Errorf("add alpha>=2: got %v; want %s with uv output", err, errcode.PackageResolutionFailed)
	}
	if _, err := e.Add(ctx, p, []string{"alpha=="}, nil); errcode.Of(err) != errcode.InvalidPackages {
		t.Errorf("add alpha==: got %v; want %s", err, errcode.InvalidPackages)
	}
	if _, err := e.Remove(ctx, p, []string{"gamma"}); err != nil {
		t.Errorf("remove: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, ".venv")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.InSync(ctx, p); ok {
		t.Error("InSync without .venv: got true; want false")
	}
	if _, err := e.Sync(ctx, p, true); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if ok, err := e.InSync(ctx, p); !ok || err != nil {
		t.Errorf("InSync after sync: got %v, %v; want true", ok, err)
	}
}

// Cancelling uv add while it waits on the index stops it with SIGINT; uv then restores
// pyproject.toml and uv.lock itself.
func TestAddCancelled(t *testing.T) {
	ix := pyindex.Serve(t, pyindex.Universe())
	e := newExecutor(t, ix.URL)
	dir := newProject(t)
	p := uv.Project{Dir: dir, Python: "3.11"}
	if _, err := e.Add(t.Context(), p, []string{"alpha"}, nil); err != nil {
		t.Fatalf("add: %v", err)
	}
	before := readFiles(t, dir)
	reached := ix.Stall("delta")
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		select {
		case <-reached:
		case <-time.After(30 * time.Second):
		}
		cancel()
	}()
	start := time.Now()
	_, err := e.Add(ctx, p, []string{"delta"}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v; want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancelled add took %v", d)
	}
	if after := readFiles(t, dir); after != before {
		t.Errorf("files changed by a cancelled add:\n%s\nwant\n%s", after, before)
	}
}

func readFiles(t *testing.T, dir string) string {
	t.Helper()
	a, err := os.ReadFile(filepath.Join(dir, "pyproject.toml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "uv.lock"))
	if err != nil {
		t.Fatal(err)
	}
	return string(a) + "\n----\n" + string(b)
}

func TestCheckHardlink(t *testing.T) {
	root := t.TempDir()
	cache, envs := filepath.Join(root, "uv_cache"), filepath.Join(root, "envs")
	for _, d := range []string{cache, envs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := uv.CheckHardlink(cache, envs); err != nil {
		t.Errorf("same filesystem: %v", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("check left %v in the cache", entries)
	}
	if !uv.Siblings(cache, envs) || uv.Siblings(cache, filepath.Join(envs, "x")) {
		t.Error("Siblings: wrong answer")
	}
	if err := uv.CheckHardlink(filepath.Join(root, "missing"), envs); !errors.Is(err, uv.ErrNoHardlink) {
		t.Errorf("missing cache: got %v; want ErrNoHardlink", err)
	}
	if err := uv.CheckHardlink(cache, filepath.Join(root, "missing")); !errors.Is(err, uv.ErrNoHardlink) {
		t.Errorf("missing envs: got %v; want ErrNoHardlink", err)
	}
	t.Run("cross device", func(t *testing.T) {
		shm, err := os.MkdirTemp("/dev/shm", "linkcheck-*")
		if err != nil {
			t.Skip("no /dev/shm")
		}
		defer os.RemoveAll(shm)
		var a, b syscall.Stat_t
		if syscall.Stat(shm, &a) != nil || syscall.Stat(envs, &b) != nil || a.Dev == b.Dev {
			t.Skip("/dev/shm is not another filesystem")
		}
		err = uv.CheckHardlink(shm, envs)
		if !errors.Is(err, uv.ErrNoHardlink) || !strings.Contains(err.Error(), "UV_LINK_MODE=copy") {
			t.Errorf("got %v; want ErrNoHardlink saying what to fix", err)
		}
	})
}

// Configuration lying around — a uv.toml above the project, the user's own — must not change what
// the fabric resolves: every call runs with UV_NO_CONFIG and the fabric's own settings only.
func TestStrayConfigIgnored(t *testing.T) {
	ix := pyindex.Serve(t, pyindex.Universe())
	e := newExecutor(t, ix.URL)
	dir := newProject(t)
	stray := "resolution = \"lowest\"\n" // were it read, alpha would lock at 1.0.0
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "uv.toml"), []byte(stray), 0o644); err != nil {
		t.Fatal(err)
	}
	home := e.Env()[0][len("HOME="):]
	if err := os.MkdirAll(filepath.Join(home, ".config", "uv"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".config", "uv", "uv.toml"), []byte(stray), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Add(t.Context(), uv.Project{Dir: dir, Python: "3.11"}, []string{"alpha"}, nil); err != nil {
		t.Fatalf("add: %v\n%s", err, uv.OutputOf(err))
	}
	lock, err := os.ReadFile(filepath.Join(dir, "uv.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(lock), "name = \"alpha\"\nversion = \"2.0.0\"") {
		t.Errorf("alpha is not locked at its newest version; stray configuration was read:\n%s", lock)
	}
}

// zeta has only a source distribution, whose build runs the package's own backend.
var zeta = pyindex.Package{Name: "zeta", Version: "1.0.0", Sdist: true}

func TestWheelsOnly(t *testing.T) {
	ix := pyindex.Serve(t, append(pyindex.Universe(), zeta))
	for _, noBuild := range []bool{false, true} {
		t.Run(map[bool]string{false: "sdist built", true: "wheels only"}[noBuild], func(t *testing.T) {
			e := uv.New(uv.Config{
				Bin: testenv.UV(t), CacheDir: t.TempDir(), LinkMode: "hardlink", DefaultIndex: ix.URL,
				Path: os.Getenv("PATH"), Home: t.TempDir(), WaitDelay: 5 * time.Second, NoBuild: noBuild,
			}, slog.New(slog.DiscardHandler))
			dir := newProject(t)
			out, err := e.Add(t.Context(), uv.Project{Dir: dir, Python: "3.11"}, []string{"zeta"}, nil)
			t.Logf("uv output:\n%s%s", out, uv.OutputOf(err))
			if !noBuild {
				if err != nil {
					t.Fatalf("add: %v", err)
				}
				return
			}
			if got := errcode.Of(err); got != errcode.SourceBuildDisabled {
				t.Fatalf("got %v (%s); want %s", err, got, errcode.SourceBuildDisabled)
			}
			// Wheels still install.
			if _, err := e.Add(t.Context(), uv.Project{Dir: dir, Python: "3.11"}, []string{"alpha"}, nil); err != nil {
				t.Fatalf("add alpha with wheels only: %v\n%s", err, uv.OutputOf(err))
			}
			// A lock made where building was allowed does not sneak a build in either.
			if err := os.Remove(filepath.Join(dir, "uv.lock")); err != nil {
				t.Fatal(err)
			}
			builder := uv.New(uv.Config{
				Bin: testenv.UV(t), CacheDir: t.TempDir(), LinkMode: "hardlink", DefaultIndex: ix.URL,
				Path: os.Getenv("PATH"), Home: t.TempDir(), WaitDelay: 5 * time.Second,
			}, slog.New(slog.DiscardHandler))
			if _, err := builder.Add(t.Context(), uv.Project{Dir: dir, Python: "3.11"}, []string{"zeta"}, nil); err != nil {
				t.Fatalf("add zeta with builds allowed: %v\n%s", err, uv.OutputOf(err))
			}
			if err := os.RemoveAll(filepath.Join(dir, ".venv")); err != nil {
				t.Fatal(err)
			}
			_, err = e.Sync(t.Context(), uv.Project{Dir: dir, Python: "3.11"}, true)
			t.Logf("frozen sync output:\n%s", uv.OutputOf(err))
			if got := errcode.Of(err); got != errcode.SourceBuildDisabled {
				t.Fatalf("frozen sync: got %v (%s); want %s", err, got, errcode.SourceBuildDisabled)
			}
		})
	}
}

// TestLockOnly: with NoSync, add and remove change pyproject.toml and uv.lock and create no
// .venv; Lock resolves without installing; PythonVersion answers the interpreter's version.
func TestLockOnly(t *testing.T) {
	ix := pyindex.Serve(t, pyindex.Universe())
	e := newExecutor(t, ix.URL)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte("[project]\nname = \"p\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	py, full, err := e.FindPython(t.Context(), "3.11")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.PythonVersion(t.Context(), py); err != nil || got != full {
		t.Errorf("PythonVersion(%s) = %q, %v; want %q", py, got, err, full)
	}
	if _, err := e.PythonVersion(t.Context(), "/no/such/python"); errcode.Of(err) != errcode.PythonUnavailable {
		t.Errorf("PythonVersion of a missing interpreter: %v", err)
	}
	p := uv.Project{Dir: dir, Python: py, NoSync: true}
	if _, err := e.Lock(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Add(t.Context(), p, []string{"beta"}, nil); err != nil {
		t.Fatal(err)
	}
	lock, _ := os.ReadFile(filepath.Join(dir, "uv.lock"))
	if !strings.Contains(string(lock), `name = "beta"`) {
		t.Errorf("uv.lock after add --no-sync:\n%s", lock)
	}
	if _, err := e.Remove(t.Context(), p, []string{"beta"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".venv")); !os.IsNotExist(err) {
		t.Errorf("a .venv was created (stat: %v)", err)
	}
}
