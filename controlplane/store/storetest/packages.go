package storetest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// LockOf is a uv.lock whose project depends on direct and which locks every "name==version"
// of direct and indirect: enough of uv's format for the package index.
func LockOf(direct []string, indirect ...string) string {
	var b strings.Builder
	b.WriteString("version = 1\nrevision = 3\nrequires-python = \"==3.11.*\"\n\n")
	b.WriteString("[[package]]\nname = \"envfabric-env-0123456789abcdef0123456789abcdef\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\ndependencies = [\n")
	for _, d := range direct {
		name, _, _ := strings.Cut(d, "==")
		fmt.Fprintf(&b, "    { name = %q },\n", name)
	}
	b.WriteString("]\n")
	for _, p := range append(append([]string{}, direct...), indirect...) {
		name, version, _ := strings.Cut(p, "==")
		fmt.Fprintf(&b, "\n[[package]]\nname = %q\nversion = %q\nsource = { registry = \"http://127.0.0.1:1/simple\" }\n", name, version)
	}
	return b.String()
}

func commitLock(t *testing.T, s store.Store, key envid.Key, base int64, lock string, now time.Time) int64 {
	t.Helper()
	if base == 0 {
		createEnv(t, s, key, now)
	}
	l := lease(t, s, key, store.LeaseChange, now)
	defer s.ReleaseLease(t.Context(), l.ID)
	return must(s.CommitRevision(t.Context(), store.Commit{Key: key, LeaseID: l.ID, Base: base, Now: now,
		PyprojectTOML: "pyproject", UvLock: lock, State: store.StateActive}))(t)
}

// testPackageIndex: committing a revision indexes its lock once per distinct content; the index
// follows each environment's current revision and its deletion.
func testPackageIndex(t *testing.T, s store.Store) {
	ctx := t.Context()
	lock1 := LockOf([]string{"idna==3.6", "Requests==2.31.0"}, "urllib3==2.2.1", "certifi==2024.2.2")
	lock2 := LockOf([]string{"idna==3.7"}, "numpy==1.26.4", "numpy==2.0.0")
	keys := []envid.Key{keyA, keyB, keyC}
	for _, k := range keys {
		commitLock(t, s, k, 0, lock1, at(0))
	}
	commitLock(t, s, keyB, 1, lock2, at(time.Second)) // keyB moves to lock2

	d1, d2 := store.Digest(lock1), store.Digest(lock2)
	rows := must(s.PackageLocks(ctx, []string{"requests", "numpy"}))(t)
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprintf("%s %s %s %v", r.Name, r.Version, map[string]string{d1: "lock1", d2: "lock2"}[r.LockDigest], r.Direct))
	}
	sort.Strings(got)
	if want := "numpy 1.26.4 lock2 false|numpy 2.0.0 lock2 false|requests 2.31.0 lock1 true"; strings.Join(got, "|") != want {
		t.Errorf("PackageLocks = %q; want %q (names normalised, direct from the root's dependencies)", strings.Join(got, "|"), want)
	}
	refs := must(s.LockRefs(ctx))(t)
	if refs[d1].Envs != 2 || refs[d2].Envs != 1 || len(refs) != 2 {
		t.Errorf("LockRefs = %v; want lock1: 2 environments, lock2: 1", refs)
	}
	// Paging by key: keyA < keyB < keyC.
	page1 := must(s.EnvsByLock(ctx, []string{d1, d2}, envid.Key{}, 2))(t)
	page2 := must(s.EnvsByLock(ctx, []string{d1, d2}, page1[len(page1)-1].Key, 2))(t)
	if len(page1) != 2 || page1[0].Key != keyA || page1[1] != (store.EnvLock{Key: keyB, LockDigest: d2}) ||
		len(page2) != 1 || page2[0] != (store.EnvLock{Key: keyC, LockDigest: d1}) {
		t.Errorf("EnvsByLock pages = %v, %v; want [A B] then [C]", page1, page2)
	}
	if only := must(s.EnvsByLock(ctx, []string{d2}, envid.Key{}, 10))(t); len(only) != 1 || only[0].Key != keyB {
		t.Errorf("EnvsByLock(lock2) = %v; want keyB only", only)
	}
	first := must(s.FirstEnvsByLock(ctx, []string{d1, d2, "no-such-lock"}, 1))(t)
	sort.Slice(first, func(i, j int) bool { return first[i].LockDigest == d1 })
	if len(first) != 2 || first[0] != (store.EnvLock{Key: keyA, LockDigest: d1}) || first[1] != (store.EnvLock{Key: keyB, LockDigest: d2}) {
		t.Errorf("FirstEnvsByLock(1 per lock) = %v; want keyA for lock1, keyB for lock2", first)
	}
	pk := must(s.EnvPackages(ctx, keyB))(t)
	if len(pk) != 3 || pk[0].Name != "idna" || pk[0].Version != "3.7" || !pk[0].Direct || pk[1].Name != "numpy" {
		t.Errorf("EnvPackages(keyB) = %+v; want idna 3.7 (direct), numpy 1.26.4, numpy 2.0.0", pk)
	}
	_, err := s.EnvPackages(ctx, envid.Key{WorkflowID: "no", NodeID: "such", VersionID: "env"})
	wantErr(t, "EnvPackages of a missing environment", err, store.ErrNotFound)

	// A deleted environment leaves the index of current environments.
	l := lease(t, s, keyC, store.LeaseDelete, now()) // DeleteEnv fences on the wall clock
	if err := s.DeleteEnv(ctx, keyC, l.ID); err != nil {
		t.Fatal(err)
	}
	after := must(s.LockRefs(ctx))(t)
	if after[d1].Envs != 1 || after[d1].Generation <= refs[d1].Generation || after[d2] != refs[d2] {
		t.Errorf("after deleting keyC: lock1 %+v (was %+v), lock2 %+v (was %+v); want lock1 at 1 environment in a later generation, lock2 unchanged",
			after[d1], refs[d1], after[d2], refs[d2])
	}
	if n := must(s.IndexLocks(ctx, 0))(t); n != 0 {
		t.Errorf("IndexLocks found %d locks to index; want 0 (commits index their locks)", n)
	}
	// A lock that does not parse is indexed with no packages; the commit goes through.
	commitLock(t, s, keyA, 1, "not [toml", at(3*time.Second))
	if pk := must(s.EnvPackages(ctx, keyA))(t); len(pk) != 0 {
		t.Errorf("packages of an unparsable lock = %v; want none", pk)
	}
	if refs := must(s.LockRefs(ctx))(t); refs[d1].Envs != 0 || refs[store.Digest("not [toml")].Envs != 1 {
		t.Errorf("after keyA moved to another lock: %v; want lock1 without environments (left out)", refs)
	}
}
