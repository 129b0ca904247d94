package storetest

import (
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// testBuildCurrentEnvs: a build's CurrentEnvs follows the commits that move environments onto
// and off it (a new revision, the same files installed as another build) and the deletes.
func testBuildCurrentEnvs(t *testing.T, s store.Store) {
	ctx := t.Context()
	recordBuild(t, s, "b1", at(0))
	recordBuild(t, s, "b2", at(0))
	leases := map[envid.Key]string{}
	revs := map[envid.Key]int64{}
	commit := func(k envid.Key, files, build string) {
		t.Helper()
		rev, err := s.CommitRevision(ctx, store.Commit{Key: k, LeaseID: leases[k], Base: revs[k], Now: at(time.Second),
			PyprojectTOML: "p " + files, UvLock: "l " + files, BuildID: build, State: store.StateActive})
		if err != nil {
			t.Fatal(err)
		}
		revs[k] = rev
	}
	for _, k := range []envid.Key{keyA, keyB, keyC} {
		createEnv(t, s, k, at(0))
		leases[k] = lease(t, s, k, store.LeaseChange, at(0)).ID
		commit(k, "one", "b1")
	}
	counts := func(step string, b1, b2 int) {
		t.Helper()
		for id, want := range map[string]int{"b1": b1, "b2": b2} {
			if b := must(s.GetBuild(ctx, id))(t); b.CurrentEnvs != want {
				t.Errorf("after %s: %s has %d current environments; want %d", step, id, b.CurrentEnvs, want)
			}
		}
		listed := map[string]int{}
		for _, b := range must(s.ListBuilds(ctx, store.BuildFilter{}))(t) {
			listed[b.ID] = b.CurrentEnvs
		}
		if listed["b1"] != b1 || listed["b2"] != b2 {
			t.Errorf("after %s: ListBuilds counts %v; want b1 %d, b2 %d", step, listed, b1, b2)
		}
	}
	counts("three creates", 3, 0)
	commit(keyA, "two", "b2")
	counts("a new revision on b2", 2, 1)
	commit(keyB, "one", "b2")
	counts("the same files installed as b2", 1, 2)
	s.ReleaseLease(ctx, leases[keyA])
	if err := s.DeleteEnv(ctx, keyA, lease(t, s, keyA, store.LeaseChange, now()).ID); err != nil {
		t.Fatal(err)
	}
	counts("a delete", 1, 1)
}
