package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// recordBuild records a ready build with id at now.
func recordBuild(t *testing.T, s store.Store, id string, now time.Time) {
	t.Helper()
	b := store.Build{ID: id, PythonPath: "/py/3.11", PythonFullVersion: "3.11.9", LockDigest: store.Digest("lock " + id),
		State: store.BuildReady, PackagesInstalled: 3, Bytes: 4096}
	if err := s.RecordBuild(t.Context(), b, now); err != nil {
		t.Fatal(err)
	}
}

// commitEnv creates key (if new) and commits files with build under a fresh change lease on base.
func commitEnv(t *testing.T, s store.Store, key envid.Key, base int64, files, build string, now time.Time) int64 {
	t.Helper()
	if base == 0 {
		createEnv(t, s, key, now)
	}
	l := lease(t, s, key, store.LeaseChange, now)
	defer s.ReleaseLease(t.Context(), l.ID)
	return must(s.CommitRevision(t.Context(), store.Commit{Key: key, LeaseID: l.ID, Base: base, Now: now,
		PyprojectTOML: "pyproject " + files, UvLock: "lock " + files, BuildID: build, State: store.StateActive}))(t)
}

func testRecordBuild(t *testing.T, s store.Store) {
	ctx := t.Context()
	b := store.Build{ID: "b1", PythonPath: "/py/3.11", PythonFullVersion: "3.11.9", LockDigest: store.Digest("l"),
		State: store.BuildReady, PackagesInstalled: 12, Bytes: 1 << 20}
	if err := s.RecordBuild(ctx, b, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := must(s.GetBuild(ctx, "b1"))(t)
	sameTime(t, "created_at", got.CreatedAt, at(time.Minute))
	sameTime(t, "last_used_at", got.LastUsedAt, at(time.Minute))
	want := b
	want.CreatedAt, want.LastUsedAt = got.CreatedAt, got.LastUsedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}

	// Recorded again (materialised afresh): the new facts, created_at kept, last use only forward.
	b.State, b.Bytes, b.LastUsedAt = store.BuildDamaged, 10, at(time.Second)
	if err := s.RecordBuild(ctx, b, at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got = must(s.GetBuild(ctx, "b1"))(t)
	if got.State != store.BuildDamaged || got.Bytes != 10 {
		t.Errorf("after the update: %+v; want DAMAGED, 10 bytes", got)
	}
	sameTime(t, "created_at kept", got.CreatedAt, at(time.Minute))
	sameTime(t, "last_used_at not moved back", got.LastUsedAt, at(time.Minute))

	_, err := s.GetBuild(ctx, "b2")
	wantErr(t, "GetBuild(missing)", err, store.ErrNotFound)
	for _, bad := range []store.Build{{ID: "b3", State: "GONE"}, {ID: "", State: store.BuildReady}} {
		if err := s.RecordBuild(ctx, bad, at(0)); err == nil {
			t.Errorf("RecordBuild(%+v) succeeded; want a refusal", bad)
		}
	}
	if _, err := s.GetBuild(ctx, "b3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused build was recorded: %v", err)
	}
}

// A commit names its build: the environment and the revision carry it, an unrecorded one is
// refused and changes nothing, and the same files installed as another build keep the revision.
func testCommitBuild(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: "x", PyprojectTOML: "p", UvLock: "l", BuildID: "b1"})
	wantErr(t, "commit without a lease", err, store.ErrLeaseLost) // the fence comes first
	createEnv(t, s, keyA, at(0))
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	commit := func(base int64, files, build string, now time.Time) (int64, error) {
		return s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Base: base, Now: now,
			PyprojectTOML: "p " + files, UvLock: "l " + files, BuildID: build, State: store.StateActive})
	}
	_, err = commit(0, "one", "b1", at(time.Second))
	wantErr(t, "commit of an unrecorded build", err, store.ErrUnknownBuild)
	if e := getEnv(t, s, keyA); e.Revision != 0 || e.BuildID != "" || e.State != store.StateCreating {
		t.Errorf("env after the refused commit = %+v; want it untouched", e)
	}

	recordBuild(t, s, "b1", at(0))
	recordBuild(t, s, "b2", at(0))
	type want struct {
		rev, disk int64
		build     string
	}
	steps := []struct {
		name  string
		do    func() error
		files string
		want  want
	}{
		{"create", func() error { _, err := commit(0, "one", "b1", at(time.Second)); return err }, "one", want{1, 0, "b1"}},
		{"switched", func() error { return s.MarkOnDisk(ctx, keyA, 1, at(2*time.Second)) }, "one", want{1, 1, "b1"}},
		{"mark past the revision is ignored", func() error { return s.MarkOnDisk(ctx, keyA, 5, at(2*time.Second)) }, "one", want{1, 1, "b1"}},
		{"add", func() error { _, err := commit(1, "two", "b2", at(3*time.Second)); return err }, "two", want{2, 1, "b2"}},
		{"switched again", func() error { return s.MarkOnDisk(ctx, keyA, 2, at(4*time.Second)) }, "two", want{2, 2, "b2"}},
		{"mark backwards is ignored", func() error { return s.MarkOnDisk(ctx, keyA, 1, at(4*time.Second)) }, "two", want{2, 2, "b2"}},
		// The same files as another build (an interpreter upgraded in place): the revision
		// stays, its build changes, and the directory is behind until switched.
		{"same files, new build", func() error { _, err := commit(2, "two", "b1", at(5*time.Second)); return err }, "two", want{2, 1, "b1"}},
		{"rollback to the first files", func() error { _, err := commit(2, "one", "b1", at(6*time.Second)); return err }, "one", want{3, 1, "b1"}},
		// Without a build (the layout before builds): installed in place, on disk at once.
		{"in place", func() error { _, err := commit(3, "three", "", at(7*time.Second)); return err }, "three", want{4, 4, ""}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.do(); err != nil {
				t.Fatal(err)
			}
			e := getEnv(t, s, keyA)
			if got := (want{e.Revision, e.DiskRevision, e.BuildID}); got != st.want {
				t.Errorf("env revision, disk revision, build = %+v; want %+v", got, st.want)
			}
			r := must(s.GetRevision(ctx, keyA, 0))(t)
			if r.Number != st.want.rev || r.BuildID != st.want.build || r.PyprojectTOML != "p "+st.files || r.UvLock != "l "+st.files {
				t.Errorf("current revision = %+v; want %d, build %q, files %q", r, st.want.rev, st.want.build, st.files)
			}
		})
	}
	// History keeps each revision's build: revision 1 was b1, revision 2 is b1 now (same files
	// reinstalled), revision 3 (the rollback) shares it.
	for n, build := range map[int64]string{1: "b1", 2: "b1", 3: "b1", 4: ""} {
		if r := must(s.GetRevision(ctx, keyA, n))(t); r.BuildID != build {
			t.Errorf("revision %d build %q; want %q", n, r.BuildID, build)
		}
	}
	wantErr(t, "MarkOnDisk(missing)", s.MarkOnDisk(ctx, keyB, 1, at(0)), store.ErrNotFound)
}

// Environments follow their build's state: removed, they hibernate (unless mid-change or
// failed); recorded or set ready again, they wake. A commit onto a build removed meanwhile
// leaves its environment hibernated rather than active on a build that is gone.
func testBuildStates(t *testing.T, s store.Store) {
	ctx := t.Context()
	recordBuild(t, s, "shared", at(0))
	recordBuild(t, s, "other", at(0))
	keys := map[string]envid.Key{}
	for _, name := range []string{"active", "idle", "syncing", "error", "elsewhere"} {
		k := envid.Key{WorkflowID: "states", NodeID: name, VersionID: "v1"}
		keys[name] = k
		build := "shared"
		if name == "elsewhere" {
			build = "other"
		}
		commitEnv(t, s, k, 0, "f", build, at(0))
		if name != "active" && name != "elsewhere" {
			if err := s.SetState(ctx, k, map[string]string{"idle": store.StateIdle, "syncing": store.StateSyncing,
				"error": store.StateError}[name], "", at(time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	states := func() map[string]string {
		out := map[string]string{}
		for name, k := range keys {
			out[name] = getEnv(t, s, k).State
		}
		return out
	}
	hibernated := map[string]string{"active": store.StateHibernated, "idle": store.StateHibernated,
		"syncing": store.StateSyncing, "error": store.StateError, "elsewhere": store.StateActive}
	awake := map[string]string{"active": store.StateActive, "idle": store.StateActive,
		"syncing": store.StateSyncing, "error": store.StateError, "elsewhere": store.StateActive}
	steps := []struct {
		name string
		do   func() error
		want map[string]string
	}{
		{"removed", func() error { return s.SetBuildState(ctx, "shared", store.BuildRemoved, at(time.Minute)) }, hibernated},
		{"ready again", func() error { return s.SetBuildState(ctx, "shared", store.BuildReady, at(2*time.Minute)) }, awake},
		{"removed again", func() error { return s.SetBuildState(ctx, "shared", store.BuildRemoved, at(3*time.Minute)) }, hibernated},
		{"materialised again", func() error {
			return s.RecordBuild(ctx, store.Build{ID: "shared", State: store.BuildReady}, at(4*time.Minute))
		}, awake},
		{"damaged", func() error { return s.SetBuildState(ctx, "shared", store.BuildDamaged, at(5*time.Minute)) }, awake},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.do(); err != nil {
				t.Fatal(err)
			}
			if got := states(); !reflect.DeepEqual(got, st.want) {
				t.Errorf("states = %v; want %v", got, st.want)
			}
			if b := must(s.GetBuild(ctx, "shared"))(t); b.CurrentEnvs != 4 {
				t.Errorf("build shared: %d current environments; want 4", b.CurrentEnvs)
			}
		})
	}
	sameTime(t, "a hibernated environment's updated_at", getEnv(t, s, keys["active"]).UpdatedAt, at(4*time.Minute))
	counts := must(s.CountEnvs(ctx))(t)
	if err := s.SetBuildState(ctx, "shared", store.BuildRemoved, at(6*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if after := must(s.CountEnvs(ctx))(t); after[store.StateHibernated] != 2 || after[store.StateActive] != counts[store.StateActive]-2 {
		t.Errorf("CountEnvs = %v (before %v); want 2 HIBERNATED", after, counts)
	}

	// The build is removed while a change onto it is on its way: the commit records the
	// environment hibernated, and the next run wakes it.
	k := envid.Key{WorkflowID: "states", NodeID: "late", VersionID: "v1"}
	commitEnv(t, s, k, 0, "g", "other", at(0))
	commitEnv(t, s, k, 1, "f", "shared", at(7*time.Minute))
	if e := getEnv(t, s, k); e.State != store.StateHibernated || e.BuildID != "shared" {
		t.Errorf("env committed onto a removed build = %+v; want HIBERNATED on shared", e)
	}

	wantErr(t, "SetBuildState(missing)", s.SetBuildState(ctx, "nope", store.BuildRemoved, at(0)), store.ErrNotFound)
	if err := s.SetBuildState(ctx, "shared", "GONE", at(0)); err == nil {
		t.Error("SetBuildState to an unknown state succeeded")
	}
}

func testListBuilds(t *testing.T, s store.Store) {
	ctx := t.Context()
	// b-old used at 1h, b-mid at 2h, b-new at 3h; b-mid is removed; b-old and b-new are some
	// environment's current build, b-mid only an old revision's.
	for i, id := range []string{"b-old", "b-mid", "b-new"} {
		recordBuild(t, s, id, at(time.Duration(i+1)*time.Hour))
	}
	commitEnv(t, s, keyA, 0, "one", "b-mid", at(0))
	commitEnv(t, s, keyA, 1, "two", "b-old", at(time.Second))
	commitEnv(t, s, keyB, 0, "three", "b-new", at(0))
	envC := envid.Key{WorkflowID: "wf3", NodeID: "n", VersionID: "v"}
	commitEnv(t, s, envC, 0, "three", "b-new", at(0))
	if err := s.SetBuildState(ctx, "b-mid", store.BuildRemoved, at(4*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := must(s.CountBuilds(ctx))(t), map[string]int{store.BuildReady: 2, store.BuildRemoved: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("CountBuilds: %v; want %v", got, want)
	}
	tests := []struct {
		name string
		f    store.BuildFilter
		want []string
	}{
		{"all, least recently used first", store.BuildFilter{}, []string{"b-old", "b-mid", "b-new"}},
		{"ready", store.BuildFilter{State: store.BuildReady}, []string{"b-old", "b-new"}},
		{"removed", store.BuildFilter{State: store.BuildRemoved}, []string{"b-mid"}},
		{"unreferenced", store.BuildFilter{Unreferenced: true}, []string{"b-mid"}},
		{"ready and unreferenced", store.BuildFilter{State: store.BuildReady, Unreferenced: true}, nil},
		{"on disk", store.BuildFilter{OnDisk: true}, []string{"b-old", "b-new"}},
		{"on disk and unreferenced", store.BuildFilter{OnDisk: true, Unreferenced: true}, nil},
		{"unused before 2h30", store.BuildFilter{UnusedBefore: at(150 * time.Minute)}, []string{"b-old", "b-mid"}},
		{"ready, unused before 2h30", store.BuildFilter{State: store.BuildReady, UnusedBefore: at(150 * time.Minute)}, []string{"b-old"}},
		{"limit", store.BuildFilter{Limit: 2}, []string{"b-old", "b-mid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, b := range must(s.ListBuilds(ctx, tt.f))(t) {
				got = append(got, b.ID)
				want := map[string]int{"b-old": 1, "b-mid": 0, "b-new": 2}[b.ID]
				if b.CurrentEnvs != want {
					t.Errorf("%s: %d current environments; want %d", b.ID, b.CurrentEnvs, want)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

// A run touches its environment and the environment's current build, which hibernation goes by.
func testTouchBuild(t *testing.T, s store.Store) {
	ctx := t.Context()
	recordBuild(t, s, "b1", at(0))
	recordBuild(t, s, "b2", at(0))
	commitEnv(t, s, keyA, 0, "one", "b1", at(0))
	commitEnv(t, s, keyB, 0, "two", "", at(0)) // the layout before builds: no build to touch
	for _, k := range []envid.Key{keyA, keyB} {
		if err := s.Touch(ctx, k, at(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Touch(ctx, keyA, at(time.Minute)); err != nil { // backwards: ignored
		t.Fatal(err)
	}
	sameTime(t, "b1 last used", must(s.GetBuild(ctx, "b1"))(t).LastUsedAt, at(time.Hour))
	sameTime(t, "b2 last used", must(s.GetBuild(ctx, "b2"))(t).LastUsedAt, at(0))
	sameTime(t, "env last used", getEnv(t, s, keyA).LastUsedAt, at(time.Hour))
}

// The maintenance pass switches directories behind their revision: not while a change or a
// delete holds the environment (a run does not stand in the way), not within the grace period.
func testEnvsBehindDisk(t *testing.T, s store.Store) {
	ctx := t.Context()
	recordBuild(t, s, "b", at(0))
	type env struct {
		name    string
		updated time.Duration
		mark    bool // switched (MarkOnDisk)
		lease   store.LeaseMode
	}
	envs := []env{
		{"behind", 2 * time.Minute, false, ""},
		{"older", time.Minute, false, ""},
		{"switched", time.Minute, true, ""},
		{"running", 3 * time.Minute, false, store.LeaseRun},
		{"changing", time.Minute, false, store.LeaseChange},
		{"deleting", time.Minute, false, store.LeaseDelete},
		{"recent", 20 * time.Minute, false, ""},
	}
	for _, e := range envs {
		k := envid.Key{WorkflowID: "disk", NodeID: e.name, VersionID: "v1"}
		commitEnv(t, s, k, 0, "f", "b", at(e.updated))
		if e.mark {
			if err := s.MarkOnDisk(ctx, k, 1, at(e.updated)); err != nil {
				t.Fatal(err)
			}
		}
		if e.lease != "" {
			must(s.AcquireLease(ctx, store.LeaseRequest{Key: k, Mode: e.lease, Holder: "cp-1", TTL: time.Hour, Now: at(0)}))(t)
		}
	}
	tests := []struct {
		name  string
		limit int
		want  []string
	}{
		{"all, least recently updated first", 0, []string{"older", "behind", "running"}},
		{"limit", 1, []string{"older"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range must(s.EnvsBehindDisk(ctx, at(10*time.Minute), at(10*time.Minute), tt.limit))(t) {
				got = append(got, e.Key.NodeID)
				if e.DiskRevision >= e.Revision {
					t.Errorf("%s: disk revision %d, revision %d; want behind", e.Key, e.DiskRevision, e.Revision)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

// Environments with the same files share their contents, and each still reads its own texts
// back; deleting one leaves the others' intact.
func testSharedContents(t *testing.T, s store.Store) {
	ctx := t.Context()
	recordBuild(t, s, "b", at(0))
	var keys []envid.Key
	for i := range 5 {
		k := envid.Key{WorkflowID: "shared", NodeID: fmt.Sprint("n", i), VersionID: "v1"}
		keys = append(keys, k)
		commitEnv(t, s, k, 0, "same", "b", at(0))
	}
	// One of them moves on and back: its revision 3 has the same files as revision 1.
	commitEnv(t, s, keys[0], 1, "other", "b", at(time.Second))
	commitEnv(t, s, keys[0], 2, "same", "b", at(2*time.Second))
	for _, k := range keys[:2] {
		l := lease(t, s, k, store.LeaseDelete, now())
		if err := s.DeleteEnv(ctx, k, l.ID); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys[2:] {
		r := must(s.GetRevision(ctx, k, 1))(t)
		if r.PyprojectTOML != "pyproject same" || r.UvLock != "lock same" {
			t.Errorf("%s: revision 1 = %q, %q; want the shared files", k, r.PyprojectTOML, r.UvLock)
		}
	}
	// The files the deleted ones alone had can be committed again.
	k := envid.Key{WorkflowID: "shared", NodeID: "again", VersionID: "v1"}
	commitEnv(t, s, k, 0, "other", "b", at(3*time.Second))
	if r := must(s.GetRevision(ctx, k, 0))(t); r.UvLock != "lock other" {
		t.Errorf("revision of re-added files = %+v", r)
	}
}
