package envs_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// TestHibernation: a build unused for HIBERNATE_AFTER is removed and its environment shows
// HIBERNATED, unless a run holds it (the agent says in_use): then it stays READY and the next
// pass tries again. A run of the hibernated environment wakes it.
func TestHibernation(t *testing.T) {
	c := &clock{}
	agent := &fakeAgent{}
	_, st := newService(t, agent, c)
	svc := envs.New(st, envs.One(agent), nil, envs.Options{
		Instance: "test", DefaultPython: "3.11", DefaultTimeout: time.Second, MaxTimeout: time.Minute,
		MaxOutputBytes: 1 << 20, LeaseTTL: 300 * time.Millisecond, CleanupIdle: time.Hour, Now: c.now,
		HibernateAfter: time.Hour,
	}, slog.New(slog.DiscardHandler))
	created, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.Hibernate(t.Context()); len(got) != 0 {
		t.Fatalf("a build used a moment ago was hibernated: %+v", got)
	}
	c.advance(2 * time.Hour)
	agent.inUse.Store(true)
	if got := svc.Hibernate(t.Context()); len(got) != 0 {
		t.Errorf("a build a run holds was hibernated: %+v", got)
	}
	if b, err := st.GetBuild(t.Context(), created.BuildID); err != nil || b.State != store.BuildReady {
		t.Errorf("the build in use: %+v, %v; want READY", b, err)
	}
	agent.inUse.Store(false)
	if got := svc.Hibernate(t.Context()); len(got) != 1 || got[0].BuildID != created.BuildID {
		t.Errorf("hibernated %+v; want the unused build", got)
	}
	if env, err := st.GetEnv(t.Context(), key); err != nil || env.State != store.StateHibernated {
		t.Errorf("environment %+v, %v; want HIBERNATED", env, err)
	}
	ops, _ := st.ListOperations(t.Context(), envid.Key{WorkflowID: "_fabric", NodeID: "builds", VersionID: created.BuildID}, 0, 10)
	if len(ops) != 2 || ops[0].Kind != "remove_build" || ops[0].Status != store.OpSucceeded {
		t.Errorf("audit of the removals: %+v; want two remove_build rows", ops)
	}
}

// TestVerifyBuilds: the verifier checks each distinct current build once per pass, a few at a
// time, and records a damaged one DAMAGED.
func TestVerifyBuilds(t *testing.T) {
	agent := &fakeAgent{}
	svc, st := newService(t, agent, &clock{})
	var id string
	for _, node := range []string{"a", "b", "c"} {
		res, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: envid.Key{WorkflowID: "wf", NodeID: node, VersionID: "v1"}})
		if err != nil {
			t.Fatal(err)
		}
		id = res.BuildID // the same lock: one build for all three
	}
	agent.mu.Lock()
	agent.check = &envs.BuildCheck{BuildID: id, Complete: true, Intact: false, Damaged: []envs.PackageDamage{{Name: "delta", MissingCount: 3}}}
	agent.mu.Unlock()
	got := svc.VerifyBuilds(t.Context(), 4)
	if len(got) != 1 || got[0].Intact || !slices.Equal(got[0].Damaged, []string{"delta"}) {
		t.Errorf("verified %+v; want the one shared build, damaged in delta", got)
	}
	if n := len(slices.DeleteFunc(agent.Calls(), func(c string) bool { return c != "verify "+id })); n != 1 {
		t.Errorf("the shared build was verified %d times; want once", n)
	}
	if b, err := st.GetBuild(t.Context(), id); err != nil || b.State != store.BuildDamaged {
		t.Errorf("build %+v, %v; want DAMAGED", b, err)
	}
}

// TestDiskBudget: beyond DISK_BUDGET_BYTES the least recently used builds are hibernated first,
// until the rest fits.
func TestDiskBudget(t *testing.T) {
	c := &clock{}
	agent := &fakeAgent{lock: func(_ context.Context, r envs.LockRequest) (envs.Locked, error) {
		return envs.Locked{Files: envs.Files{PyprojectTOML: r.Base.PyprojectTOML, UvLock: r.Base.UvLock + "# " + strings.Join(r.Packages, " ") + "\n"}}, nil
	}}
	_, st := newService(t, agent, c)
	svc := envs.New(st, envs.One(agent), nil, envs.Options{
		Instance: "test", DefaultPython: "3.11", DefaultTimeout: time.Second, MaxTimeout: time.Minute,
		MaxOutputBytes: 1 << 20, LeaseTTL: 300 * time.Millisecond, CleanupIdle: time.Hour, Now: c.now,
		DiskBudgetBytes: 2500, // the fake builds hold 1000 bytes each
	}, slog.New(slog.DiscardHandler))
	var ids []string
	for _, node := range []string{"old", "mid", "new"} {
		k := envid.Key{WorkflowID: "wf", NodeID: node, VersionID: "v1"}
		if _, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: k}); err != nil {
			t.Fatal(err)
		}
		// A lock of its own, so a build of its own.
		res, err := svc.Mutate(t.Context(), envs.Caller{}, k, envs.Add, []string{node}, false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.BuildID)
		c.advance(time.Minute)
		if err := st.Touch(t.Context(), k, c.now()); err != nil {
			t.Fatal(err)
		}
	}
	// Four builds (the shared first one, unused now, and three) hold 4000 bytes: two must go.
	got := svc.Hibernate(t.Context())
	var removed []string
	for _, e := range got {
		removed = append(removed, e.BuildID)
	}
	if len(removed) != 2 || slices.Contains(removed, ids[2]) || !slices.Contains(removed, ids[0]) {
		t.Errorf("removed %v; want two, the least recently used %s among them and not the newest %s", removed, ids[0], ids[2])
	}
	if env, _ := st.GetEnv(t.Context(), envid.Key{WorkflowID: "wf", NodeID: "old", VersionID: "v1"}); env.State != store.StateHibernated {
		t.Errorf("the least recently used environment is %s; want HIBERNATED", env.State)
	}
}
