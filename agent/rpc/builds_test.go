package rpc_test

import (
	"context"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/errcode"
)

// du is what `du -s` reports for dir: the blocks of every file, directory and link under it,
// each inode counted once, so a file hardlinked into a build already counted costs nothing.
func du(t *testing.T, dir string, seen map[uint64]bool) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestIdenticalEnvironmentsShareABuild: environments with the same requirements get
// byte-identical files and one build; the second's Build installs nothing, and each further
// environment costs only its small project directory.
func TestIdenticalEnvironmentsShareABuild(t *testing.T) {
	f := newFixture(t)
	a := f.create(t, "a", "epsilon", "gamma")
	l, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("b"), Kind: agentv1.LockKind_LOCK_KIND_CREATE, PythonVersion: "3.11", Packages: []string{"epsilon", "gamma"}})
	if err != nil {
		t.Fatal(err)
	}
	if l.GetFiles().GetPyprojectToml() != a.files.GetPyprojectToml() || l.GetFiles().GetUvLock() != a.files.GetUvLock() {
		t.Fatalf("the same requirements gave different files:\n%s\n%s", l.GetFiles().GetPyprojectToml(), a.files.GetPyprojectToml())
	}
	b := f.mustBuild(t, l.GetFiles(), l.GetPythonPath())
	if b.GetBuild().GetId() != a.build.GetId() || b.GetBuild().GetCreated() || b.GetUvOutput() != "" {
		t.Errorf("second build: got %+v; want build %s existing, no uv run", b, a.build.GetId())
	}
	if _, err := f.switchTo(t.Context(), "b", l.GetFiles(), b.GetBuild().GetId(), 1, 1); err != nil {
		t.Fatal(err)
	}
	list, err := f.client.ListBuilds(t.Context(), connect.NewRequest(&agentv1.ListBuildsRequest{}))
	if err != nil || len(list.Msg.GetBuilds()) != 1 {
		t.Fatalf("list builds: %+v, %v; want one build", list.Msg, err)
	}

	seen := map[uint64]bool{}
	du(t, filepath.Join(f.envs, ".builds"), seen)
	du(t, a.path, seen)
	du(t, filepath.Join(f.envs, "wf1", "b"), seen)
	c := f.create(t, "c", "epsilon", "gamma")
	if c.build.GetCreated() {
		t.Errorf("third environment materialised a build")
	}
	cost := du(t, filepath.Join(f.envs, "wf1", "c"), seen)
	lockSize := int64(len(c.files.GetUvLock()))
	t.Logf("a further identical environment costs %d bytes (du, each inode once; its uv.lock is %d bytes)", cost, lockSize)
	if cost > 64<<10 {
		t.Errorf("a further identical environment costs %d bytes; want at most 64 KiB", cost)
	}
	if got := python(t, c.path, "import epsilon, gamma; print('ok')"); got != "ok" {
		t.Errorf("third environment: %q", got)
	}
}

// TestSwitchKeepsRunsOnTheirBuild: after a Switch the environment's own interpreter sees the new
// build, while a run started on the old build finishes on it, importing from it after the switch.
func TestSwitchKeepsRunsOnTheirBuild(t *testing.T) {
	f := newFixture(t)
	old := f.create(t, "sw", "alpha==1.0.0")
	gate := filepath.Join(t.TempDir(), "switched")
	code := "import os, time\n" +
		"while not os.path.exists(" + pyString(gate) + "):\n    time.sleep(0.02)\n" +
		"import alpha\nprint(alpha.__version__)"
	type result struct {
		resp *agentv1.RunResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("sw"), BuildId: old.build.GetId(), Code: code, TimeoutMs: 60000}))
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{resp: resp.Msg}
	}()
	waitHeld(t, f.envs, old.build.GetId())

	next := f.change(t, old, agentv1.LockKind_LOCK_KIND_UPDATE, []string{"alpha==1.1.0"}, "alpha")
	if next.build.GetId() == old.build.GetId() {
		t.Fatal("the change kept the build")
	}
	if got := python(t, next.path, "import alpha; print(alpha.__version__)"); got != "1.1.0" {
		t.Errorf("after the switch the environment's python imports alpha %s; want 1.1.0", got)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || string(r.resp.GetStdout()) != "1.0.0\n" {
		t.Errorf("the run started on the old build: %+v, %v; want it to import alpha 1.0.0", r.resp, r.err)
	}
	if got := string(f.run(t, "sw", "", "import alpha\nprint(alpha.__version__)").GetStdout()); got != "1.1.0\n" {
		t.Errorf("the next run imports alpha %q; want 1.1.0", got)
	}
	// Back to the first build: the link moves again, nothing is installed.
	back := f.switchBack(t, next, old)
	if got := python(t, back.path, "import alpha; print(alpha.__version__)"); got != "1.0.0" {
		t.Errorf("after switching back: alpha %s; want 1.0.0", got)
	}
}

// switchBack switches e to the files and build of an earlier revision (a rollback).
func (f *fixture) switchBack(t *testing.T, e, to *env) *env {
	t.Helper()
	if _, err := f.switchTo(t.Context(), e.node, to.files, to.build.GetId(), e.rev+1, e.op+1); err != nil {
		t.Fatal(err)
	}
	return &env{node: e.node, files: to.files, python: to.python, build: to.build, path: e.path, rev: e.rev + 1, op: e.op + 1}
}

func pyString(s string) string { return "'" + strings.ReplaceAll(s, "'", "\\'") + "'" }

// TestHalfBuildNeverUsed: a build directory without its marker (a materialisation killed
// midway) is never run or switched to, and the next Build removes and materialises it.
func TestHalfBuildNeverUsed(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "half", "delta==0.1.0")
	next, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("half"), Kind: agentv1.LockKind_LOCK_KIND_ADD, Base: e.files, PythonPath: e.python, Packages: []string{"alpha"}})
	if err != nil {
		t.Fatal(err)
	}
	// Learn the id, then leave a half build there: what uv had written when it was killed.
	b := f.mustBuild(t, next.GetFiles(), e.python)
	id := b.GetBuild().GetId()
	if err := os.Remove(filepath.Join(f.envs, ".builds", id, "BUILD.json")); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(f.envs, ".builds", id, "junk")
	if err := os.WriteFile(junk, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}

	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("half"), BuildId: id, Code: "print(1)"}))
	wantError(t, err, connect.CodeFailedPrecondition, errcode.BuildMissing)
	_, err = f.switchTo(t.Context(), "half", next.GetFiles(), id, 2, 2)
	wantError(t, err, connect.CodeFailedPrecondition, errcode.BuildMissing)
	if got := python(t, e.path, "import delta; print(delta.__version__)"); got != "0.1.0" {
		t.Errorf("the environment lost its current build: %q", got)
	}
	list, err := f.client.ListBuilds(t.Context(), connect.NewRequest(&agentv1.ListBuildsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range list.Msg.GetBuilds() {
		if b.GetId() == id && b.GetCompletedUnixMs() != 0 {
			t.Errorf("the half build is listed complete: %+v", b)
		}
	}

	again := f.mustBuild(t, next.GetFiles(), e.python)
	if again.GetBuild().GetId() != id || !again.GetBuild().GetCreated() || again.GetBuild().GetCompletedUnixMs() == 0 {
		t.Errorf("build after a half build: %+v; want %s materialised again", again.GetBuild(), id)
	}
	if _, err := os.Stat(junk); !os.IsNotExist(err) {
		t.Errorf("the half build's files survived (stat: %v)", err)
	}
	if _, err := f.switchTo(t.Context(), "half", next.GetFiles(), id, 2, 2); err != nil {
		t.Fatal(err)
	}
	if got := python(t, e.path, "import alpha, delta; print('ok')"); got != "ok" {
		t.Errorf("after the rebuild: %q", got)
	}
}

// TestVerifyAndRepair: verification against RECORD reports a deleted package directory and a
// file truncated in place (which, through the hardlink, truncated the uv cache's copy too), and
// Build with replace_damaged materialises an intact build at the same id.
func TestVerifyAndRepair(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "dmg", "beta")
	sp, _ := filepath.Glob(filepath.Join(e.build.GetVenvPath(), "lib", "python*", "site-packages"))
	if len(sp) != 1 {
		t.Fatal("no site-packages")
	}
	if err := os.RemoveAll(filepath.Join(sp[0], "alpha")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(sp[0], "beta", "data.txt"), 10); err != nil {
		t.Fatal(err)
	}
	check := func() *agentv1.BuildCheck {
		t.Helper()
		resp, err := f.client.Inspect(t.Context(), connect.NewRequest(&agentv1.InspectRequest{Env: ref("dmg"), Verify: true}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetBuildCheck()
	}
	c := check()
	if c.GetIntact() || !c.GetComplete() || len(c.GetDamaged()) != 2 {
		t.Fatalf("check of the damaged build: %+v; want alpha and beta damaged", c)
	}
	alpha, beta := c.GetDamaged()[0], c.GetDamaged()[1]
	if alpha.GetName() != "alpha" || alpha.GetMissingCount() != 2 || !strings.Contains(strings.Join(alpha.GetMissing(), ","), "alpha/data.txt") {
		t.Errorf("alpha damage: %+v; want its two files missing", alpha)
	}
	if beta.GetName() != "beta" || beta.GetWrongSizeCount() != 1 || beta.GetWrongSize()[0] != "beta/data.txt" || beta.GetMissingCount() != 0 {
		t.Errorf("beta damage: %+v; want beta/data.txt of the wrong size", beta)
	}

	resp, err := f.client.Build(t.Context(), connect.NewRequest(&agentv1.BuildRequest{Files: e.files, PythonPath: e.python, ReplaceDamaged: true}))
	if err != nil {
		t.Fatalf("repair: %v\n%s", err, detailOf(err).GetUvOutput())
	}
	if resp.Msg.GetBuild().GetId() != e.build.GetId() || !resp.Msg.GetBuild().GetCreated() {
		t.Errorf("repair: %+v; want build %s materialised again", resp.Msg.GetBuild(), e.build.GetId())
	}
	if c := check(); !c.GetIntact() {
		t.Errorf("after the repair: %+v; want intact", c)
	}
	if got := python(t, e.path, "import alpha, beta, os; print(os.path.getsize(os.path.join(os.path.dirname(beta.__file__), 'data.txt')))"); got == "10" {
		t.Errorf("beta/data.txt is still truncated")
	}
	// An intact build is not replaced.
	resp, err = f.client.Build(t.Context(), connect.NewRequest(&agentv1.BuildRequest{Files: e.files, PythonPath: e.python, ReplaceDamaged: true}))
	if err != nil || resp.Msg.GetBuild().GetCreated() {
		t.Errorf("replace_damaged of an intact build: %+v, %v; want it kept", resp.Msg, err)
	}
	if left, _ := filepath.Glob(filepath.Join(f.envs, ".builds", ".damaged-*")); len(left) != 0 {
		t.Errorf("damaged builds left aside: %v", left)
	}
}

// TestRemoveBuild: a build a run holds is not removed; once the run ended it is, and a run of
// it then answers BUILD_MISSING.
func TestRemoveBuild(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "rm", "delta")
	gate := filepath.Join(t.TempDir(), "go")
	done := make(chan error, 1)
	go func() {
		_, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("rm"), BuildId: e.build.GetId(),
			Code: "import os, time\nwhile not os.path.exists(" + pyString(gate) + "):\n    time.sleep(0.02)\n", TimeoutMs: 60000}))
		done <- err
	}()
	waitHeld(t, f.envs, e.build.GetId())
	remove := func() *agentv1.RemoveBuildResponse {
		t.Helper()
		resp, err := f.client.RemoveBuild(t.Context(), connect.NewRequest(&agentv1.RemoveBuildRequest{BuildId: e.build.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	if r := remove(); !r.GetInUse() {
		t.Errorf("remove during a run: %+v; want in_use", r)
	}
	if _, err := os.Stat(filepath.Join(e.build.GetVenvPath(), "bin", "python")); err != nil {
		t.Errorf("a held build was touched: %v", err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the run: %v", err)
	}
	list, err := f.client.ListBuilds(t.Context(), connect.NewRequest(&agentv1.ListBuildsRequest{}))
	if err != nil || len(list.Msg.GetBuilds()) != 1 || list.Msg.GetBuilds()[0].GetLastUsedUnixMs() < list.Msg.GetBuilds()[0].GetCompletedUnixMs() {
		t.Errorf("list builds: %+v, %v; want the build with its last use by the run", list.Msg, err)
	}
	if r := remove(); !r.GetExisted() || r.GetInUse() {
		t.Errorf("remove after the run: %+v; want removed", r)
	}
	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("rm"), Code: "print(1)"}))
	wantError(t, err, connect.CodeFailedPrecondition, errcode.BuildMissing)
	in, err := f.client.Inspect(t.Context(), connect.NewRequest(&agentv1.InspectRequest{Env: ref("rm"), Expected: e.files}))
	if err != nil || in.Msg.GetHasVenv() || !in.Msg.GetFilesMatch() || in.Msg.GetBuildId() != e.build.GetId() {
		t.Errorf("inspect of a removed build's environment: %+v, %v; want its files, no venv", in.Msg, err)
	}
	if r := remove(); r.GetExisted() {
		t.Errorf("second remove: %+v; want existed=false", r)
	}
	// Building it again brings the environment back.
	f.mustBuild(t, e.files, e.python)
	if got := python(t, e.path, "import delta; print('ok')"); got != "ok" {
		t.Errorf("after the rebuild: %q", got)
	}
}

// waitHeld waits until some process holds build id's lock shared (a run started on it).
func waitHeld(t *testing.T, envs, id string) {
	t.Helper()
	path := filepath.Join(envs, ".builds", ".locks", id+".lock")
	for {
		fh, err := os.Open(path)
		if err == nil {
			err = syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			fh.Close()
			if err != nil {
				return
			}
		}
		select {
		case <-t.Context().Done():
			t.Fatal("no run took the build's lock")
		default:
		}
		syscall.Nanosleep(&syscall.Timespec{Nsec: 10e6}, nil)
	}
}

// TestCancelledMaterialisation: while a build is being materialised it is not usable (no run,
// no switch), a materialisation cancelled midway (uv stopped while it downloads) leaves no
// complete build, and the next Build materialises it in full.
func TestCancelledMaterialisation(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "cut", "delta==0.1.0")
	// The lock's wheels are served through a proxy that can hold downloads: a host the cache has
	// never seen, so uv must download.
	var stalling atomic.Bool
	stalling.Store(true)
	reached := make(chan struct{})
	var once sync.Once
	target, _ := url.Parse(f.index.URL)
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stalling.Load() && strings.HasPrefix(r.URL.Path, "/files/") {
			once.Do(func() { close(reached) })
			<-r.Context().Done()
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ps.Close)
	next, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("cut"), Kind: agentv1.LockKind_LOCK_KIND_ADD, Base: e.files, PythonPath: e.python, Packages: []string{"alpha==1.1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	files := &agentv1.ProjectFiles{
		PyprojectToml: next.GetFiles().GetPyprojectToml(),
		UvLock:        strings.ReplaceAll(next.GetFiles().GetUvLock(), "http://"+target.Host, ps.URL),
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Called directly, so the call returns only once uv is gone.
		_, err := f.server.Build(ctx, connect.NewRequest(&agentv1.BuildRequest{Files: files, PythonPath: e.python}))
		done <- err
	}()
	select {
	case <-reached:
	case err := <-done:
		t.Fatalf("the build ended before downloading: %v", err)
	}
	list, err := f.client.ListBuilds(t.Context(), connect.NewRequest(&agentv1.ListBuildsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, b := range list.Msg.GetBuilds() {
		if b.GetId() != e.build.GetId() {
			id = b.GetId()
			if b.GetCompletedUnixMs() != 0 {
				t.Errorf("a build being materialised is listed complete: %+v", b)
			}
		}
	}
	if id == "" {
		t.Fatal("the build being materialised is not listed")
	}
	_, err = f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("cut"), BuildId: id, Code: "print(1)"}))
	wantError(t, err, connect.CodeFailedPrecondition, errcode.BuildMissing)
	_, err = f.switchTo(t.Context(), "cut", files, id, 2, 2)
	wantError(t, err, connect.CodeFailedPrecondition, errcode.BuildMissing)

	cancel()
	if err := <-done; connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("cancelled build: %v; want canceled", err)
	}
	if _, err := os.Stat(filepath.Join(f.envs, ".builds", id, "BUILD.json")); !os.IsNotExist(err) {
		t.Errorf("a cancelled build has a marker (stat: %v)", err)
	}
	if got := python(t, e.path, "import delta; print(delta.__version__)"); got != "0.1.0" {
		t.Errorf("the environment's current build was touched: %q", got)
	}

	stalling.Store(false)
	b := f.mustBuild(t, files, e.python)
	if b.GetBuild().GetId() != id || !b.GetBuild().GetCreated() || b.GetBuild().GetPackagesInstalled() != 2 {
		t.Errorf("build after the cancelled one: %+v", b.GetBuild())
	}
	if _, err := f.switchTo(t.Context(), "cut", files, id, 2, 2); err != nil {
		t.Fatal(err)
	}
	if got := python(t, e.path, "import alpha, delta; print(alpha.__version__)"); got != "1.1.0" {
		t.Errorf("after the rebuild: %q", got)
	}
}

// TestRepairClosesTheGate: a repair waits for the runs under way on the damaged build, and runs
// that start meanwhile wait for it and run on the repaired build, instead of keeping the damaged
// one busy forever.
func TestRepairClosesTheGate(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "gate", "alpha==1.0.0")
	sp, _ := filepath.Glob(filepath.Join(e.build.GetVenvPath(), "lib", "python*", "site-packages"))
	if len(sp) != 1 {
		t.Fatal("no site-packages")
	}
	data := filepath.Join(sp[0], "alpha", "data.txt")
	full, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	// The damage: the file replaced by a shorter one (an editor's save), not the cache's copy.
	if err := os.Remove(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}

	gate := filepath.Join(t.TempDir(), "go")
	first := make(chan error, 1)
	go func() {
		_, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("gate"), BuildId: e.build.GetId(),
			Code: "import os, time\nwhile not os.path.exists(" + pyString(gate) + "):\n    time.sleep(0.02)\n", TimeoutMs: 60000}))
		first <- err
	}()
	waitHeld(t, f.envs, e.build.GetId())
	repaired := make(chan error, 1)
	go func() {
		_, err := f.client.Build(t.Context(), connect.NewRequest(&agentv1.BuildRequest{Files: e.files, PythonPath: e.python, ReplaceDamaged: true}))
		repaired <- err
	}()
	waitClosed(t, filepath.Join(f.envs, ".builds", ".locks", e.build.GetId()+".gate"))
	second := make(chan *agentv1.RunResponse, 1)
	go func() {
		resp, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref("gate"), BuildId: e.build.GetId(),
			Code: "import alpha, os\nprint(os.path.getsize(os.path.join(os.path.dirname(alpha.__file__), 'data.txt')))", TimeoutMs: 60000}))
		if err != nil {
			t.Errorf("the run started during the repair: %v", err)
		}
		second <- resp.Msg
	}()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the run on the damaged build: %v", err)
	}
	if err := <-repaired; err != nil {
		t.Fatalf("repair: %v", err)
	}
	if got := strings.TrimSpace(string((<-second).GetStdout())); got != strconv.FormatInt(full.Size(), 10) {
		t.Errorf("the run started during the repair saw data.txt of %s bytes; want the repaired %d", got, full.Size())
	}
}

// waitClosed waits until some process holds the lock file at path exclusively.
func waitClosed(t *testing.T, path string) {
	t.Helper()
	for {
		fh, err := os.Open(path)
		if err == nil {
			err = syscall.Flock(int(fh.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
			fh.Close()
			if err != nil {
				return
			}
		}
		select {
		case <-t.Context().Done():
			t.Fatal("nobody closed the gate")
		default:
		}
		syscall.Nanosleep(&syscall.Timespec{Nsec: 10e6}, nil)
	}
}
