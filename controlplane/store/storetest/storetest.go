// Package storetest is the behavioural test suite every store.Store implementation runs, so that
// the SQLite and PostgreSQL stores keep exactly the same contract.
package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// Run runs the suite. open returns a fresh, empty store for one test and arranges its Close.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"Operations", testOperations},
		{"ListOperations", testListOperations},
		{"ListOperationsOfKind", testListOperationsOfKind},
		{"AbandonOperations", testAbandonOperations},
		{"LeaseConflicts", testLeaseConflicts},
		{"LockedError", testLockedError},
		{"LockedErrorPrefersChange", testLockedErrorPrefersChange},
		{"LeaseExpiry", testLeaseExpiry},
		{"RenewLease", testRenewLease},
		{"ReleaseLease", testReleaseLease},
		{"ListLeases", testListLeases},
		{"LeaseRace", testLeaseRace},
		{"CreateEnv", testCreateEnv},
		{"CreateEnvAbandoned", testCreateEnvAbandoned},
		{"ListEnvs", testListEnvs},
		{"SetState", testSetState},
		{"Touch", testTouch},
		{"SetPreload", testSetPreload},
		{"CommitRevision", testCommitRevision},
		{"CommitRevisionFenced", testCommitRevisionFenced},
		{"CommitRevisionStaleBase", testCommitRevisionStaleBase},
		{"CommitRevisionRace", testCommitRevisionRace},
		{"CreateEnvRace", testCreateEnvRace},
		{"GetRevision", testGetRevision},
		{"DeleteEnv", testDeleteEnv},
		{"IdleEnvs", testIdleEnvs},
		{"IdleEnvsAfter", testIdleEnvsAfter},
		{"CleanupCursor", testCleanupCursor},
		{"BuildCurrentEnvs", testBuildCurrentEnvs},
		{"CountEnvsAndLeases", testCounts},
		{"AdoptSetting", testAdoptSetting},
		{"Leadership", testLeadership},
		{"ProbeWrite", testProbeWrite},
		{"AbandonStaleOperations", testAbandonStaleOperations},
		{"AbandonCommittedOperation", testAbandonCommittedOperation},
		{"EnvsToRepair", testEnvsToRepair},
		{"RecordBuild", testRecordBuild},
		{"CommitBuild", testCommitBuild},
		{"BuildStates", testBuildStates},
		{"ListBuilds", testListBuilds},
		{"TouchBuild", testTouchBuild},
		{"EnvsBehindDisk", testEnvsBehindDisk},
		{"SharedContents", testSharedContents},
		{"PackageIndex", testPackageIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// t0 is the suite's simulated clock; every time is on a millisecond, the precision both stores keep.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 8e6, time.UTC)

var (
	keyA = envid.Key{WorkflowID: "wf1", NodeID: "node1", VersionID: "v1"}
	keyB = envid.Key{WorkflowID: "wf1", NodeID: "node2", VersionID: "v1"}
	keyC = envid.Key{WorkflowID: "wf2", NodeID: "node1", VersionID: "v1"}
)

const ttl = time.Minute

func at(d time.Duration) time.Time { return t0.Add(d) }

// now is the wall clock on a millisecond, for DeleteEnv, which fences against the wall clock.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("%s = %v; want %v in UTC", what, got, want)
	}
}

func sameJSON(t *testing.T, what string, got, want json.RawMessage) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("%s = %s; want nil", what, got)
		}
		return
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s = %q: %v", what, got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %s; want %s", what, got, want)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v; want %v", what, err, want)
	}
}

// must fails the test on err, else returns v: must(s.GetEnv(ctx, key))(t).
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func lease(t *testing.T, s store.Store, key envid.Key, mode store.LeaseMode, now time.Time) store.Lease {
	t.Helper()
	return must(s.AcquireLease(t.Context(), store.LeaseRequest{
		Key: key, Mode: mode, Holder: "cp-1", Operation: "update", OperationID: 7, TTL: ttl, Now: now,
	}))(t)
}

func createEnv(t *testing.T, s store.Store, key envid.Key, now time.Time) {
	t.Helper()
	env := store.Env{Key: key, State: store.StateCreating, PythonVersion: "3.11", EnvPath: "/envs/" + key.String()}
	if err := s.CreateEnv(t.Context(), env, now); err != nil {
		t.Fatal(err)
	}
}

func getEnv(t *testing.T, s store.Store, key envid.Key) store.Env {
	t.Helper()
	return must(s.GetEnv(t.Context(), key))(t)
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func testOperations(t *testing.T, s store.Store) {
	ctx := t.Context()
	params := json.RawMessage(`{"packages": ["numpy==1.24.0"], "n": 2}`)
	id := must(s.BeginOperation(ctx, store.Operation{
		Key: keyA, Kind: "add", Actor: "alice", RequestID: "req-1", Params: params, StartedAt: at(0),
	}))(t)
	op := must(s.GetOperation(ctx, id))(t)
	want := store.Operation{ID: id, Key: keyA, Kind: "add", Status: store.OpRunning, Actor: "alice", RequestID: "req-1"}
	sameJSON(t, "params", op.Params, params)
	sameJSON(t, "result", op.Result, nil)
	sameTime(t, "started_at", op.StartedAt, at(0))
	if !op.FinishedAt.IsZero() {
		t.Errorf("finished_at = %v; want zero while running", op.FinishedAt)
	}
	op.Params, op.StartedAt = nil, time.Time{}
	if !reflect.DeepEqual(op, want) {
		t.Errorf("intent = %+v; want %+v", op, want)
	}

	result := json.RawMessage(`{"revision": 3}`)
	if err := s.FinishOperation(ctx, id, store.Outcome{
		Status: store.OpFailed, ErrorCode: "UV_FAILED", ErrorMessage: "no solution", Agent: "host-2",
		Result: result, FinishedAt: at(1500 * time.Millisecond), DurationMS: 1500,
	}); err != nil {
		t.Fatal(err)
	}
	op = must(s.GetOperation(ctx, id))(t)
	if op.Status != store.OpFailed || op.ErrorCode != "UV_FAILED" || op.ErrorMessage != "no solution" ||
		op.Agent != "host-2" || op.DurationMS != 1500 {
		t.Errorf("outcome = %+v", op)
	}
	sameJSON(t, "result", op.Result, result)
	sameTime(t, "finished_at", op.FinishedAt, at(1500*time.Millisecond))

	// An operation refused before any side effect is written with its status at once.
	id = must(s.BeginOperation(ctx, store.Operation{Key: keyA, Kind: "add", Status: store.OpRejected,
		ErrorCode: "ENV_LOCKED", StartedAt: at(time.Second), FinishedAt: at(time.Second)}))(t)
	op = must(s.GetOperation(ctx, id))(t)
	if op.Status != store.OpRejected || op.ErrorCode != "ENV_LOCKED" {
		t.Errorf("rejected = %+v", op)
	}
	sameJSON(t, "params", op.Params, json.RawMessage(`{}`))
	sameTime(t, "finished_at", op.FinishedAt, at(time.Second))

	_, err := s.GetOperation(ctx, id+100)
	wantErr(t, "GetOperation(missing)", err, store.ErrNotFound)
	err = s.FinishOperation(ctx, id+100, store.Outcome{Status: store.OpSucceeded})
	wantErr(t, "FinishOperation(missing)", err, store.ErrNotFound)
}

func testListOperations(t *testing.T, s store.Store) {
	ctx := t.Context()
	var ids []int64 // keyA's, oldest first
	for i := range 5 {
		ids = append(ids, must(s.BeginOperation(ctx, store.Operation{Key: keyA, Kind: "sync", StartedAt: at(0)}))(t))
		if i == 2 {
			must(s.BeginOperation(ctx, store.Operation{Key: keyB, Kind: "sync", StartedAt: at(0)}))(t)
		}
	}
	tests := []struct {
		name     string
		beforeID int64
		limit    int
		want     []int64
	}{
		{"all", 0, 0, []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"first page", 0, 2, []int64{ids[4], ids[3]}},
		{"second page", ids[3], 2, []int64{ids[2], ids[1]}},
		{"last page", ids[1], 2, []int64{ids[0]}},
		{"past the end", ids[0], 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := must(s.ListOperations(ctx, keyA, tt.beforeID, tt.limit))(t)
			var got []int64
			for _, op := range ops {
				got = append(got, op.ID)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func testListOperationsOfKind(t *testing.T, s store.Store) {
	ctx := t.Context()
	var cleanups []int64 // oldest first, across environments
	for i, k := range []envid.Key{keyA, keyB, keyA, keyB} {
		must(s.BeginOperation(ctx, store.Operation{Key: k, Kind: "sync", StartedAt: at(time.Duration(i) * time.Second)}))(t)
		cleanups = append(cleanups, must(s.BeginOperation(ctx, store.Operation{Key: k, Kind: "cleanup", StartedAt: at(time.Duration(i) * time.Second)}))(t))
	}
	tests := []struct {
		name     string
		kind     string
		beforeID int64
		limit    int
		want     []int64
	}{
		{"every environment", "cleanup", 0, 0, []int64{cleanups[3], cleanups[2], cleanups[1], cleanups[0]}},
		{"first page", "cleanup", 0, 3, []int64{cleanups[3], cleanups[2], cleanups[1]}},
		{"next page", "cleanup", cleanups[1], 3, []int64{cleanups[0]}},
		{"no such kind", "delete", 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int64
			for _, op := range must(s.ListOperationsOfKind(ctx, tt.kind, tt.beforeID, tt.limit))(t) {
				if op.Kind != tt.kind {
					t.Errorf("operation %d is %q; want %q", op.ID, op.Kind, tt.kind)
				}
				got = append(got, op.ID)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func testAbandonOperations(t *testing.T, s store.Store) {
	ctx := t.Context()
	const (
		noLease      = iota
		liveLease    // a shared lease taken at 0, live until ttl
		expiredLease // a shared lease taken at -2*ttl, expired at -ttl
		otherKeyLease
	)
	start, first := at(-2*ttl), at(30*time.Second)
	tests := []struct {
		name       string
		key        envid.Key
		status     string // the status the operation is left in before AbandonOperations
		lease      int
		except     bool
		wantClosed bool
	}{
		{"running, live lease", keyA, store.OpRunning, liveLease, false, false},
		{"running, expired lease", keyA, store.OpRunning, expiredLease, false, true},
		{"running, no lease", keyA, store.OpRunning, noLease, false, true},
		{"running, lease on another key", keyA, store.OpRunning, otherKeyLease, false, true},
		{"running, except", keyA, store.OpRunning, noLease, true, false},
		{"running, another key", keyB, store.OpRunning, noLease, false, false},
		{"succeeded", keyA, store.OpSucceeded, noLease, false, false},
		{"rejected", keyA, store.OpRejected, noLease, false, false},
	}
	ids := make([]int64, len(tests))
	var except int64
	wantN := 0
	// Live leases first: taking a lease deletes the key's leases expired by then.
	for _, pass := range []int{liveLease, expiredLease, otherKeyLease, noLease} {
		for i, tt := range tests {
			if tt.lease != pass {
				continue
			}
			ids[i] = must(s.BeginOperation(ctx, store.Operation{Key: tt.key, Kind: "sync", StartedAt: start}))(t)
			if tt.status != store.OpRunning {
				if err := s.FinishOperation(ctx, ids[i], store.Outcome{Status: tt.status, FinishedAt: at(-ttl), DurationMS: 60000}); err != nil {
					t.Fatal(err)
				}
			}
			req := store.LeaseRequest{Key: tt.key, Mode: store.LeaseRun, Holder: "cp-dead", Operation: "sync", OperationID: ids[i], TTL: ttl}
			switch tt.lease {
			case liveLease:
				req.Now = at(0)
			case expiredLease:
				req.Now = start
			case otherKeyLease:
				req.Key, req.Now = keyB, at(0)
			}
			if tt.lease != noLease {
				must(s.AcquireLease(ctx, req))(t)
			}
			if tt.except {
				except = ids[i]
			}
			if tt.wantClosed {
				wantN++
			}
		}
	}

	if n := must(s.AbandonOperations(ctx, keyA, except, first))(t); n != wantN {
		t.Errorf("closed %d operations; want %d", n, wantN)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := must(s.GetOperation(ctx, ids[i]))(t)
			switch {
			case tt.wantClosed:
				if op.Status != store.OpFailed || op.ErrorCode != store.ErrorCodeInterrupted ||
					op.ErrorMessage != store.InterruptedMessage || op.DurationMS != (first.Sub(start)).Milliseconds() {
					t.Errorf("closed operation = %+v; want failed, %s, duration %d", op, store.ErrorCodeInterrupted,
						first.Sub(start).Milliseconds())
				}
				sameTime(t, "finished_at", op.FinishedAt, first)
			case tt.status == store.OpRunning:
				if op.Status != store.OpRunning || op.ErrorCode != "" || !op.FinishedAt.IsZero() || op.DurationMS != 0 {
					t.Errorf("operation = %+v; want it left running", op)
				}
			default:
				if op.Status != tt.status || op.ErrorCode != "" || op.DurationMS != 60000 {
					t.Errorf("operation = %+v; want it left %s", op, tt.status)
				}
				sameTime(t, "finished_at", op.FinishedAt, at(-ttl))
			}
		})
	}

	// Nothing more to close at once; once the live lease has expired, its operation is closed too.
	if n := must(s.AbandonOperations(ctx, keyA, except, first))(t); n != 0 {
		t.Errorf("second pass closed %d operations; want 0", n)
	}
	if n := must(s.AbandonOperations(ctx, keyA, except, at(ttl)))(t); n != 1 {
		t.Errorf("after the live lease expired closed %d operations; want 1", n)
	}
	if op := must(s.GetOperation(ctx, ids[0]))(t); op.Status != store.OpFailed || op.ErrorCode != store.ErrorCodeInterrupted {
		t.Errorf("operation whose lease expired = %+v; want failed, %s", op, store.ErrorCodeInterrupted)
	}
	if op := must(s.GetOperation(ctx, except))(t); op.Status != store.OpRunning {
		t.Errorf("except = %+v; want it still running", op)
	}
}

// The store grants leases by store.LeaseMode.Conflicts, for every pair of modes, held by another
// holder, with an expired lease standing in the way of nothing.
func testLeaseConflicts(t *testing.T, s store.Store) {
	// The matrix the design states (docs/builds.md), written out so that a change of the rule
	// is a change of this test too.
	want := map[[2]store.LeaseMode]bool{
		{store.LeaseRun, store.LeaseRun}:       false,
		{store.LeaseRun, store.LeaseChange}:    false,
		{store.LeaseRun, store.LeaseDelete}:    true,
		{store.LeaseChange, store.LeaseRun}:    false,
		{store.LeaseChange, store.LeaseChange}: true,
		{store.LeaseChange, store.LeaseDelete}: true,
		{store.LeaseDelete, store.LeaseRun}:    true,
		{store.LeaseDelete, store.LeaseChange}: true,
		{store.LeaseDelete, store.LeaseDelete}: true,
	}
	i := 0
	for _, held := range store.LeaseModes {
		for _, req := range store.LeaseModes {
			i++
			locked, ok := want[[2]store.LeaseMode{req, held}]
			if !ok {
				t.Fatalf("no expectation for %s while %s is held", req, held)
			}
			if got := req.Conflicts(held); got != locked {
				t.Errorf("%s.Conflicts(%s) = %v; want %v", req, held, got, locked)
			}
			t.Run(fmt.Sprintf("%s while %s", req, held), func(t *testing.T) {
				key := envid.Key{WorkflowID: "conflict", NodeID: fmt.Sprint(i), VersionID: "v1"}
				first := lease(t, s, key, held, at(0))
				_, err := s.AcquireLease(t.Context(), store.LeaseRequest{
					Key: key, Mode: req, Holder: "cp-2", Operation: "run", TTL: ttl, Now: at(time.Second)})
				var le *store.LockedError
				if got := errors.As(err, &le); got != locked || (err != nil && !got) {
					t.Fatalf("got error %v; want locked %v", err, locked)
				}
				if locked && (le.Held.ID != first.ID || le.Held.Mode != held) {
					t.Errorf("held = %+v; want %+v", le.Held, first)
				}
				// Another environment is free, and so is this one once the lease expired.
				other := key
				other.VersionID = "v2"
				lease(t, s, other, req, at(time.Second))
				lease(t, s, key, req, at(ttl+time.Second))
			})
		}
	}
	_, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: keyA, Mode: "exclusive", TTL: ttl, Now: at(0)})
	if err == nil || errors.Is(err, store.ErrLocked) {
		t.Errorf("lease of an unknown mode: got %v; want a refusal", err)
	}
	if _, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: keyA, TTL: ttl, Now: at(0)}); err == nil {
		t.Error("lease without a mode granted; want a refusal")
	}
}

// A request meeting a run and a change names the change: it is what the caller waits for.
func testLockedErrorPrefersChange(t *testing.T, s store.Store) {
	lease(t, s, keyA, store.LeaseRun, at(0))
	change := lease(t, s, keyA, store.LeaseChange, at(time.Second))
	lease(t, s, keyA, store.LeaseRun, at(2*time.Second))
	_, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: keyA, Mode: store.LeaseDelete, TTL: ttl, Now: at(3 * time.Second)})
	var le *store.LockedError
	if !errors.As(err, &le) || le.Held.ID != change.ID {
		t.Errorf("got %v; want locked by the change %s", err, change.ID)
	}
}

func testLockedError(t *testing.T, s store.Store) {
	shared := lease(t, s, keyA, store.LeaseRun, at(0))
	_, err := s.AcquireLease(t.Context(), store.LeaseRequest{
		Key: keyA, Mode: store.LeaseDelete, Holder: "cp-2", Operation: "delete", OperationID: 9, TTL: ttl, Now: at(time.Second)})
	var locked *store.LockedError
	if !errors.As(err, &locked) || !errors.Is(err, store.ErrLocked) {
		t.Fatalf("got %v; want a *store.LockedError wrapping ErrLocked", err)
	}
	h := locked.Held
	if h.ID != shared.ID || h.Holder != "cp-1" || h.Operation != "update" || h.OperationID != 7 || h.Mode != store.LeaseRun || h.Key != keyA {
		t.Errorf("held = %+v; want %+v", h, shared)
	}
	sameTime(t, "held.expires_at", h.ExpiresAt, at(ttl))
}

func testLeaseExpiry(t *testing.T, s store.Store) {
	old := lease(t, s, keyA, store.LeaseChange, at(0))
	sameTime(t, "acquired_at", old.AcquiredAt, at(0))
	sameTime(t, "expires_at", old.ExpiresAt, at(ttl))
	_, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: keyA, Mode: store.LeaseChange, TTL: ttl, Now: at(ttl - time.Millisecond)})
	wantErr(t, "acquire before expiry", err, store.ErrLocked)
	l := lease(t, s, keyA, store.LeaseChange, at(ttl))
	if l.ID == old.ID {
		t.Errorf("new lease has the expired lease's id %s", l.ID)
	}
}

func testRenewLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	if err := s.RenewLease(ctx, l.ID, at(30*time.Second), ttl); err != nil {
		t.Fatal(err)
	}
	// Renewed to 90s: still blocking at 80s, where the original lease would have expired.
	_, err := s.AcquireLease(ctx, store.LeaseRequest{Key: keyA, Mode: store.LeaseChange, TTL: ttl, Now: at(80 * time.Second)})
	wantErr(t, "acquire after renewal", err, store.ErrLocked)
	leases := must(s.ListLeases(ctx, keyA, at(80*time.Second)))(t)
	if len(leases) != 1 {
		t.Fatalf("got %d leases; want 1", len(leases))
	}
	sameTime(t, "renewed expires_at", leases[0].ExpiresAt, at(90*time.Second))

	wantErr(t, "renew expired", s.RenewLease(ctx, l.ID, at(90*time.Second), ttl), store.ErrLeaseLost)

	l = lease(t, s, keyB, store.LeaseChange, at(0))
	if err := s.ReleaseLease(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "renew released", s.RenewLease(ctx, l.ID, at(time.Second), ttl), store.ErrLeaseLost)
	wantErr(t, "renew unknown", s.RenewLease(ctx, "no-such-lease", at(time.Second), ttl), store.ErrLeaseLost)
}

func testReleaseLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	for i := range 2 {
		if err := s.ReleaseLease(ctx, l.ID); err != nil {
			t.Fatalf("release #%d: %v", i+1, err)
		}
	}
	if err := s.ReleaseLease(ctx, "no-such-lease"); err != nil {
		t.Fatal(err)
	}
	lease(t, s, keyA, store.LeaseChange, at(time.Second)) // free again
}

func testListLeases(t *testing.T, s store.Store) {
	a := lease(t, s, keyA, store.LeaseRun, at(0))
	b := lease(t, s, keyA, store.LeaseRun, at(30*time.Second))
	lease(t, s, keyB, store.LeaseChange, at(0))
	tests := []struct {
		name string
		now  time.Time
		want []string
	}{
		{"both live", at(45 * time.Second), []string{a.ID, b.ID}},
		{"first expired", at(ttl), []string{b.ID}},
		{"all expired", at(2 * ttl), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, l := range must(s.ListLeases(t.Context(), keyA, tt.now))(t) {
				got = append(got, l.ID)
				if l.Key != keyA {
					t.Errorf("lease %s on %s; want %s", l.ID, l.Key, keyA)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func testLeaseRace(t *testing.T, s store.Store) {
	const n = 16
	won, refused, errs := race(n, store.ErrLocked, func(i int) error {
		_, err := s.AcquireLease(t.Context(), store.LeaseRequest{
			Key: keyA, Mode: store.LeaseChange, Holder: fmt.Sprintf("cp-%d", i), Operation: "update", TTL: ttl, Now: at(0)})
		return err
	})
	if won != 1 || refused != n-1 || len(errs) > 0 {
		t.Errorf("won %d, refused %d, errors %v; want 1 winner and %d refusals", won, refused, errs, n-1)
	}
}

// race runs fn(i) for i in [0, n) at once and counts the outcomes: nil, an error that is want, and
// the other errors.
func race(n int, want error, fn func(i int) error) (won, refused int, errs []error) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for i := range n {
		wg.Go(func() {
			err := fn(i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, want):
				refused++
			default:
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return won, refused, errs
}

func testCreateEnv(t *testing.T, s store.Store) {
	ctx := t.Context()
	env := store.Env{Key: keyA, State: store.StateCreating, PythonVersion: "3.11", PythonPath: "/usr/bin/python3.11",
		EnvPath: "/envs/wf1/node1/v1"}
	if err := s.CreateEnv(ctx, env, at(0)); err != nil {
		t.Fatal(err)
	}
	got := getEnv(t, s, keyA)
	sameTime(t, "created_at", got.CreatedAt, at(0))
	sameTime(t, "updated_at", got.UpdatedAt, at(0))
	sameTime(t, "last_used_at", got.LastUsedAt, at(0))
	got.CreatedAt, got.UpdatedAt, got.LastUsedAt = time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, env) {
		t.Errorf("got %+v; want %+v", got, env)
	}
	lease(t, s, keyA, store.LeaseChange, at(0))
	wantErr(t, "second create", s.CreateEnv(ctx, env, at(time.Second)), store.ErrExists)
	_, err := s.GetEnv(ctx, keyB)
	wantErr(t, "GetEnv(missing)", err, store.ErrNotFound)
}

func testCreateEnvAbandoned(t *testing.T, s store.Store) {
	ctx := t.Context()
	tests := []struct {
		name      string
		state     string
		liveLease bool
		wantErr   error
	}{
		{"creating, no lease: replaced", store.StateCreating, false, nil},
		{"creating, live lease", store.StateCreating, true, store.ErrExists},
		{"active, no lease", store.StateActive, false, store.ErrExists},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := envid.Key{WorkflowID: "abandoned", NodeID: fmt.Sprint(i), VersionID: "v1"}
			createEnv(t, s, key, at(0))
			if err := s.SetState(ctx, key, tt.state, "", at(0)); err != nil {
				t.Fatal(err)
			}
			if tt.liveLease {
				lease(t, s, key, store.LeaseChange, at(0))
			} else {
				lease(t, s, key, store.LeaseChange, at(-2*ttl)) // the dead creator's, expired
			}
			env := store.Env{Key: key, State: store.StateCreating, PythonVersion: "3.12"}
			err := s.CreateEnv(ctx, env, at(time.Second))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v; want %v", err, tt.wantErr)
			}
			wantPython := "3.11"
			if tt.wantErr == nil {
				wantPython = "3.12"
			}
			if got := getEnv(t, s, key).PythonVersion; got != wantPython {
				t.Errorf("python_version = %q; want %q", got, wantPython)
			}
		})
	}
}

func testListEnvs(t *testing.T, s store.Store) {
	// Byte order: upper case sorts before lower case, digits before both.
	keys := []envid.Key{
		{WorkflowID: "B", NodeID: "n", VersionID: "v1"},
		{WorkflowID: "a", NodeID: "n1", VersionID: "v1"},
		{WorkflowID: "a", NodeID: "n1", VersionID: "v2"},
		{WorkflowID: "a", NodeID: "n2", VersionID: "v1"},
		{WorkflowID: "b", NodeID: "1", VersionID: "v1"},
	}
	for i := len(keys) - 1; i >= 0; i-- {
		createEnv(t, s, keys[i], at(0))
	}
	tests := []struct {
		name string
		f    store.ListFilter
		want []envid.Key
	}{
		{"all", store.ListFilter{}, keys},
		{"limit", store.ListFilter{Limit: 2}, keys[:2]},
		{"after", store.ListFilter{After: keys[1], Limit: 2}, keys[2:4]},
		{"after the last", store.ListFilter{After: keys[4]}, nil},
		{"workflow", store.ListFilter{WorkflowID: "a"}, keys[1:4]},
		{"workflow after", store.ListFilter{WorkflowID: "a", After: keys[2]}, keys[3:4]},
		{"unknown workflow", store.ListFilter{WorkflowID: "zzz"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []envid.Key
			for _, e := range must(s.ListEnvs(t.Context(), tt.f))(t) {
				got = append(got, e.Key)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func testSetState(t *testing.T, s store.Store) {
	ctx := t.Context()
	createEnv(t, s, keyA, at(0))
	if err := s.SetState(ctx, keyA, store.StateError, "uv sync failed", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	e := getEnv(t, s, keyA)
	if e.State != store.StateError || e.LastError != "uv sync failed" {
		t.Errorf("state %q, last error %q; want ERROR, uv sync failed", e.State, e.LastError)
	}
	sameTime(t, "updated_at", e.UpdatedAt, at(time.Minute))
	if err := s.SetState(ctx, keyA, store.StateActive, "", at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if e := getEnv(t, s, keyA); e.State != store.StateActive || e.LastError != "" {
		t.Errorf("state %q, last error %q; want ACTIVE and no error", e.State, e.LastError)
	}
	wantErr(t, "SetState(missing)", s.SetState(ctx, keyB, store.StateActive, "", at(0)), store.ErrNotFound)
}

func testTouch(t *testing.T, s store.Store) {
	createEnv(t, s, keyA, at(0))
	tests := []struct {
		name  string
		touch time.Time
		want  time.Time
	}{
		{"forward", at(time.Hour), at(time.Hour)},
		{"backward is ignored", at(time.Minute), at(time.Hour)},
		{"forward again", at(2 * time.Hour), at(2 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Touch(t.Context(), keyA, tt.touch); err != nil {
				t.Fatal(err)
			}
			sameTime(t, "last_used_at", getEnv(t, s, keyA).LastUsedAt, tt.want)
		})
	}
	wantErr(t, "Touch(missing)", s.Touch(t.Context(), keyB, at(0)), store.ErrNotFound)
}

func testSetPreload(t *testing.T, s store.Store) {
	createEnv(t, s, keyA, at(0))
	if got := getEnv(t, s, keyA).Preload; len(got) != 0 {
		t.Fatalf("a new environment's preload = %q, want none", got)
	}
	tests := []struct {
		name    string
		modules []string
	}{
		{"set", []string{"numpy", "pandas.core.frame"}},
		{"replace", []string{"scipy"}},
		{"clear", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SetPreload(t.Context(), keyA, tt.modules); err != nil {
				t.Fatal(err)
			}
			if got := getEnv(t, s, keyA).Preload; !slices.Equal(got, tt.modules) {
				t.Errorf("preload = %q, want %q", got, tt.modules)
			}
		})
	}
	wantErr(t, "SetPreload(missing)", s.SetPreload(t.Context(), keyB, []string{"numpy"}), store.ErrNotFound)
}

func testCommitRevision(t *testing.T, s store.Store) {
	createEnv(t, s, keyA, at(0))
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	tests := []struct {
		name          string
		c             store.Commit
		wantRev       int64
		wantPyproject string
		wantPython    string
	}{
		{"create", store.Commit{PyprojectTOML: "p1", UvLock: "l1", OperationID: 1, State: store.StateActive,
			PythonVersion: "3.11", PythonPath: "/py/3.11", EnvPath: "/envs/a"}, 1, "p1", "/py/3.11"},
		{"add", store.Commit{PyprojectTOML: "p2", UvLock: "l2", OperationID: 2, State: store.StateActive}, 2, "p2", "/py/3.11"},
		{"lock only", store.Commit{PyprojectTOML: "p2", UvLock: "l3", OperationID: 3, State: store.StateActive}, 3, "p2", "/py/3.11"},
		{"unchanged files", store.Commit{PyprojectTOML: "p2", UvLock: "l3", OperationID: 4, State: store.StateIdle}, 3, "p2", "/py/3.11"},
		{"python moves", store.Commit{PyprojectTOML: "p4", UvLock: "l4", OperationID: 5, State: store.StateActive,
			PythonPath: "/py/3.11b"}, 4, "p4", "/py/3.11b"},
	}
	var base int64
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.Key, c.LeaseID, c.Now, c.Base = keyA, l.ID, at(time.Duration(i+1)*time.Second), base
			rev := must(s.CommitRevision(t.Context(), c))(t)
			base = rev
			if rev != tt.wantRev {
				t.Errorf("revision = %d; want %d", rev, tt.wantRev)
			}
			e := getEnv(t, s, keyA)
			if e.Revision != tt.wantRev || e.State != c.State || e.PythonPath != tt.wantPython ||
				e.PythonVersion != "3.11" || e.EnvPath != "/envs/a" {
				t.Errorf("env = %+v; want revision %d, state %s, python %s", e, tt.wantRev, c.State, tt.wantPython)
			}
			sameTime(t, "updated_at", e.UpdatedAt, c.Now)
			r := must(s.GetRevision(t.Context(), keyA, 0))(t)
			if r.Number != tt.wantRev || r.PyprojectTOML != tt.wantPyproject {
				t.Errorf("current revision %d %q; want %d %q", r.Number, r.PyprojectTOML, tt.wantRev, tt.wantPyproject)
			}
		})
	}
	_, err := s.CommitRevision(t.Context(), store.Commit{Key: keyB, LeaseID: lease(t, s, keyB, store.LeaseChange, at(0)).ID,
		Now: at(time.Second), PyprojectTOML: "p", UvLock: "l", State: store.StateActive})
	wantErr(t, "commit on a missing environment", err, store.ErrNotFound)
}

// A commit is a compare-and-set on the revision it started from: a writer whose base is no longer
// current is refused and changes nothing, so it can never publish an older base over a newer
// acknowledged revision.
func testCommitRevisionStaleBase(t *testing.T, s store.Store) {
	ctx := t.Context()
	createEnv(t, s, keyA, at(0))
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	for i, f := range []string{"one", "two"} {
		must(s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Base: int64(i), Now: at(time.Duration(i) * time.Second),
			PyprojectTOML: "p " + f, UvLock: "l " + f, State: store.StateActive}))(t)
	}
	before := getEnv(t, s, keyA)
	for _, base := range []int64{0, 1, 3} {
		t.Run(fmt.Sprint("base ", base), func(t *testing.T) {
			_, err := s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Base: base, Now: at(5 * time.Second),
				PyprojectTOML: "p stale", UvLock: "l stale", State: store.StateError})
			wantErr(t, "commit on a stale base", err, store.ErrStaleBase)
			var stale *store.StaleBaseError
			if !errors.As(err, &stale) || stale.Base != base || stale.Current != 2 {
				t.Errorf("error = %v; want a *StaleBaseError with base %d, current 2", err, base)
			}
			if after := getEnv(t, s, keyA); !reflect.DeepEqual(after, before) {
				t.Errorf("env changed to %+v; want %+v", after, before)
			}
			if r := must(s.GetRevision(ctx, keyA, 0))(t); r.Number != 2 || r.PyprojectTOML != "p two" {
				t.Errorf("current revision %d %q; want 2 %q", r.Number, r.PyprojectTOML, "p two")
			}
		})
	}
}

// Writers racing to commit on the same base: exactly one publishes, every other is told its base
// is stale, and the environment holds the winner's files.
func testCommitRevisionRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	createEnv(t, s, keyA, at(0))
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	must(s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Now: at(0), PyprojectTOML: "p0", UvLock: "l0",
		State: store.StateActive}))(t)
	const n = 8
	won, refused, errs := race(n, store.ErrStaleBase, func(i int) error {
		f := fmt.Sprint("writer ", i)
		_, err := s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Base: 1, Now: at(time.Second),
			PyprojectTOML: f, UvLock: f, State: store.StateActive})
		return err
	})
	if won != 1 || refused != n-1 || len(errs) > 0 {
		t.Fatalf("won %d, stale %d, errors %v; want one winner, every other refused as stale", won, refused, errs)
	}
	if r := must(s.GetRevision(ctx, keyA, 0))(t); r.Number != 2 || r.PyprojectTOML != r.UvLock || r.PyprojectTOML == "p0" {
		t.Errorf("current revision %d %q, %q; want 2 with one writer's files", r.Number, r.PyprojectTOML, r.UvLock)
	}
}

// Creators racing on one key: exactly one creates it, every other is told it exists. (ACTIVE:
// a CREATING row without a live lease is, by contract, replaced by the next creator.)
func testCreateEnvRace(t *testing.T, s store.Store) {
	const n = 8
	created, exists, errs := race(n, store.ErrExists, func(i int) error {
		env := store.Env{Key: keyA, State: store.StateActive, PythonVersion: fmt.Sprint("3.", i)}
		return s.CreateEnv(t.Context(), env, at(0))
	})
	if created != 1 || exists != n-1 || len(errs) > 0 {
		t.Errorf("created %d, exists %d, errors %v; want 1 and %d", created, exists, errs, n-1)
	}
}

func testCommitRevisionFenced(t *testing.T, s store.Store) {
	ctx := t.Context()
	createEnv(t, s, keyA, at(0))
	createEnv(t, s, keyB, at(0))
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	must(s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Now: at(time.Second),
		PyprojectTOML: "p1", UvLock: "l1", State: store.StateActive}))(t)
	before := getEnv(t, s, keyA)

	released := lease(t, s, keyB, store.LeaseChange, at(0))
	if err := s.ReleaseLease(ctx, released.ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		leaseID string
		now     time.Time
	}{
		{"expired", l.ID, at(ttl)},
		{"released", released.ID, at(time.Second)},
		{"another environment's", lease(t, s, keyB, store.LeaseChange, at(0)).ID, at(time.Second)},
		{"unknown", "no-such-lease", at(time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: tt.leaseID, Base: 1, Now: tt.now,
				PyprojectTOML: "p2", UvLock: "l2", State: store.StateError, PythonPath: "/elsewhere"})
			wantErr(t, "commit", err, store.ErrLeaseLost)
			if after := getEnv(t, s, keyA); !reflect.DeepEqual(after, before) {
				t.Errorf("env changed to %+v; want %+v", after, before)
			}
			_, err = s.GetRevision(ctx, keyA, 2)
			wantErr(t, "revision 2", err, store.ErrNotFound)
		})
	}
}

func testGetRevision(t *testing.T, s store.Store) {
	ctx := t.Context()
	createEnv(t, s, keyA, at(0))
	_, err := s.GetRevision(ctx, keyA, 0)
	wantErr(t, "current revision while creating", err, store.ErrNotFound)
	l := lease(t, s, keyA, store.LeaseChange, at(0))
	for i, f := range []string{"one", "two"} {
		must(s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Base: int64(i), Now: at(time.Duration(i) * time.Second),
			PyprojectTOML: "pyproject " + f, UvLock: "lock " + f, OperationID: int64(10 + i), State: store.StateActive}))(t)
	}
	tests := []struct {
		n       int64
		want    store.Revision
		wantErr error
	}{
		{0, store.Revision{Key: keyA, Number: 2, PyprojectTOML: "pyproject two", UvLock: "lock two", OperationID: 11, CreatedAt: at(time.Second)}, nil},
		{1, store.Revision{Key: keyA, Number: 1, PyprojectTOML: "pyproject one", UvLock: "lock one", OperationID: 10, CreatedAt: at(0)}, nil},
		{2, store.Revision{Key: keyA, Number: 2, PyprojectTOML: "pyproject two", UvLock: "lock two", OperationID: 11, CreatedAt: at(time.Second)}, nil},
		{3, store.Revision{}, store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			got, err := s.GetRevision(ctx, keyA, tt.n)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v; want %v", err, tt.wantErr)
			}
			if err == nil {
				sameTime(t, "created_at", got.CreatedAt, tt.want.CreatedAt)
				got.CreatedAt, tt.want.CreatedAt = time.Time{}, time.Time{}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
	_, err = s.GetRevision(ctx, keyB, 0)
	wantErr(t, "revision of a missing environment", err, store.ErrNotFound)
}

func testDeleteEnv(t *testing.T, s store.Store) {
	ctx := t.Context()
	start := now()
	createEnv(t, s, keyA, start)
	l := lease(t, s, keyA, store.LeaseChange, start)
	opID := must(s.BeginOperation(ctx, store.Operation{Key: keyA, Kind: "create", StartedAt: start}))(t)
	must(s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Now: start, PyprojectTOML: "p",
		UvLock: "l", OperationID: opID, State: store.StateActive}))(t)

	expired := lease(t, s, keyB, store.LeaseChange, start.Add(-2*ttl))
	wantErr(t, "delete with an expired lease", s.DeleteEnv(ctx, keyA, expired.ID), store.ErrLeaseLost)
	wantErr(t, "delete with another environment's lease", s.DeleteEnv(ctx, keyA, lease(t, s, keyB, store.LeaseChange, start).ID), store.ErrLeaseLost)
	getEnv(t, s, keyA)

	if err := s.DeleteEnv(ctx, keyA, l.ID); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetEnv(ctx, keyA)
	wantErr(t, "GetEnv after delete", err, store.ErrNotFound)
	_, err = s.GetRevision(ctx, keyA, 1)
	wantErr(t, "GetRevision after delete", err, store.ErrNotFound)
	if ops := must(s.ListOperations(ctx, keyA, 0, 0))(t); len(ops) != 1 || ops[0].ID != opID {
		t.Errorf("operations after delete = %+v; want operation %d kept", ops, opID)
	}
	wantErr(t, "delete again", s.DeleteEnv(ctx, keyA, l.ID), store.ErrNotFound)

	// A new environment under the same key starts its revisions afresh.
	createEnv(t, s, keyA, start)
	rev := must(s.CommitRevision(ctx, store.Commit{Key: keyA, LeaseID: l.ID, Now: start, PyprojectTOML: "q",
		UvLock: "m", State: store.StateActive}))(t)
	if rev != 1 {
		t.Errorf("first revision of the new environment = %d; want 1", rev)
	}
}

func testIdleEnvs(t *testing.T, s store.Store) {
	keys := []envid.Key{
		{WorkflowID: "idle", NodeID: "n1", VersionID: "v1"},
		{WorkflowID: "idle", NodeID: "n2", VersionID: "v1"},
		{WorkflowID: "idle", NodeID: "n3", VersionID: "v1"},
	}
	used := []time.Duration{3 * time.Hour, time.Hour, 2 * time.Hour}
	for i, k := range keys {
		createEnv(t, s, k, at(0))
		if err := s.Touch(t.Context(), k, at(used[i])); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		cutoff time.Time
		limit  int
		want   []envid.Key
	}{
		{"none", at(time.Hour), 0, nil},
		{"oldest first", at(3 * time.Hour), 0, []envid.Key{keys[1], keys[2]}},
		{"all", at(4 * time.Hour), 0, []envid.Key{keys[1], keys[2], keys[0]}},
		{"limit", at(4 * time.Hour), 1, []envid.Key{keys[1]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []envid.Key
			for _, e := range must(s.IdleEnvs(t.Context(), tt.cutoff, tt.limit))(t) {
				got = append(got, e.Key)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func testCounts(t *testing.T, s store.Store) {
	createEnv(t, s, keyA, at(0))
	createEnv(t, s, keyB, at(0))
	if err := s.SetState(t.Context(), keyB, store.StateError, "broken", at(time.Second)); err != nil {
		t.Fatal(err)
	}
	got := must(s.CountEnvs(t.Context()))(t)
	if got[store.StateError] != 1 || len(got) != 2 {
		t.Errorf("CountEnvs = %v; want one ERROR and one other state", got)
	}
	if _, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: keyA, Mode: store.LeaseChange, Holder: "cp1", TTL: time.Minute, Now: at(0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: keyB, Mode: store.LeaseRun, Holder: "cp1", TTL: time.Second, Now: at(0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: keyC, Mode: store.LeaseDelete, Holder: "cp1", TTL: 30 * time.Second, Now: at(0)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		now         time.Time
		changesOnly bool
		want        int
	}{
		{"all live", at(0), false, 3},
		{"changes and deletes only", at(0), true, 2},
		{"the run expired", at(2 * time.Second), false, 2},
		{"the delete expired too", at(45 * time.Second), true, 1},
		{"all expired", at(2 * time.Minute), false, 0},
	}
	for _, tt := range tests {
		if got := must(s.CountLeases(t.Context(), tt.now, tt.changesOnly))(t); got != tt.want {
			t.Errorf("%s: CountLeases = %d; want %d", tt.name, got, tt.want)
		}
	}
}

func testAdoptSetting(t *testing.T, s store.Store) {
	if got := must(s.Setting(t.Context(), store.SettingFleetID))(t); got != "" {
		t.Fatalf("Setting before adoption = %q; want empty", got)
	}
	if got := must(s.AdoptSetting(t.Context(), store.SettingFleetID, "first", at(0)))(t); got != "first" {
		t.Errorf("first adoption = %q; want first", got)
	}
	if got := must(s.AdoptSetting(t.Context(), store.SettingFleetID, "second", at(time.Second)))(t); got != "first" {
		t.Errorf("second adoption = %q; want the first one kept", got)
	}
	if got := must(s.Setting(t.Context(), store.SettingFleetID))(t); got != "first" {
		t.Errorf("Setting = %q; want first", got)
	}
}

func testLeadership(t *testing.T, s store.Store) {
	steps := []struct {
		name   string
		holder string
		now    time.Duration
		want   bool
	}{
		{"first taker wins", "cp1", 0, true},
		{"another is refused", "cp2", time.Second, false},
		{"holder renews", "cp1", 5 * time.Second, true},
		{"still refused before expiry", "cp2", 14 * time.Second, false},
		{"taken after expiry", "cp2", 16 * time.Second, true},
		{"old holder refused", "cp1", 17 * time.Second, false},
	}
	for _, st := range steps {
		if got := must(s.AcquireLeadership(t.Context(), "cleanup", st.holder, at(st.now), 10*time.Second))(t); got != st.want {
			t.Errorf("%s: got %v; want %v", st.name, got, st.want)
		}
	}
	if err := s.ResignLeadership(t.Context(), "cleanup", "cp1"); err != nil {
		t.Fatal(err)
	}
	if got := must(s.AcquireLeadership(t.Context(), "cleanup", "cp1", at(18*time.Second), 10*time.Second))(t); got {
		t.Error("a resignation by a non-holder released the role")
	}
	if err := s.ResignLeadership(t.Context(), "cleanup", "cp2"); err != nil {
		t.Fatal(err)
	}
	if got := must(s.AcquireLeadership(t.Context(), "cleanup", "cp1", at(18*time.Second), 10*time.Second))(t); !got {
		t.Error("the role was not free after its holder resigned")
	}

	// Racing takers of a free role: exactly one wins.
	var wg sync.WaitGroup
	wins := make(chan string, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := fmt.Sprintf("racer%d", i)
			if ok, err := s.AcquireLeadership(t.Context(), "race", h, at(0), time.Minute); err == nil && ok {
				wins <- h
			}
		}()
	}
	wg.Wait()
	close(wins)
	if n := len(wins); n != 1 {
		t.Errorf("%d racers won a free role; want exactly 1", n)
	}
}

func testProbeWrite(t *testing.T, s store.Store) {
	p, ok := s.(store.Prober)
	if !ok {
		t.Fatalf("%T does not implement store.Prober", s)
	}
	// The first probe inserts the row, every later one updates it.
	for i, holder := range []string{"cp1", "cp1", "cp2"} {
		if err := p.ProbeWrite(t.Context(), "readyz", holder, at(time.Duration(i)*time.Second)); err != nil {
			t.Fatalf("probe #%d by %s: %v", i+1, holder, err)
		}
	}
}

// testAbandonStaleOperations: the fleet-wide sweep closes running operations of every key that
// started before the grace cutoff and that no live lease carries.
func testAbandonStaleOperations(t *testing.T, s store.Store) {
	ctx := t.Context()
	old, recent, sweep := at(-2*ttl), at(-time.Second), at(30*time.Second)
	tests := []struct {
		name       string
		key        envid.Key
		started    time.Time
		finished   bool
		liveLease  bool
		wantClosed bool
	}{
		{"old, no lease", keyA, old, false, false, true},
		{"old, no lease, other key", keyB, old, false, false, true},
		{"old, live lease", keyA, old, false, true, false},
		{"within the grace period", keyB, recent, false, false, false},
		{"finished", keyA, old, true, false, false},
	}
	ids := make([]int64, len(tests))
	wantN := 0
	for i, tt := range tests {
		ids[i] = must(s.BeginOperation(ctx, store.Operation{Key: tt.key, Kind: "add", StartedAt: tt.started}))(t)
		if tt.finished {
			if err := s.FinishOperation(ctx, ids[i], store.Outcome{Status: store.OpSucceeded, FinishedAt: at(-ttl)}); err != nil {
				t.Fatal(err)
			}
		}
		if tt.liveLease {
			must(s.AcquireLease(ctx, store.LeaseRequest{Key: tt.key, Mode: store.LeaseRun, Holder: "cp-1", Operation: "add", OperationID: ids[i], TTL: ttl, Now: at(0)}))(t)
		}
		if tt.wantClosed {
			wantN++
		}
	}
	if n := must(s.AbandonStaleOperations(ctx, at(-time.Minute/2), sweep))(t); n != wantN {
		t.Errorf("closed %d operations; want %d", n, wantN)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := must(s.GetOperation(ctx, ids[i]))(t)
			closed := op.Status == store.OpFailed && op.ErrorCode == store.ErrorCodeInterrupted
			if closed != tt.wantClosed {
				t.Errorf("operation = %+v; want closed as interrupted: %v", op, tt.wantClosed)
			}
			if closed {
				sameTime(t, "finished_at", op.FinishedAt, sweep)
				if op.DurationMS != sweep.Sub(tt.started).Milliseconds() {
					t.Errorf("duration %d; want %d", op.DurationMS, sweep.Sub(tt.started).Milliseconds())
				}
			}
		})
	}
}

// testEnvsToRepair: environments in a transitional state or ERROR, unleased and past the grace
// period, are the ones a repair pass takes.
func testEnvsToRepair(t *testing.T, s store.Store) {
	ctx := t.Context()
	type env struct {
		node      string
		state     string
		updated   time.Duration
		liveLease bool
	}
	envs := []env{
		{"installing", store.StateInstalling, 2 * time.Minute, false},
		{"error", store.StateError, time.Minute, false},
		{"syncing", store.StateSyncing, 3 * time.Minute, false},
		{"deleting", store.StateDeleting, 4 * time.Minute, false},
		{"creating", store.StateCreating, 5 * time.Minute, false},
		{"active", store.StateActive, time.Minute, false},
		{"leased", store.StateInstalling, time.Minute, true},
		{"recent", store.StateError, 20 * time.Minute, false},
	}
	keys := map[string]envid.Key{}
	for _, e := range envs {
		k := envid.Key{WorkflowID: "repair", NodeID: e.node, VersionID: "v1"}
		keys[e.node] = k
		createEnv(t, s, k, at(0))
		if err := s.SetState(ctx, k, e.state, "", at(e.updated)); err != nil {
			t.Fatal(err)
		}
		if e.liveLease {
			must(s.AcquireLease(ctx, store.LeaseRequest{Key: k, Mode: store.LeaseChange, Holder: "cp-1", Operation: "add", OperationID: 1, TTL: time.Hour, Now: at(0)}))(t)
		}
	}
	tests := []struct {
		name  string
		limit int
		want  []string
	}{
		{"all, least recently updated first", 0, []string{"error", "installing", "syncing", "deleting", "creating"}},
		{"limit", 2, []string{"error", "installing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range must(s.EnvsToRepair(ctx, at(10*time.Minute), at(10*time.Minute), tt.limit))(t) {
				got = append(got, e.Key.NodeID)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

// testAbandonCommittedOperation: an operation whose commit landed but whose outcome row was never
// written (its control plane lost the database just after) is closed as succeeded, by both
// sweeps: its revision is the record, and the audit must not call a committed change failed.
func testAbandonCommittedOperation(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, sweep := range []struct {
		name string
		run  func(key envid.Key) (int, error)
	}{
		{"fleet-wide", func(envid.Key) (int, error) {
			return s.AbandonStaleOperations(ctx, at(-time.Minute/2), at(30*time.Second))
		}},
		{"one environment", func(key envid.Key) (int, error) { return s.AbandonOperations(ctx, key, 0, at(30*time.Second)) }},
	} {
		t.Run(sweep.name, func(t *testing.T) {
			key := envid.Key{WorkflowID: "committed", NodeID: sweep.name[:3], VersionID: "v1"}
			createEnv(t, s, key, at(-2*ttl))
			committed := must(s.BeginOperation(ctx, store.Operation{Key: key, Kind: "add", StartedAt: at(-2 * ttl)}))(t)
			l := must(s.AcquireLease(ctx, store.LeaseRequest{Key: key, Mode: store.LeaseChange, Holder: "cp-1", Operation: "add",
				OperationID: committed, TTL: ttl, Now: at(-2 * ttl)}))(t)
			// Revision 1 by an earlier operation, revision 2 by the one whose outcome is lost.
			must(s.CommitRevision(ctx, store.Commit{Key: key, LeaseID: l.ID, Now: at(-2 * ttl), OperationID: committed - 1,
				PyprojectTOML: "p0", UvLock: "l0", State: store.StateActive}))(t)
			must(s.CommitRevision(ctx, store.Commit{Key: key, LeaseID: l.ID, Base: 1, Now: at(-2 * ttl), OperationID: committed,
				PyprojectTOML: "p", UvLock: "l", State: store.StateActive}))(t)
			lost := must(s.BeginOperation(ctx, store.Operation{Key: key, Kind: "add", StartedAt: at(-2 * ttl)}))(t)
			if n := must(sweep.run(key))(t); n < 2 {
				t.Fatalf("closed %d operations; want both", n)
			}
			if op := must(s.GetOperation(ctx, committed))(t); op.Status != store.OpSucceeded || op.ErrorCode != "" || op.ErrorMessage != store.RecoveredMessage {
				t.Errorf("committed operation closed as %+v; want succeeded with %q", op, store.RecoveredMessage)
			} else {
				// Its revision is its result, as its holder would have recorded it.
				sameJSON(t, "result", op.Result, json.RawMessage(`{"revision": 2}`))
			}
			if op := must(s.GetOperation(ctx, lost))(t); op.Status != store.OpFailed || op.ErrorCode != store.ErrorCodeInterrupted {
				t.Errorf("uncommitted operation closed as %+v; want failed, %s", op, store.ErrorCodeInterrupted)
			} else {
				sameJSON(t, "result", op.Result, nil)
			}
		})
	}
}
