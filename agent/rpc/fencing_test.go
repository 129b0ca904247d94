package rpc_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/rpc"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/errcode"
)

// TestOlderOperationRefused: once an operation switched a project to revision 2, a Switch of an
// older operation (a control plane that lost its lease while paused) may not write an older or
// equal revision, while the operation itself may switch again and a newer one may write anything.
func TestOlderOperationRefused(t *testing.T) {
	f := newFixture(t)
	first := f.create(t, "fence", "alpha==1.0.0")
	second := f.change(t, first, agentv1.LockKind_LOCK_KIND_ADD, []string{"delta"}) // revision 2, operation 2
	pyprojectOnDisk := func() string {
		b, err := os.ReadFile(filepath.Join(first.path, "pyproject.toml"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	_, err := f.client.Switch(t.Context(), connect.NewRequest(&agentv1.SwitchRequest{Env: ref("fence"), Files: first.files,
		BuildId: first.build.GetId(), Revision: 2, OperationId: 1}))
	wantError(t, err, connect.CodeAborted, errcode.EnvLocked)
	_, err = f.switchTo(t.Context(), "fence", first.files, first.build.GetId(), 1, 1)
	wantError(t, err, connect.CodeAborted, errcode.EnvLocked)
	if got := pyprojectOnDisk(); got != second.files.GetPyprojectToml() {
		t.Fatalf("a refused switch wrote the project:\n%s", got)
	}
	if got := python(t, first.path, "import delta; print('ok')"); got != "ok" {
		t.Fatalf("a refused switch moved the build link: %q", got)
	}
	if r, err := f.switchTo(t.Context(), "fence", second.files, second.build.GetId(), 2, 2); err != nil || r.GetChanged() {
		t.Fatalf("the operation's own switch again: %+v, %v; want accepted and unchanged", r, err)
	}
	if r, err := f.switchTo(t.Context(), "fence", first.files, first.build.GetId(), 3, 3); err != nil || !r.GetChanged() {
		t.Fatalf("a newer operation: %+v, %v", r, err)
	}
	if got := pyprojectOnDisk(); got != first.files.GetPyprojectToml() {
		t.Errorf("the newer switch did not write its revision:\n%s", got)
	}
}

// TestWaitsForTheStorageLock: a Switch of a project whose lock another process holds waits, and
// gives up when its caller does, without touching the project.
func TestWaitsForTheStorageLock(t *testing.T) {
	f := newFixture(t)
	first := f.create(t, "held", "alpha==1.0.0")
	l, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("held"), Kind: agentv1.LockKind_LOCK_KIND_ADD, Base: first.files, PythonPath: first.python, Packages: []string{"delta"}})
	if err != nil {
		t.Fatal(err)
	}
	b := f.mustBuild(t, l.GetFiles(), first.python)
	release := rpc.HoldLock(t, f.envs, keyOf("held"))
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = f.switchTo(ctx, "held", l.GetFiles(), b.GetBuild().GetId(), 2, 2)
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("got %v; want the call to wait for the lock until its caller gave up", err)
	}
	assertFiles(t, first.path, first.files)
	release()
	if _, err := f.switchTo(t.Context(), "held", l.GetFiles(), b.GetBuild().GetId(), 2, 2); err != nil {
		t.Fatalf("after the lock was released: %v", err)
	}
	assertFiles(t, first.path, l.GetFiles())
}
