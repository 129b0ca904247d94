package envs_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// changed is what a fake resolution answers.
func changed(_ context.Context, r envs.LockRequest) (envs.Locked, error) {
	return envs.Locked{Files: envs.Files{PyprojectTOML: r.Base.PyprojectTOML + "# changed\n", UvLock: r.Base.UvLock + "# changed\n"}}, nil
}

// refuseRevisions makes the database refuse every new revision, as a full disk or a broken
// database would, through a connection of the test's own.
func refuseRevisions(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON env_revisions BEGIN SELECT RAISE(ABORT, 'injected'); END`); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedCommitTouchesNothing: a change the database refuses is answered DB_AUDIT_ERROR and
// nothing was switched (the change was built beside the current build, which keeps serving); the
// environment stays ACTIVE at its revision, and the audit row says what happened.
func TestRefusedCommitTouchesNothing(t *testing.T) {
	agent := &fakeAgent{}
	svc, st, path := newServiceAt(t, agent, &clock{})
	if _, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: key}); err != nil {
		t.Fatal(err)
	}
	refuseRevisions(t, path)
	_, err := svc.Mutate(t.Context(), envs.Caller{}, key, envs.Add, []string{"alpha"}, false)
	var ue *envs.UncommittedError
	if !errors.As(err, &ue) || errcode.Of(err) != errcode.DBAuditError || !ue.Restored || ue.LeaseLost {
		t.Fatalf("got %#v; want DB_AUDIT_ERROR, the environment at rest", err)
	}
	if calls := agent.Calls(); !slices.Equal(calls, []string{"lock create", "build", "switch 1", "lock", "build"}) {
		t.Errorf("agent calls %v; want the create, then the change's resolution and build and no switch", calls)
	}
	env, err := st.GetEnv(t.Context(), key)
	if err != nil || env.State != store.StateActive || env.Revision != 1 || env.DiskRevision != 1 {
		t.Errorf("environment %+v, %v; want ACTIVE at revision 1, on disk", env, err)
	}
	ops, err := st.ListOperations(t.Context(), key, 0, 1)
	if err != nil || len(ops) != 1 || ops[0].Kind != "add" || ops[0].Status != store.OpFailed || ops[0].ErrorCode != string(errcode.DBAuditError) {
		t.Fatalf("audit %+v, %v; want the add failed with DB_AUDIT_ERROR", ops, err)
	}
	want := `{"base_revision":1,"build_id":"` + buildID(envs.Files{UvLock: "version = 1\n# changed\n"}) + `","lease_lost":false,"restored":true}`
	if got := string(ops[0].Result); got != want {
		t.Errorf("audit result %s; want %s", got, want)
	}
}

// TestRefusedCreateRemoved: a create the database refuses to record leaves no record behind, and
// no project directory was ever made (the switch comes after the commit).
func TestRefusedCreateRemoved(t *testing.T) {
	agent := &fakeAgent{}
	svc, st, path := newServiceAt(t, agent, &clock{})
	refuseRevisions(t, path)
	_, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: key})
	var ue *envs.UncommittedError
	if !errors.As(err, &ue) || errcode.Of(err) != errcode.DBAuditError || !ue.Restored {
		t.Fatalf("got %v; want DB_AUDIT_ERROR with the record removed", err)
	}
	if calls := agent.Calls(); !slices.Equal(calls, []string{"lock create", "build"}) {
		t.Errorf("agent calls %v; want the resolution and the build, and no switch", calls)
	}
	if _, err := st.GetEnv(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the record of the refused create: %v; want none", err)
	}
}

// TestRepairPass: the maintenance pass closes running rows whose holder is gone, settles an
// environment left mid-change at rest on its current build (nothing to put back), and removes a
// create that never committed; each repair is audited.
func TestRepairPass(t *testing.T) {
	c := &clock{}
	agent := &fakeAgent{}
	svc, st := newService(t, agent, c)
	if _, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: key}); err != nil {
		t.Fatal(err)
	}
	// A holder died mid-add: its row is running, the state INSTALLING, its lease gone.
	dead, err := st.BeginOperation(t.Context(), store.Operation{Key: key, Kind: "add", StartedAt: c.now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetState(t.Context(), key, store.StateInstalling, "", c.now()); err != nil {
		t.Fatal(err)
	}
	// And a create died before its commit.
	unfinished := envid.Key{WorkflowID: "wf", NodeID: "unfinished", VersionID: "v1"}
	if err := st.CreateEnv(t.Context(), store.Env{Key: unfinished, State: store.StateCreating, CreatedAt: c.now(), UpdatedAt: c.now(), LastUsedAt: c.now()}, c.now()); err != nil {
		t.Fatal(err)
	}

	if closed, repaired := svc.MaintainOnce(t.Context()); closed != 0 || repaired != 0 {
		t.Errorf("within the grace period: closed %d, repaired %d; want nothing", closed, repaired)
	}
	c.advance(time.Second) // past LeaseTTL
	if closed, repaired := svc.MaintainOnce(t.Context()); closed != 1 || repaired != 2 {
		t.Errorf("closed %d, repaired %d; want 1 and 2", closed, repaired)
	}
	if op, err := st.GetOperation(t.Context(), dead); err != nil || op.Status != store.OpFailed || op.ErrorCode != store.ErrorCodeInterrupted {
		t.Errorf("the dead holder's row: %+v, %v; want failed INTERRUPTED", op, err)
	}
	if env, err := st.GetEnv(t.Context(), key); err != nil || env.State != store.StateActive || env.Revision != 1 {
		t.Errorf("after repair: %+v, %v; want ACTIVE at revision 1", env, err)
	}
	if _, err := st.GetEnv(t.Context(), unfinished); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the unfinished create: %v; want it removed", err)
	}
	if calls := agent.Calls(); !slices.Equal(calls, []string{"lock create", "build", "switch 1", "delete"}) {
		t.Errorf("agent calls %v; want only the delete of the unfinished create (nothing to resolve, build or switch again)", calls)
	}
	for _, k := range []envid.Key{key, unfinished} {
		ops, err := st.ListOperations(t.Context(), k, 0, 1)
		if err != nil || len(ops) != 1 || ops[0].Kind != "repair" || ops[0].Status != store.OpSucceeded || ops[0].Actor != "repair" {
			t.Errorf("audit of %s: %+v, %v; want a succeeded repair", k, ops, err)
		}
	}
	if closed, repaired := svc.MaintainOnce(t.Context()); closed != 0 || repaired != 0 {
		t.Errorf("second pass: closed %d, repaired %d; want nothing left", closed, repaired)
	}
}

// TestPruneCacheAudited: a prune is an audited operation with the agent and the sizes.
func TestPruneCacheAudited(t *testing.T) {
	svc, st := newService(t, &fakeAgent{}, &clock{})
	res, err := svc.PruneCache(t.Context(), envs.Caller{Actor: "scheduler"})
	if err != nil || !res.Pruned {
		t.Fatalf("got %+v, %v; want pruned", res, err)
	}
	ops, err := st.ListOperations(t.Context(), envid.Key{WorkflowID: "_fabric", NodeID: "uv_cache", VersionID: "prune"}, 0, 1)
	if err != nil || len(ops) != 1 || ops[0].Kind != "prune_cache" || ops[0].Status != store.OpSucceeded ||
		ops[0].Agent != "fake" || string(ops[0].Result) != `{"bytes_after":0,"bytes_before":0}` {
		t.Errorf("audit %+v, %v; want a succeeded prune_cache by fake with its sizes", ops, err)
	}
}
