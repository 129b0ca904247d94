package rpc_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/rpc"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// TestOlderOperationRefused: once an operation changed a project from revision 1, a call of an
// older operation (a control plane that lost its lease while paused) may not write revision 1
// back, while the operation itself may (its restore after a failed commit) and a newer one may
// write anything (it read the database under its lease).
func TestOlderOperationRefused(t *testing.T) {
	f := newFixture(t)
	c := f.create(t, "fence", "alpha==1.0.0")
	base := c.GetFiles()
	mut, err := f.client.Mutate(t.Context(), connect.NewRequest(&agentv1.MutateRequest{
		Env: ref("fence"), Kind: agentv1.MutationKind_MUTATION_KIND_ADD, Base: base, PythonPath: c.GetPythonPath(),
		Packages: []string{"delta"}, BaseRevision: 1, OperationId: 10,
	}))
	if err != nil {
		t.Fatal(err)
	}
	sync := func(files *agentv1.ProjectFiles, rev, op int64) error {
		_, err := f.client.Sync(t.Context(), connect.NewRequest(&agentv1.SyncRequest{
			Env: ref("fence"), Files: files, PythonPath: c.GetPythonPath(), Revision: rev, OperationId: op,
		}))
		return err
	}
	pyprojectOnDisk := func() string {
		b, err := os.ReadFile(filepath.Join(c.GetEnvPath(), "pyproject.toml"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	wantError(t, sync(base, 1, 9), connect.CodeAborted, errcode.EnvLocked)
	if got := pyprojectOnDisk(); got != mut.Msg.GetFiles().GetPyprojectToml() {
		t.Fatalf("a refused call wrote the project:\n%s", got)
	}
	_, err = f.client.Mutate(t.Context(), connect.NewRequest(&agentv1.MutateRequest{
		Env: ref("fence"), Kind: agentv1.MutationKind_MUTATION_KIND_ADD, Base: base, PythonPath: c.GetPythonPath(),
		Packages: []string{"beta"}, BaseRevision: 1, OperationId: 9,
	}))
	wantError(t, err, connect.CodeAborted, errcode.EnvLocked)

	if err := sync(base, 1, 10); err != nil {
		t.Fatalf("the operation's own restore: %v", err)
	}
	if got := pyprojectOnDisk(); got != base.GetPyprojectToml() {
		t.Errorf("the restore did not put the base back:\n%s", got)
	}
	if err := sync(mut.Msg.GetFiles(), 2, 11); err != nil {
		t.Fatalf("a newer operation: %v", err)
	}
}

// TestWaitsForTheStorageLock: a call on a project whose lock another process holds waits, and
// gives up when its caller does, without touching the project.
func TestWaitsForTheStorageLock(t *testing.T) {
	f := newFixture(t)
	c := f.create(t, "held", "alpha==1.0.0")
	key := envid.Key{WorkflowID: "wf1", NodeID: "held", VersionID: "v1"}
	release := rpc.HoldLock(t, f.envs, key)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := f.mutate(ctx, "held", agentv1.MutationKind_MUTATION_KIND_ADD, c.GetFiles(), c.GetPythonPath(), []string{"delta"})
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("got %v; want the call to wait for the lock until its caller gave up", err)
	}
	b, _ := os.ReadFile(filepath.Join(c.GetEnvPath(), "pyproject.toml"))
	if p, _ := pyproject.Parse(string(b)); strings.Contains(strings.Join(p.Dependencies, ","), "delta") {
		t.Error("the project was changed while the lock was held elsewhere")
	}
	release()
	if _, err := f.mutate(t.Context(), "held", agentv1.MutationKind_MUTATION_KIND_ADD, c.GetFiles(), c.GetPythonPath(), []string{"delta"}); err != nil {
		t.Fatalf("after the lock was released: %v", err)
	}
}
