package rpc_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/rpc"
	"github.com/envfabric/envfabric/agent/uv"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// cacheDir is one uv cache for the whole package, a sibling of every test's envs directory's
// parent on the same filesystem, so hardlinks work.
var cacheDir string

func TestMain(m *testing.M) { testenv.MainWithTempDir(m, "rpc-test-cache-*", &cacheDir) }

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
	extra   []pyindex.Package // served besides pyindex.Universe
	noBuild bool              // UV_WHEELS_ONLY
}

func newFixtureWith(t *testing.T, opt fixtureOptions) *fixture {
	t.Helper()
	ix := pyindex.Serve(t, append(pyindex.Universe(), opt.extra...))
	envs := filepath.Join(t.TempDir(), "envs")
	if err := os.Mkdir(envs, 0o755); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ex := uv.New(uv.Config{
		Bin:          testenv.UV(t),
		CacheDir:     cacheDir,
		LinkMode:     "hardlink",
		DefaultIndex: ix.URL,
		Path:         os.Getenv("PATH"),
		Home:         t.TempDir(),
		WaitDelay:    5 * time.Second,
		NoBuild:      opt.noBuild,
	}, logger)
	srv := rpc.New(rpc.Config{
		AgentID:           "agent-test",
		Version:           "test",
		EnvsBasePath:      envs,
		UVCacheDir:        cacheDir,
		LinkMode:          "hardlink",
		DefaultPython:     "3.11",
		RunMaxOutputBytes: 1 << 20,
	}, ex, logger)
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(srv))
	hs := httptest.NewUnstartedServer(mux)
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return &fixture{
		server: srv,
		client: agentv1connect.NewAgentServiceClient(hs.Client(), hs.URL),
		index:  ix,
		envs:   envs,
	}
}

func ref(node string) *agentv1.EnvRef {
	return &agentv1.EnvRef{WorkflowId: "wf1", NodeId: node, VersionId: "v1"}
}

func (f *fixture) create(t *testing.T, node string, pkgs ...string) *agentv1.CreateProjectResponse {
	t.Helper()
	resp, err := f.client.CreateProject(t.Context(), connect.NewRequest(&agentv1.CreateProjectRequest{
		Env: ref(node), PythonVersion: "3.11", Packages: pkgs,
	}))
	if err != nil {
		t.Fatalf("create %v: %v\n%s", pkgs, err, detailOf(err).GetUvOutput())
	}
	return resp.Msg
}

func (f *fixture) mutate(ctx context.Context, node string, kind agentv1.MutationKind, base *agentv1.ProjectFiles, python string, pkgs []string, upgrade ...string) (*agentv1.MutateResponse, error) {
	resp, err := f.client.Mutate(ctx, connect.NewRequest(&agentv1.MutateRequest{
		Env: ref(node), Kind: kind, Base: base, PythonPath: python, Packages: pkgs, UpgradePackages: upgrade,
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
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

// installedVersion reads __version__ from the installed package.
func installedVersion(t *testing.T, envPath, pkg string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(envPath, ".venv", "lib", "python*", "site-packages", pkg, "__init__.py"))
	if len(m) != 1 {
		return ""
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(string(b)), "__version__ = "), `"`)
}

func TestCreateWithPackages(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "n1", "beta", "gamma")
	for _, p := range []struct{ name, version string }{{"alpha", "1.0.0"}, {"beta", "1.0.0"}, {"gamma", "1.0.0"}} {
		if !locked(r.GetFiles().GetUvLock(), p.name, p.version) {
			t.Errorf("uv.lock does not pin %s %s", p.name, p.version)
		}
	}
	if r.GetPackagesInstalled() != 3 {
		t.Errorf("packages_installed: got %d; want 3", r.GetPackagesInstalled())
	}
	if !strings.HasPrefix(r.GetPythonFullVersion(), "3.11.") || !filepath.IsAbs(r.GetPythonPath()) {
		t.Errorf("python: got %q %q; want an absolute path and 3.11.x", r.GetPythonPath(), r.GetPythonFullVersion())
	}
	if want := filepath.Join(f.envs, "wf1", "n1", "v1"); r.GetEnvPath() != want {
		t.Errorf("env_path: got %q; want %q", r.GetEnvPath(), want)
	}
	name := `name = "` + envid.Key{WorkflowID: "wf1", NodeID: "n1", VersionID: "v1"}.ProjectName() + `"`
	for _, want := range []string{name, `requires-python = "==3.11.*"`, `"beta>=1.0.0"`, `"gamma>=1.0.0"`} {
		if !strings.Contains(r.GetFiles().GetPyprojectToml(), want) {
			t.Errorf("pyproject.toml lacks %s:\n%s", want, r.GetFiles().GetPyprojectToml())
		}
	}

	// Installed files are the cache's files: same inode, more than one link.
	m, _ := filepath.Glob(filepath.Join(r.GetEnvPath(), ".venv", "lib", "python*", "site-packages", "alpha", "data.txt"))
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
}

func TestCreateWithoutPackages(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "empty")
	if r.GetPackagesInstalled() != 0 || r.GetFiles().GetUvLock() == "" {
		t.Errorf("got %d packages, lock %q; want 0 and a lock", r.GetPackagesInstalled(), r.GetFiles().GetUvLock())
	}
	if _, err := os.Stat(filepath.Join(r.GetEnvPath(), ".venv", "bin", "python")); err != nil {
		t.Errorf("no .venv: %v", err)
	}
}

func TestCreateFailures(t *testing.T) {
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
			_, err := f.client.CreateProject(t.Context(), connect.NewRequest(&agentv1.CreateProjectRequest{
				Env: ref("fail"), PythonVersion: tt.version, Packages: tt.pkgs,
			}))
			wantError(t, err, tt.code, tt.ec)
			if _, err := os.Stat(filepath.Join(f.envs, "wf1")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed create left a directory behind (stat: %v)", err)
			}
		})
	}
}

func TestCreateReplacesLeftover(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(f.envs, "wf1", "left", "v1")
	if err := os.MkdirAll(filepath.Join(dir, "junk"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := f.create(t, "left", "delta")
	if _, err := os.Stat(filepath.Join(r.GetEnvPath(), "junk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover survived create")
	}
}

func TestMutate(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "m", "alpha==1.0.0")
	py, files := r.GetPythonPath(), r.GetFiles()
	const (
		add    = agentv1.MutationKind_MUTATION_KIND_ADD
		remove = agentv1.MutationKind_MUTATION_KIND_REMOVE
		update = agentv1.MutationKind_MUTATION_KIND_UPDATE
	)

	// Upgrade within a looser specifier: the newest 1.x, not 2.0.0.
	m, err := f.mutate(t.Context(), "m", update, files, py, []string{"alpha>=1.0,<2"}, "alpha")
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if !locked(m.GetFiles().GetUvLock(), "alpha", "1.1.0") || installedVersion(t, r.GetEnvPath(), "alpha") != "1.1.0" {
		t.Errorf("after update alpha is not 1.1.0:\n%s", m.GetFiles().GetUvLock())
	}
	files = m.GetFiles()

	// Downgrade with a new specifier.
	m, err = f.mutate(t.Context(), "m", update, files, py, []string{"alpha==1.0.0"}, "alpha")
	if err != nil {
		t.Fatalf("downgrade: %v", err)
	}
	if !locked(m.GetFiles().GetUvLock(), "alpha", "1.0.0") || installedVersion(t, r.GetEnvPath(), "alpha") != "1.0.0" {
		t.Errorf("after downgrade alpha is not 1.0.0")
	}
	files = m.GetFiles()

	m, err = f.mutate(t.Context(), "m", add, files, py, []string{"Delta==0.1.0"})
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	if !locked(m.GetFiles().GetUvLock(), "delta", "0.1.0") || m.GetPackagesInstalled() != 2 {
		t.Errorf("after add: %d packages, lock\n%s", m.GetPackagesInstalled(), m.GetFiles().GetUvLock())
	}
	files = m.GetFiles()

	_, err = f.mutate(t.Context(), "m", remove, files, py, []string{"gamma"})
	wantError(t, err, connect.CodeNotFound, errcode.DependencyNotFound)

	m, err = f.mutate(t.Context(), "m", remove, files, py, []string{"DELTA"})
	if err != nil {
		t.Fatalf("remove: %v", err)
	}
	if strings.Contains(m.GetFiles().GetPyprojectToml(), "delta") || installedVersion(t, r.GetEnvPath(), "delta") != "" || m.GetPackagesInstalled() != 1 {
		t.Errorf("delta still there after remove")
	}
}

// A resolution failure leaves the files byte-identical to base.
func TestMutateResolutionFailureRestores(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "rf", "gamma")
	_, err := f.mutate(t.Context(), "rf", agentv1.MutationKind_MUTATION_KIND_ADD, r.GetFiles(), r.GetPythonPath(), []string{"alpha>=2"})
	d := wantError(t, err, connect.CodeFailedPrecondition, errcode.PackageResolutionFailed)
	if !d.GetRestored() || !strings.Contains(d.GetUvOutput(), "No solution found") {
		t.Errorf("detail: got %+v; want restored with uv output", d)
	}
	assertFiles(t, r.GetEnvPath(), r.GetFiles())
}

// Disk that drifted from base is put back to base before the mutation runs.
func TestMutateWritesBaseFirst(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "drift", "alpha")
	p := filepath.Join(r.GetEnvPath(), "pyproject.toml")
	if err := os.WriteFile(p, []byte(r.GetFiles().GetPyprojectToml()+"# drift\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := f.mutate(t.Context(), "drift", agentv1.MutationKind_MUTATION_KIND_ADD, r.GetFiles(), r.GetPythonPath(), []string{"delta"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.GetFiles().GetPyprojectToml(), "# drift") {
		t.Errorf("mutation ran on the drifted file")
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("pyproject.toml mode: %v, %v; want 0644", fi.Mode(), err)
	}
}

// Cancelling a mutation while uv waits on the index leaves the files byte-identical to base.
func TestMutateCancelledRestores(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "cancel", "alpha")
	reached := f.index.Stall("delta")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		select {
		case <-reached:
		case <-time.After(30 * time.Second):
		}
		cancel()
	}()
	// Called directly, so the call returns only once the restore is done.
	_, err := f.server.Mutate(ctx, connect.NewRequest(&agentv1.MutateRequest{
		Env: ref("cancel"), Kind: agentv1.MutationKind_MUTATION_KIND_ADD, Base: r.GetFiles(),
		PythonPath: r.GetPythonPath(), Packages: []string{"delta"},
	}))
	if connect.CodeOf(err) != connect.CodeCanceled || !detailOf(err).GetRestored() {
		t.Fatalf("got %v; want canceled and restored", err)
	}
	assertFiles(t, r.GetEnvPath(), r.GetFiles())
	if installedVersion(t, r.GetEnvPath(), "delta") != "" {
		t.Errorf("delta installed by a cancelled add")
	}
}

func TestSyncAndInspect(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "s", "epsilon")
	inspect := func() *agentv1.InspectResponse {
		t.Helper()
		resp, err := f.client.Inspect(t.Context(), connect.NewRequest(&agentv1.InspectRequest{
			Env: ref("s"), Expected: r.GetFiles(), PythonPath: r.GetPythonPath(),
		}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	in := inspect()
	if !in.GetExists() || !in.GetHasPyproject() || !in.GetHasLock() || !in.GetHasVenv() || !in.GetFilesMatch() ||
		!in.GetVenvInSync() || !in.GetInterpreterPresent() || in.GetPackagesInstalled() != 4 || in.GetLastUsedUnixMs() == 0 {
		t.Errorf("inspect after create: %+v", in)
	}

	if err := os.RemoveAll(filepath.Join(r.GetEnvPath(), ".venv")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.GetEnvPath(), "uv.lock"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	in = inspect()
	if in.GetHasVenv() || in.GetFilesMatch() || in.GetVenvInSync() || in.GetPackagesInstalled() != 0 {
		t.Errorf("inspect after damage: %+v", in)
	}

	s, err := f.client.Sync(t.Context(), connect.NewRequest(&agentv1.SyncRequest{
		Env: ref("s"), Files: r.GetFiles(), PythonPath: r.GetPythonPath(),
	}))
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if !s.Msg.GetFilesRestored() || s.Msg.GetPackagesInstalled() != 4 {
		t.Errorf("sync: got %+v; want files restored and 4 packages", s.Msg)
	}
	if in = inspect(); !in.GetFilesMatch() || !in.GetVenvInSync() || !in.GetHasVenv() {
		t.Errorf("inspect after sync: %+v", in)
	}

	missing, err := f.client.Inspect(t.Context(), connect.NewRequest(&agentv1.InspectRequest{Env: ref("nothere")}))
	if err != nil || missing.Msg.GetExists() {
		t.Errorf("inspect missing: got %+v, %v; want exists=false", missing.Msg, err)
	}
}

func TestRun(t *testing.T) {
	f := newFixture(t)
	f.create(t, "run", "alpha==1.1.0")
	resp, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{
		Env: ref("run"), Code: "import alpha, sys\nprint(alpha.__version__)\nsys.exit(2)", TimeoutMs: 30000,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Msg.GetStdout()) != "1.1.0\n" || resp.Msg.GetExitCode() != 2 {
		t.Errorf("got %+v; want stdout 1.1.0 and exit 2", resp.Msg)
	}
	resp, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{
		Env: ref("run"), Code: "import time\ntime.sleep(60)", TimeoutMs: 300,
	}))
	if err != nil || !resp.Msg.GetTimedOut() {
		t.Errorf("got %+v, %v; want timed_out", resp.Msg, err)
	}
	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("nothere"), Code: "print(1)"}))
	wantError(t, err, connect.CodeNotFound, errcode.EnvNotFound)

	if err := os.RemoveAll(filepath.Join(f.envs, "wf1", "run", "v1", ".venv")); err != nil {
		t.Fatal(err)
	}
	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("run"), Code: "print(1)"}))
	wantError(t, err, connect.CodeFailedPrecondition, errcode.EnvNotReady)
}

func TestDelete(t *testing.T) {
	f := newFixture(t)
	f.create(t, "d", "delta")
	resp, err := f.client.DeleteProject(t.Context(), connect.NewRequest(&agentv1.DeleteProjectRequest{Env: ref("d")}))
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Msg.GetExisted() || resp.Msg.GetBytesFreed() <= 0 {
		t.Errorf("got %+v; want existed and bytes freed", resp.Msg)
	}
	// Only the directory of lock files stays, emptied of this environment's.
	if entries, err := os.ReadDir(f.envs); err != nil || len(entries) != 1 || entries[0].Name() != ".locks" {
		t.Errorf("envs dir after delete: %v, %v; want only .locks", entries, err)
	}
	if locks, err := os.ReadDir(filepath.Join(f.envs, ".locks")); err != nil || len(locks) != 0 {
		t.Errorf("lock files after delete: %v, %v; want none", locks, err)
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
			_, err := f.client.CreateProject(t.Context(), connect.NewRequest(&agentv1.CreateProjectRequest{Env: r}))
			wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidID)
			_, err = f.client.DeleteProject(t.Context(), connect.NewRequest(&agentv1.DeleteProjectRequest{Env: r}))
			wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidID)
			_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: r, Code: "print(1)"}))
			wantError(t, err, connect.CodeInvalidArgument, errcode.InvalidID)
		})
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
			t.Errorf("%s differs from base:\n%s\nwant\n%s", name, got, body)
		}
	}
}

// A change that was never committed (its control plane lost its lease after uv ran) left its
// files and its package behind; the next mutation starts from the base it is given, .venv
// included: the leftover package must not survive into the new revision.
func TestMutateDropsUncommittedLeftovers(t *testing.T) {
	f := newFixture(t)
	r := f.create(t, "leftover", "alpha")
	if _, err := f.mutate(t.Context(), "leftover", agentv1.MutationKind_MUTATION_KIND_ADD, r.GetFiles(), r.GetPythonPath(), []string{"delta"}); err != nil {
		t.Fatal(err)
	}
	if installedVersion(t, r.GetEnvPath(), "delta") == "" {
		t.Fatal("delta was not installed by the uncommitted change")
	}
	m, err := f.mutate(t.Context(), "leftover", agentv1.MutationKind_MUTATION_KIND_ADD, r.GetFiles(), r.GetPythonPath(), []string{"beta"})
	if err != nil {
		t.Fatal(err)
	}
	if locked(m.GetFiles().GetUvLock(), "delta", "0.1.0") || strings.Contains(m.GetFiles().GetPyprojectToml(), "delta") {
		t.Errorf("the new revision carries the uncommitted delta:\n%s", m.GetFiles().GetPyprojectToml())
	}
	if v := installedVersion(t, r.GetEnvPath(), "delta"); v != "" {
		t.Errorf("delta %s is still installed; want the .venv at the base plus beta", v)
	}
	if installedVersion(t, r.GetEnvPath(), "beta") == "" {
		t.Error("beta is not installed")
	}
}
