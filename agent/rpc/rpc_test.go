package rpc_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/rpc"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/agent/warm"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// One uv cache and one index for the whole package: the cache is a sibling of every test's envs
// directory's parent on the same filesystem, so hardlinks work, and later installs link instead
// of downloading; one index keeps every test's locks naming the same registry.
var (
	cacheDir string
	index    *pyindex.Index
)

// zeta has only a source distribution (for the wheels-only test).
var zeta = pyindex.Package{Name: "zeta", Version: "1.0.0", Sdist: true}

func TestMain(m *testing.M) {
	ix, err := pyindex.Start(append(pyindex.Universe(), zeta))
	if err != nil {
		panic(err)
	}
	index = ix
	testenv.MainWithTempDir(m, "rpc-test-cache-*", &cacheDir)
}

type fixture struct {
	server *rpc.Server
	client agentv1connect.AgentServiceClient
	index  *pyindex.Index
	envs   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, fixtureOptions{})
}

// fixtureOptions vary the agent under test.
type fixtureOptions struct {
	noBuild bool // UV_WHEELS_ONLY
	// warm gives the agent a warm pool (WARM_START=create) and runs a PID namespace, which warm
	// runs need.
	warm bool
}

func newFixtureWith(t *testing.T, opt fixtureOptions) *fixture {
	t.Helper()
	envs := filepath.Join(t.TempDir(), "envs")
	if err := os.Mkdir(envs, 0o755); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ex := uv.New(uv.Config{
		Bin:          testenv.UV(t),
		CacheDir:     cacheDir,
		LinkMode:     "hardlink",
		DefaultIndex: index.URL,
		Path:         os.Getenv("PATH"),
		Home:         t.TempDir(),
		WaitDelay:    5 * time.Second,
		NoBuild:      opt.noBuild,
	}, logger)
	cfg := rpc.Config{
		AgentID:           "agent-test",
		Version:           "test",
		EnvsBasePath:      envs,
		UVCacheDir:        cacheDir,
		LinkMode:          "hardlink",
		DefaultPython:     "3.11",
		RunMaxOutputBytes: 1 << 20,
	}
	if opt.warm {
		cfg.Sandbox = sandbox.Config{Tier: sandbox.Process, PIDNamespace: true}
		pool := warm.New(warm.Config{Sandbox: cfg.Sandbox, MemoryBytes: 1 << 30, ParentsPerBuild: 1, Start: warm.StartCreate,
			WaitFree: time.Minute, Logger: logger})
		t.Cleanup(pool.Close)
		cfg.Warm = pool
	}
	srv := rpc.New(cfg, ex, logger)
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(srv))
	hs := httptest.NewUnstartedServer(mux)
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return &fixture{
		server: srv,
		client: agentv1connect.NewAgentServiceClient(hs.Client(), hs.URL),
		index:  index,
		envs:   envs,
	}
}

func ref(node string) *agentv1.EnvRef {
	return &agentv1.EnvRef{WorkflowId: "wf1", NodeId: node, VersionId: "v1"}
}

func keyOf(node string) envid.Key { return envid.Key{WorkflowID: "wf1", NodeID: node, VersionID: "v1"} }

// env is one environment made through the agent: what the control plane would have recorded.
type env struct {
	node    string
	files   *agentv1.ProjectFiles
	python  string
	build   *agentv1.BuildInfo
	path    string
	rev, op int64
}

func (f *fixture) lock(ctx context.Context, req *agentv1.LockRequest) (*agentv1.LockResponse, error) {
	resp, err := f.client.Lock(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func (f *fixture) mustBuild(t *testing.T, files *agentv1.ProjectFiles, python string) *agentv1.BuildResponse {
	t.Helper()
	resp, err := f.client.Build(t.Context(), connect.NewRequest(&agentv1.BuildRequest{Files: files, PythonPath: python}))
	if err != nil {
		t.Fatalf("build: %v\n%s", err, detailOf(err).GetUvOutput())
	}
	return resp.Msg
}

func (f *fixture) switchTo(ctx context.Context, node string, files *agentv1.ProjectFiles, build string, rev, op int64) (*agentv1.SwitchResponse, error) {
	resp, err := f.client.Switch(ctx, connect.NewRequest(&agentv1.SwitchRequest{
		Env: ref(node), Files: files, BuildId: build, Revision: rev, OperationId: op,
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// create is the control plane's create: Lock, Build, (commit), Switch to revision 1.
func (f *fixture) create(t *testing.T, node string, pkgs ...string) *env {
	t.Helper()
	l, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref(node), Kind: agentv1.LockKind_LOCK_KIND_CREATE, PythonVersion: "3.11", Packages: pkgs, OperationId: 1})
	if err != nil {
		t.Fatalf("lock create %v: %v\n%s", pkgs, err, detailOf(err).GetUvOutput())
	}
	b := f.mustBuild(t, l.GetFiles(), l.GetPythonPath())
	sw, err := f.switchTo(t.Context(), node, l.GetFiles(), b.GetBuild().GetId(), 1, 1)
	if err != nil {
		t.Fatalf("switch: %v", err)
	}
	return &env{node: node, files: l.GetFiles(), python: l.GetPythonPath(), build: b.GetBuild(), path: sw.GetEnvPath(), rev: 1, op: 1}
}

// change is the control plane's add/remove/update: Lock from the current revision, Build,
// (commit), Switch to the next revision.
func (f *fixture) change(t *testing.T, e *env, kind agentv1.LockKind, pkgs []string, upgrade ...string) *env {
	t.Helper()
	l, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref(e.node), Kind: kind, Base: e.files, PythonPath: e.python,
		Packages: pkgs, UpgradePackages: upgrade, OperationId: e.op + 1})
	if err != nil {
		t.Fatalf("lock %s %v: %v\n%s", kind, pkgs, err, detailOf(err).GetUvOutput())
	}
	b := f.mustBuild(t, l.GetFiles(), e.python)
	sw, err := f.switchTo(t.Context(), e.node, l.GetFiles(), b.GetBuild().GetId(), e.rev+1, e.op+1)
	if err != nil {
		t.Fatalf("switch: %v", err)
	}
	return &env{node: e.node, files: l.GetFiles(), python: e.python, build: b.GetBuild(), path: sw.GetEnvPath(), rev: e.rev + 1, op: e.op + 1}
}

func (f *fixture) run(t *testing.T, node, build, code string) *agentv1.RunResponse {
	t.Helper()
	resp, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref(node), BuildId: build, Code: code, TimeoutMs: 60000}))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return resp.Msg
}

func detailOf(err error) *agentv1.ErrorDetail {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if ed, ok := v.(*agentv1.ErrorDetail); ok {
				return ed
			}
		}
	}
	return nil
}

func wantError(t *testing.T, err error, code connect.Code, ec errcode.Code) *agentv1.ErrorDetail {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error; want %s %s", code, ec)
	}
	d := detailOf(err)
	if connect.CodeOf(err) != code || d.GetErrorCode() != agentv1.ErrorCode(agentv1.ErrorCode_value["ERROR_CODE_"+string(ec)]) {
		t.Fatalf("got %v (detail %v); want %s %s", err, d.GetErrorCode(), code, ec)
	}
	return d
}

// locked reports whether uv.lock pins name at version.
func locked(lock, name, version string) bool {
	return strings.Contains(lock, "name = \""+name+"\"\nversion = \""+version+"\"")
}

// python runs code with the environment's own .venv/bin/python, as an executor outside the
// fabric would, and returns its stdout.
func python(t *testing.T, envPath, code string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(envPath, ".venv", "bin", "python"), "-c", code).Output()
	if err != nil {
		var xe *exec.ExitError
		if errors.As(err, &xe) {
			t.Fatalf("%s/.venv/bin/python -c %q: %v\n%s", envPath, code, err, xe.Stderr)
		}
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestCreate(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "n1", "beta", "gamma")
	for _, p := range []struct{ name, version string }{{"alpha", "1.0.0"}, {"beta", "1.0.0"}, {"gamma", "1.0.0"}} {
		if !locked(e.files.GetUvLock(), p.name, p.version) {
			t.Errorf("uv.lock does not pin %s %s", p.name, p.version)
		}
	}
	if !e.build.GetCreated() || e.build.GetPackagesInstalled() != 3 || len(e.build.GetId()) != 32 || e.build.GetCompletedUnixMs() == 0 {
		t.Errorf("build: got %+v; want a created build of 3 packages", e.build)
	}
	if !strings.HasPrefix(e.build.GetPythonFullVersion(), "3.11.") || e.build.GetPythonPath() != e.python || !filepath.IsAbs(e.python) {
		t.Errorf("python: got %q %q; want an absolute path and 3.11.x", e.build.GetPythonPath(), e.build.GetPythonFullVersion())
	}
	if want := filepath.Join(f.envs, "wf1", "n1", "v1"); e.path != want {
		t.Errorf("env_path: got %q; want %q", e.path, want)
	}
	if want := filepath.Join(f.envs, ".builds", e.build.GetId(), ".venv"); e.build.GetVenvPath() != want {
		t.Errorf("venv_path: got %q; want %q", e.build.GetVenvPath(), want)
	}
	for _, want := range []string{`name = "` + envid.ProjectName + `"`, `requires-python = "==3.11.*"`, `"beta>=1.0.0"`, `"gamma>=1.0.0"`} {
		if !strings.Contains(e.files.GetPyprojectToml(), want) {
			t.Errorf("pyproject.toml lacks %s:\n%s", want, e.files.GetPyprojectToml())
		}
	}
	assertFiles(t, e.path, e.files)
	// An executor outside the fabric starts the environment's own interpreter.
	if got := python(t, e.path, "import alpha, beta, gamma, sys; print(alpha.__version__, sys.prefix)"); got != "1.0.0 "+filepath.Join(e.path, ".venv") {
		t.Errorf("env python: got %q; want alpha 1.0.0 with sys.prefix the environment's .venv", got)
	}

	// Installed files are the cache's files: same inode, more than one link.
	m, _ := filepath.Glob(filepath.Join(e.build.GetVenvPath(), "lib", "python*", "site-packages", "alpha", "data.txt"))
	if len(m) != 1 {
		t.Fatalf("alpha/data.txt not installed")
	}
	fi, err := os.Stat(m[0])
	if err != nil {
		t.Fatal(err)
	}
	if n := fi.Sys().(*syscall.Stat_t).Nlink; n < 2 {
		t.Errorf("link count of %s: got %d; want > 1", m[0], n)
	}
	found := false
	_ = filepath.WalkDir(cacheDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !found && d.Type().IsRegular() && d.Name() == "data.txt" {
			if cfi, err := d.Info(); err == nil && os.SameFile(fi, cfi) {
				found = true
			}
		}
		return nil
	})
	if !found {
		t.Errorf("no file in the uv cache shares %s's inode", m[0])
	}
	// Lock left no staging copy behind.
	if left, _ := os.ReadDir(filepath.Join(f.envs, ".staging")); len(left) != 0 {
		t.Errorf("staging copies left behind: %v", left)
	}
}

func TestCreateWithoutPackages(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "empty")
	if e.build.GetPackagesInstalled() != 0 || e.files.GetUvLock() == "" {
		t.Errorf("got %d packages, lock %q; want 0 and a lock", e.build.GetPackagesInstalled(), e.files.GetUvLock())
	}
	if got := python(t, e.path, "print(1)"); got != "1" {
		t.Errorf("env python: got %q", got)
	}
}

func TestLockFailures(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		version string
		pkgs    []string
		code    connect.Code
		ec      errcode.Code
	}{
		{"python unavailable", "3.99", nil, connect.CodeFailedPrecondition, errcode.PythonUnavailable},
		{"unresolvable", "3.11", []string{"gamma", "alpha>=2"}, connect.CodeFailedPrecondition, errcode.PackageResolutionFailed},
		{"unknown package", "3.11", []string{"nosuchpackage"}, connect.CodeFailedPrecondition, errcode.PackageResolutionFailed},
		{"invalid requirement", "3.11", []string{"alpha=="}, connect.CodeInvalidArgument, errcode.InvalidPackages},
		{"option", "3.11", []string{"--index-url=http://evil"}, connect.CodeInvalidArgument, errcode.InvalidPackages},
		{"path", "3.11", []string{"./local"}, connect.CodeInvalidArgument, errcode.InvalidPackages},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("fail"), Kind: agentv1.LockKind_LOCK_KIND_CREATE, PythonVersion: tt.version, Packages: tt.pkgs})
			wantError(t, err, tt.code, tt.ec)
			if _, err := os.Stat(filepath.Join(f.envs, "wf1")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed lock left a directory behind (stat: %v)", err)
			}
			if left, _ := os.ReadDir(filepath.Join(f.envs, ".staging")); len(left) != 0 {
				t.Errorf("staging copies left behind: %v", left)
			}
		})
	}
}

func TestChanges(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "m", "alpha==1.0.0")
	const (
		add    = agentv1.LockKind_LOCK_KIND_ADD
		remove = agentv1.LockKind_LOCK_KIND_REMOVE
		update = agentv1.LockKind_LOCK_KIND_UPDATE
	)
	version := func(e *env, pkg string) string {
		return python(t, e.path, "import importlib.metadata as m; print(m.version('"+pkg+"'))")
	}

	// Upgrade within a looser specifier: the newest 1.x, not 2.0.0.
	e = f.change(t, e, update, []string{"alpha>=1.0,<2"}, "alpha")
	if !locked(e.files.GetUvLock(), "alpha", "1.1.0") || version(e, "alpha") != "1.1.0" {
		t.Errorf("after update alpha is not 1.1.0:\n%s", e.files.GetUvLock())
	}
	// Downgrade with a new specifier: the build of the first revision's lock comes back.
	first := e.build.GetId()
	e = f.change(t, e, update, []string{"alpha==1.0.0"}, "alpha")
	if !locked(e.files.GetUvLock(), "alpha", "1.0.0") || version(e, "alpha") != "1.0.0" {
		t.Errorf("after downgrade alpha is not 1.0.0")
	}
	if e.build.GetId() == first {
		t.Errorf("downgrade kept the build of alpha 1.1.0")
	}
	e = f.change(t, e, add, []string{"Delta==0.1.0"})
	if !locked(e.files.GetUvLock(), "delta", "0.1.0") || e.build.GetPackagesInstalled() != 2 || version(e, "delta") != "0.1.0" {
		t.Errorf("after add: %d packages, lock\n%s", e.build.GetPackagesInstalled(), e.files.GetUvLock())
	}

	_, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("m"), Kind: remove, Base: e.files, PythonPath: e.python, Packages: []string{"gamma"}})
	wantError(t, err, connect.CodeNotFound, errcode.DependencyNotFound)
	_, err = f.lock(t.Context(), &agentv1.LockRequest{Env: ref("m"), Kind: add, Base: e.files, PythonPath: e.python})
	wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidRequest)
	_, err = f.lock(t.Context(), &agentv1.LockRequest{Env: ref("m"), Kind: add, Base: e.files, PythonPath: "/no/such/python", Packages: []string{"beta"}})
	wantError(t, err, connect.CodeFailedPrecondition, errcode.PythonUnavailable)

	e = f.change(t, e, remove, []string{"DELTA"})
	if strings.Contains(e.files.GetPyprojectToml(), "delta") || e.build.GetPackagesInstalled() != 1 {
		t.Errorf("delta still there after remove")
	}
	if got := python(t, e.path, "import importlib.util as u; print(u.find_spec('delta'))"); got != "None" {
		t.Errorf("delta importable after remove: %s", got)
	}
}

// snapshot records every entry under dir: kind, mode, size, mtime, content or link target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String() + " " + fi.ModTime().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			v += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s: %s changed", what, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// TestLockChangesNothing: a Lock (what a dry run is) leaves the environment's files, its .venv
// and every build byte-identical, whether it succeeds or fails.
func TestLockChangesNothing(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "dry", "alpha==1.0.0")
	envBefore := snapshot(t, e.path)
	buildsBefore := snapshot(t, filepath.Join(f.envs, ".builds"))
	l, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("dry"), Kind: agentv1.LockKind_LOCK_KIND_ADD, Base: e.files, PythonPath: e.python, Packages: []string{"delta"}})
	if err != nil {
		t.Fatal(err)
	}
	if !locked(l.GetFiles().GetUvLock(), "delta", "0.2.0") || l.GetPythonPath() != e.python || !strings.HasPrefix(l.GetPythonFullVersion(), "3.11.") {
		t.Errorf("lock answer: %+v", l)
	}
	_, err = f.lock(t.Context(), &agentv1.LockRequest{Env: ref("dry"), Kind: agentv1.LockKind_LOCK_KIND_ADD, Base: e.files, PythonPath: e.python, Packages: []string{"beta>=2"}})
	d := wantError(t, err, connect.CodeFailedPrecondition, errcode.PackageResolutionFailed)
	if !strings.Contains(d.GetUvOutput(), "No solution found") {
		t.Errorf("detail: got %+v; want uv's output", d)
	}
	sameSnapshot(t, "environment", envBefore, snapshot(t, e.path))
	sameSnapshot(t, "builds", buildsBefore, snapshot(t, filepath.Join(f.envs, ".builds")))
}

// TestLockCancelled: a Lock cancelled while uv waits on the index leaves no staging copy and
// nothing of the environment changed.
func TestLockCancelled(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "cancel", "alpha")
	before := snapshot(t, e.path)
	reached := f.index.Stall("delta")
	defer f.index.Release("delta")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		select {
		case <-reached:
		case <-time.After(30 * time.Second):
		}
		cancel()
	}()
	// Called directly, so the call returns only once uv is gone.
	_, err := f.server.Lock(ctx, connect.NewRequest(&agentv1.LockRequest{
		Env: ref("cancel"), Kind: agentv1.LockKind_LOCK_KIND_ADD, Base: e.files, PythonPath: e.python, Packages: []string{"delta"},
	}))
	if connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("got %v; want canceled", err)
	}
	sameSnapshot(t, "environment", before, snapshot(t, e.path))
	if left, _ := os.ReadDir(filepath.Join(f.envs, ".staging")); len(left) != 0 {
		t.Errorf("staging copies left behind: %v", left)
	}
}

func assertFiles(t *testing.T, dir string, want *agentv1.ProjectFiles) {
	t.Helper()
	for name, body := range map[string]string{"pyproject.toml": want.GetPyprojectToml(), "uv.lock": want.GetUvLock()} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != body {
			t.Errorf("%s differs:\n%s\nwant\n%s", name, got, body)
		}
	}
}

func TestInspect(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "s", "epsilon")
	inspect := func() *agentv1.InspectResponse {
		t.Helper()
		resp, err := f.client.Inspect(t.Context(), connect.NewRequest(&agentv1.InspectRequest{
			Env: ref("s"), Expected: e.files, PythonPath: e.python, MeasureDisk: true, Verify: true,
		}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	buildBefore := snapshot(t, filepath.Join(f.envs, ".builds", e.build.GetId()))
	in := inspect()
	// Inspecting (uv sync --dry-run in the build, the verification) modifies no build.
	sameSnapshot(t, "build", buildBefore, snapshot(t, filepath.Join(f.envs, ".builds", e.build.GetId())))
	if !in.GetExists() || !in.GetHasPyproject() || !in.GetHasLock() || !in.GetHasVenv() || !in.GetFilesMatch() ||
		!in.GetVenvInSync() || !in.GetInterpreterPresent() || in.GetPackagesInstalled() != 4 || in.GetBuildId() != e.build.GetId() {
		t.Errorf("inspect after create: %+v", in)
	}
	if c := in.GetBuildCheck(); c.GetBuildId() != e.build.GetId() || !c.GetComplete() || !c.GetIntact() || c.GetFilesChecked() == 0 {
		t.Errorf("build check: %+v", c)
	}
	if in.GetExclusiveBytes() > 64<<10 {
		t.Errorf("exclusive bytes %d: the shared build was counted", in.GetExclusiveBytes())
	}

	if err := os.WriteFile(filepath.Join(e.path, "uv.lock"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if in = inspect(); in.GetFilesMatch() || in.GetVenvInSync() {
		t.Errorf("inspect after damage: %+v", in)
	}

	missing, err := f.client.Inspect(t.Context(), connect.NewRequest(&agentv1.InspectRequest{Env: ref("nothere")}))
	if err != nil || missing.Msg.GetExists() {
		t.Errorf("inspect missing: got %+v, %v; want exists=false", missing.Msg, err)
	}
}

func TestRun(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "run", "alpha==1.1.0")
	resp := f.run(t, "run", e.build.GetId(), "import alpha, sys\nprint(alpha.__version__)\nsys.exit(2)")
	if string(resp.GetStdout()) != "1.1.0\n" || resp.GetExitCode() != 2 {
		t.Errorf("got %+v; want stdout 1.1.0 and exit 2", resp)
	}
	// No build id: the build the environment's .venv links to.
	if resp := f.run(t, "run", "", "import alpha\nprint(alpha.__version__)"); string(resp.GetStdout()) != "1.1.0\n" {
		t.Errorf("run without a build id: %+v", resp)
	}
	r, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{
		Env: ref("run"), BuildId: e.build.GetId(), Code: "import time\ntime.sleep(60)", TimeoutMs: 300,
	}))
	if err != nil || !r.Msg.GetTimedOut() {
		t.Errorf("got %+v, %v; want timed_out", r.Msg, err)
	}
	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("nothere"), Code: "print(1)"}))
	wantError(t, err, connect.CodeNotFound, errcode.EnvNotFound)
	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("run"), BuildId: "../../etc", Code: "print(1)"}))
	wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidRequest)
	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("run"), BuildId: strings.Repeat("0", 32), Code: "print(1)"}))
	wantError(t, err, connect.CodeFailedPrecondition, errcode.BuildMissing)
}

func TestDelete(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "d", "delta")
	resp, err := f.client.DeleteProject(t.Context(), connect.NewRequest(&agentv1.DeleteProjectRequest{Env: ref("d")}))
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Msg.GetExisted() || resp.Msg.GetBytesFreed() <= 0 || resp.Msg.GetBytesFreed() > 64<<10 {
		t.Errorf("got %+v; want existed and the project's own bytes freed, not the build's", resp.Msg)
	}
	// The build stays (others may share it); only the directories of builds, locks and staging
	// copies remain.
	entries, err := os.ReadDir(f.envs)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if err != nil || strings.Join(names, ",") != ".builds,.locks,.staging" {
		t.Errorf("envs dir after delete: %v, %v; want .builds, .locks and .staging", names, err)
	}
	if locks, err := os.ReadDir(filepath.Join(f.envs, ".locks")); err != nil || len(locks) != 0 {
		t.Errorf("lock files after delete: %v, %v; want none", locks, err)
	}
	if _, err := os.Stat(filepath.Join(e.build.GetVenvPath(), "bin", "python")); err != nil {
		t.Errorf("delete removed the build: %v", err)
	}
	resp, err = f.client.DeleteProject(t.Context(), connect.NewRequest(&agentv1.DeleteProjectRequest{Env: ref("d")}))
	if err != nil || resp.Msg.GetExisted() {
		t.Errorf("second delete: got %+v, %v; want existed=false", resp.Msg, err)
	}
}

func TestInfo(t *testing.T) {
	f := newFixture(t)
	resp, err := f.client.Info(t.Context(), connect.NewRequest(&agentv1.InfoRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	m := resp.Msg
	if m.GetAgentId() != "agent-test" || m.GetEnvsBasePath() != f.envs || m.GetLinkMode() != "hardlink" ||
		!strings.HasPrefix(m.GetUvVersion(), "0.") || len(m.GetInterpreters()) == 0 {
		t.Errorf("got %+v", m)
	}
}

func TestInvalidIDs(t *testing.T) {
	f := newFixture(t)
	refs := []*agentv1.EnvRef{
		nil,
		{WorkflowId: "..", NodeId: "n"},
		{WorkflowId: "wf", NodeId: "../../etc"},
		{WorkflowId: "wf", NodeId: "n", VersionId: "a/b"},
		{WorkflowId: "", NodeId: "n"},
		{WorkflowId: ".hidden", NodeId: "n"},
	}
	for _, r := range refs {
		t.Run(r.String(), func(t *testing.T) {
			_, err := f.client.Lock(t.Context(), connect.NewRequest(&agentv1.LockRequest{Env: r, Kind: agentv1.LockKind_LOCK_KIND_CREATE}))
			wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidID)
			_, err = f.client.Switch(t.Context(), connect.NewRequest(&agentv1.SwitchRequest{Env: r}))
			wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidID)
			_, err = f.client.DeleteProject(t.Context(), connect.NewRequest(&agentv1.DeleteProjectRequest{Env: r}))
			wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidID)
			_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: r, Code: "print(1)"}))
			wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidID)
		})
	}
}
