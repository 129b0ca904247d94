package envs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// These tests cause faults the end-to-end suite cannot: a lease that runs out under a slow agent,
// an agent that ignores cancellation. The store is the real one; the agent is a stand-in.

type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// fakeAgent resolves and builds instantly and lets a test decide how Lock behaves.
type fakeAgent struct {
	mu    sync.Mutex
	calls []string
	lock  func(ctx context.Context, r envs.LockRequest) (envs.Locked, error)
	// check, when set, is the verification Inspect reports; inUse makes RemoveBuild refuse.
	check *envs.BuildCheck
	inUse atomic.Bool
	// storageUsed is what the shared storage's use signal shows (Usage's storageCheck);
	// usageErr fails Usage; checked collects every storage check's keys.
	storageUsed map[envid.Key]time.Time
	usageErr    error
	checked     [][]envid.Key
}

func (a *fakeAgent) record(s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, s)
}

func (a *fakeAgent) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

const pyproject = "[project]\nname = \"p\"\nversion = \"0.1.0\"\nrequires-python = \"==3.11.*\"\ndependencies = []\n"

// buildID is the fake identity of a build: a digest of its lock.
func buildID(f envs.Files) string { return store.Digest(f.UvLock)[:32] }

func (a *fakeAgent) Name() string { return "fake" }
func (a *fakeAgent) Lock(ctx context.Context, r envs.LockRequest) (envs.Locked, error) {
	if r.Kind == envs.CreateLock {
		a.record("lock create")
		return envs.Locked{Files: envs.Files{PyprojectTOML: pyproject, UvLock: "version = 1\n"}, PythonPath: "/usr/bin/python3"}, nil
	}
	a.record("lock")
	if a.lock == nil {
		return changed(ctx, r)
	}
	return a.lock(ctx, r)
}
func (a *fakeAgent) Build(_ context.Context, r envs.BuildRequest) (envs.Build, error) {
	a.record("build")
	id := buildID(r.Files)
	return envs.Build{ID: id, VenvPath: "/envs/.builds/" + id + "/.venv", PythonPath: r.PythonPath, Created: true, ExclusiveBytes: 1000}, nil
}
func (a *fakeAgent) Switch(_ context.Context, r envs.SwitchRequest) (bool, error) {
	a.record(fmt.Sprintf("switch %d", r.Revision))
	return true, nil
}
func (a *fakeAgent) Inspect(_ context.Context, r envs.InspectRequest) (envs.Disk, error) {
	if r.Verify {
		a.record("verify " + r.ExpectedBuildID)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return envs.Disk{Check: a.check}, nil
}
func (a *fakeAgent) Run(_ context.Context, r envs.RunSpec) (envs.RunResult, error) {
	a.record("run " + r.BuildID)
	return envs.RunResult{}, nil
}
func (a *fakeAgent) Delete(context.Context, envid.Key) (int64, error) {
	a.record("delete")
	return 0, nil
}
func (a *fakeAgent) Ping(context.Context) error                          { return nil }
func (a *fakeAgent) DiskUsage(context.Context, envid.Key) (int64, error) { return 0, nil }
func (a *fakeAgent) Usage(_ context.Context, _ time.Time, check []envid.Key) ([]envs.Use, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.usageErr != nil {
		return nil, a.usageErr
	}
	var out []envs.Use
	if len(check) > 0 {
		a.checked = append(a.checked, slices.Clone(check))
	}
	for _, k := range check {
		if at, ok := a.storageUsed[k]; ok {
			out = append(out, envs.Use{Key: k, At: at, Source: "interpreter"})
		}
	}
	return out, nil
}
func (a *fakeAgent) PruneCache(context.Context) (int64, int64, error) {
	a.record("prune")
	return 0, 0, nil
}
func (a *fakeAgent) ListBuilds(context.Context) ([]envs.Build, error) { return nil, nil }
func (a *fakeAgent) RemoveBuild(_ context.Context, id string) (envs.RemovedBuild, error) {
	a.record("remove_build " + id)
	return envs.RemovedBuild{Existed: true, InUse: a.inUse.Load()}, nil
}

func newService(t *testing.T, agent envs.Agent, c *clock) (*envs.Service, store.Store) {
	t.Helper()
	svc, st, _ := newServiceAt(t, agent, c)
	return svc, st
}

// newServiceAt is newService that also says where the SQLite file is, for tests that break it.
func newServiceAt(t *testing.T, agent envs.Agent, c *clock) (*envs.Service, store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fabric.db")
	st, err := sqlite.Open(t.Context(), path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := envs.New(st, envs.One(agent), nil, envs.Options{
		Instance: "test", DefaultPython: "3.11", DefaultTimeout: time.Second, MaxTimeout: time.Minute,
		MaxOutputBytes: 1 << 20, LeaseTTL: 300 * time.Millisecond, CleanupIdle: time.Hour, Now: c.now,
	}, slog.New(slog.DiscardHandler))
	return svc, st, path
}

var key = envid.Key{WorkflowID: "wf", NodeID: "n", VersionID: "v1"}

func TestLostLeaseNeverPublishes(t *testing.T) {
	tests := []struct {
		name string
		lock func(c *clock) func(ctx context.Context, r envs.LockRequest) (envs.Locked, error)
	}{
		{
			// The renewal finds the lease gone and cancels the agent call.
			name: "agent honours cancellation",
			lock: func(c *clock) func(ctx context.Context, r envs.LockRequest) (envs.Locked, error) {
				return func(ctx context.Context, r envs.LockRequest) (envs.Locked, error) {
					c.advance(time.Hour)
					<-ctx.Done()
					return envs.Locked{}, ctx.Err()
				}
			},
		},
		{
			// The agent finishes anyway, after the lease expired: the commit is fenced.
			name: "agent ignores cancellation",
			lock: func(c *clock) func(ctx context.Context, r envs.LockRequest) (envs.Locked, error) {
				return func(ctx context.Context, r envs.LockRequest) (envs.Locked, error) {
					c.advance(time.Hour)
					return changed(ctx, r)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{}
			agent := &fakeAgent{lock: tt.lock(c)}
			svc, st := newService(t, agent, c)
			if _, err := svc.Create(t.Context(), envs.Caller{Actor: "t"}, envs.CreateRequest{Key: key}); err != nil {
				t.Fatal(err)
			}
			_, err := svc.Mutate(t.Context(), envs.Caller{Actor: "t"}, key, envs.Add, []string{"alpha"}, false)
			if errcode.Of(err) != errcode.DBAuditError || !errors.Is(err, store.ErrLeaseLost) {
				t.Fatalf("got %v; want DB_AUDIT_ERROR wrapping ErrLeaseLost", err)
			}
			rev, err := st.GetRevision(t.Context(), key, 0)
			if err != nil {
				t.Fatal(err)
			}
			if rev.Number != 1 || rev.PyprojectTOML != pyproject {
				t.Errorf("a holder without its lease published revision %d:\n%s", rev.Number, rev.PyprojectTOML)
			}
			// Nor did it switch anything: the project stays on revision 1's build.
			if calls := agent.Calls(); slices.Contains(calls, "switch 2") {
				t.Errorf("a holder without its lease switched the project: %v", calls)
			}
			// The current build was never touched: code runs on it at once, no repair needed.
			if _, err := svc.Run(t.Context(), envs.Caller{Actor: "t"}, key, envs.RunRequest{Code: "print(1)"}); err != nil {
				t.Errorf("run after an interrupted change: %v; want it to run on the current build", err)
			}
			if want := "run " + rev.BuildID; rev.BuildID == "" || !slices.Contains(agent.Calls(), want) {
				t.Errorf("calls %v; want %q (revision 1's build)", agent.Calls(), want)
			}
		})
	}
}

func TestNoIntentNoSideEffect(t *testing.T) {
	c := &clock{}
	agent := &fakeAgent{}
	svc, st := newService(t, agent, c)
	if _, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: key}); err != nil {
		t.Fatal(err)
	}
	st.Close() // the database goes away
	calls := len(agent.Calls())
	for name, call := range map[string]func() error{
		"add": func() error {
			_, err := svc.Mutate(t.Context(), envs.Caller{}, key, envs.Add, []string{"alpha"}, false)
			return err
		},
		"sync": func() error { _, err := svc.Sync(t.Context(), envs.Caller{}, key); return err },
		"run": func() error {
			_, err := svc.Run(t.Context(), envs.Caller{}, key, envs.RunRequest{Code: "print(1)"})
			return err
		},
		"delete": func() error { _, err := svc.Delete(t.Context(), envs.Caller{}, key); return err },
		"create": func() error {
			_, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: envid.Key{WorkflowID: "wf", NodeID: "other", VersionID: "v1"}})
			return err
		},
		"cleanup": func() error { _, err := svc.Cleanup(t.Context(), envs.Caller{}, envs.CleanupRequest{}); return err },
	} {
		if err := call(); errcode.Of(err) != errcode.DBAuditError {
			t.Errorf("%s without a database: got %v; want DB_AUDIT_ERROR", name, err)
		}
	}
	if got := agent.Calls(); len(got) != calls {
		t.Errorf("the agent was called without an audit row: %v", got[calls:])
	}
}

// TestPruneCacheWaitsForQuiet: the uv cache is pruned only while no mutation holds a lease
// anywhere in the fleet.
func TestPruneCacheWaitsForQuiet(t *testing.T) {
	agent := &fakeAgent{}
	c := &clock{}
	svc, st := newService(t, agent, c)
	lease, err := st.AcquireLease(t.Context(), store.LeaseRequest{Key: envid.Key{WorkflowID: "wf", NodeID: "busy", VersionID: "v1"},
		Mode: store.LeaseChange, Holder: "another-control-plane", Operation: "add", TTL: time.Minute, Now: c.now()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := svc.PruneCache(t.Context(), envs.Caller{Actor: "t"})
	if err != nil || res.Pruned || !strings.Contains(res.Reason, "1 uv operation") {
		t.Errorf("with a mutation under way: %+v, %v; want postponed", res, err)
	}
	if slices.Contains(agent.Calls(), "prune") {
		t.Fatal("the cache was pruned while a mutation held a lease")
	}
	if err := st.ReleaseLease(t.Context(), lease.ID); err != nil {
		t.Fatal(err)
	}
	if res, err := svc.PruneCache(t.Context(), envs.Caller{Actor: "t"}); err != nil || !res.Pruned || !slices.Contains(agent.Calls(), "prune") {
		t.Errorf("with the fleet quiet: %+v, %v, calls %v; want pruned", res, err, agent.Calls())
	}
}

// TestCreateAnswersItsRevision: create answers the revision it committed and its audit row
// records the same, for a first create and for one after a delete (whose revisions went with it).
func TestCreateAnswersItsRevision(t *testing.T) {
	svc, st := newService(t, &fakeAgent{}, &clock{})
	for i := range 2 {
		res, err := svc.Create(t.Context(), envs.Caller{Actor: "t"}, envs.CreateRequest{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		cur, err := st.GetRevision(t.Context(), key, 0)
		if err != nil {
			t.Fatal(err)
		}
		if res.Revision != cur.Number || res.Revision != 1 {
			t.Errorf("create %d answered revision %d; the database's current is %d, want 1", i+1, res.Revision, cur.Number)
		}
		op, err := st.GetOperation(t.Context(), res.OperationID)
		if err != nil {
			t.Fatal(err)
		}
		var result struct {
			Revision *int64 `json:"revision"`
		}
		if err := json.Unmarshal(op.Result, &result); err != nil || result.Revision == nil || *result.Revision != res.Revision {
			t.Errorf("create %d's audit result %s; want revision %d", i+1, op.Result, res.Revision)
		}
		if _, err := svc.Delete(t.Context(), envs.Caller{Actor: "t"}, key); err != nil {
			t.Fatal(err)
		}
	}
}

// flakyFinish is a store whose FinishOperation fails while failures > 0, as a database that is
// away for a moment.
type flakyFinish struct {
	store.Store
	failures atomic.Int32
}

func (f *flakyFinish) FinishOperation(ctx context.Context, id int64, out store.Outcome) error {
	if f.failures.Add(-1) >= 0 {
		return errors.New("connection refused")
	}
	return f.Store.FinishOperation(ctx, id, out)
}

// TestOutcomeRecordedAfterTheDatabaseComesBack: a run that answered 200 is recorded as succeeded
// even when the database refused the first attempts to record it, instead of being left running
// for the sweep to close as INTERRUPTED ("stopped before recording its outcome") — which the chaos
// harness found: an acknowledged run with no succeeded audit row.
func TestOutcomeRecordedAfterTheDatabaseComesBack(t *testing.T) {
	c := &clock{}
	_, st := newService(t, &fakeAgent{}, c)
	flaky := &flakyFinish{Store: st}
	svc := envs.New(flaky, envs.One(&fakeAgent{}), nil, envs.Options{
		Instance: "test", DefaultPython: "3.11", DefaultTimeout: time.Second, MaxTimeout: time.Minute,
		MaxOutputBytes: 1 << 20, LeaseTTL: 300 * time.Millisecond, CleanupIdle: time.Hour, Now: c.now,
	}, slog.New(slog.DiscardHandler))
	if _, err := svc.Create(t.Context(), envs.Caller{Actor: "t"}, envs.CreateRequest{Key: key}); err != nil {
		t.Fatal(err)
	}
	flaky.failures.Store(3)
	res, err := svc.Run(t.Context(), envs.Caller{Actor: "t"}, key, envs.RunRequest{Code: "print(1)"})
	if err != nil {
		t.Fatal(err)
	}
	op, err := st.GetOperation(t.Context(), res.OperationID)
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != store.OpSucceeded || !strings.Contains(string(op.Result), `"revision":1`) {
		t.Errorf("audit row %d: %s %s; want succeeded with revision 1", op.ID, op.Status, op.Result)
	}
}
