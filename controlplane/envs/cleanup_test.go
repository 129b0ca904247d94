package envs_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// cleanupService is a service whose cleanup pass reads batches of batch environments.
func cleanupService(t *testing.T, agent *fakeAgent, c *clock, batch int) (*envs.Service, store.Store) {
	t.Helper()
	_, st := newService(t, agent, c)
	svc := envs.New(st, envs.One(agent), nil, envs.Options{
		Instance: "test", DefaultPython: "3.11", DefaultTimeout: time.Second, MaxTimeout: time.Minute,
		MaxOutputBytes: 1 << 20, LeaseTTL: 300 * time.Millisecond, CleanupIdle: time.Hour, Now: c.now,
		CleanupBatch: batch,
	}, slog.New(slog.DiscardHandler))
	return svc, st
}

// createNodes creates wf/n0 .. wf/n<count-1>, in that order.
func createNodes(t *testing.T, svc *envs.Service, count int) []envid.Key {
	t.Helper()
	var keys []envid.Key
	for i := range count {
		k := envid.Key{WorkflowID: "wf", NodeID: fmt.Sprintf("n%d", i), VersionID: "v1"}
		if _, err := svc.Create(t.Context(), envs.Caller{}, envs.CreateRequest{Key: k}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

func nodesOf(entries []envs.CleanupEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.NodeID)
	}
	slices.Sort(out)
	return out
}

// TestCleanupCoversEveryIdleEnvironment: a pass reads batch after batch until none is left (no
// cap), asks the shared storage about each candidate once, and never removes one the storage
// shows used after the cutoff, though the database had it idle.
func TestCleanupCoversEveryIdleEnvironment(t *testing.T) {
	c := &clock{}
	agent := &fakeAgent{}
	svc, st := cleanupService(t, agent, c, 3)
	keys := createNodes(t, svc, 7)
	c.advance(2 * time.Hour)
	usedAt := c.now().Add(-time.Minute).Truncate(time.Millisecond)
	agent.mu.Lock()
	agent.storageUsed = map[envid.Key]time.Time{
		keys[3]: usedAt,                         // a workflow executor started it a minute ago
		keys[5]: c.now().Add(-90 * time.Minute), // a use, but before the cutoff: still idle
	}
	agent.mu.Unlock()

	res, err := svc.Cleanup(t.Context(), envs.Caller{}, envs.CleanupRequest{IdleFor: -1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := nodesOf(res.Removed), []string{"n0", "n1", "n2", "n4", "n5", "n6"}; !slices.Equal(got, want) {
		t.Errorf("removed %v; want %v", got, want)
	}
	if _, err := st.GetEnv(t.Context(), keys[3]); err != nil {
		t.Errorf("the environment used on the storage: %v; want it kept", err)
	}
	if env, _ := st.GetEnv(t.Context(), keys[3]); !env.LastUsedAt.Equal(usedAt) {
		t.Errorf("its last use %v; want the storage's %v recorded", env.LastUsedAt, usedAt)
	}
	agent.mu.Lock()
	checked := agent.checked
	agent.mu.Unlock()
	var all []envid.Key
	for _, b := range checked {
		if len(b) > 3 {
			t.Errorf("a storage check of %d environments; want batches of at most 3", len(b))
		}
		all = append(all, b...)
	}
	if len(all) != len(keys) {
		t.Errorf("the storage was asked about %d environments in %d checks; want each of the %d candidates once", len(all), len(checked), len(keys))
	}
	if cur, err := st.CleanupCursor(t.Context(), store.CursorEnvs); err != nil || !cur.IsZero() {
		t.Errorf("after a whole pass the cursor is %+v, %v; want none", cur, err)
	}
}

// TestCleanupResumesAtTheCursor: a pass cut short leaves its cursor in the database; the next
// pass (any control plane's) goes on after it, and the one after that starts again from the
// first environment.
func TestCleanupResumesAtTheCursor(t *testing.T) {
	c := &clock{}
	agent := &fakeAgent{}
	svc, st := cleanupService(t, agent, c, 2)
	keys := createNodes(t, svc, 5)
	c.advance(2 * time.Hour)
	idle, err := st.IdleEnvs(t.Context(), c.now(), 0)
	if err != nil || len(idle) != 5 {
		t.Fatalf("idle: %v, %v", idle, err)
	}
	// The last leader dealt with the first two and stopped.
	stopped := store.CleanupCursor{LastUsedAt: idle[1].LastUsedAt, Key: idle[1].Key}
	if err := st.SaveCleanupCursor(t.Context(), store.CursorEnvs, stopped, c.now()); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Cleanup(t.Context(), envs.Caller{}, envs.CleanupRequest{IdleFor: -1})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{idle[2].Key.NodeID, idle[3].Key.NodeID, idle[4].Key.NodeID}
	slices.Sort(want)
	if got := nodesOf(res.Removed); !slices.Equal(got, want) {
		t.Errorf("the resumed pass removed %v; want those after the cursor, %v", got, want)
	}
	res, err = svc.Cleanup(t.Context(), envs.Caller{}, envs.CleanupRequest{IdleFor: -1})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{idle[0].Key.NodeID, idle[1].Key.NodeID}
	slices.Sort(want)
	if got := nodesOf(res.Removed); !slices.Equal(got, want) {
		t.Errorf("the next pass removed %v; want the first two, %v", got, want)
	}
	if left, _ := st.IdleEnvs(t.Context(), c.now(), 0); len(left) != 0 || len(keys) != 5 {
		t.Errorf("left idle: %v", left)
	}
}

// TestCleanupWithoutTheUseSignal: when no agent can read the shared storage's use signal, the
// candidates are skipped with the reason, and nothing is removed (one might be in use).
func TestCleanupWithoutTheUseSignal(t *testing.T) {
	c := &clock{}
	agent := &fakeAgent{}
	svc, st := cleanupService(t, agent, c, 10)
	keys := createNodes(t, svc, 3)
	c.advance(2 * time.Hour)
	agent.mu.Lock()
	agent.usageErr = errors.New("agent unavailable")
	agent.mu.Unlock()
	res, err := svc.Cleanup(t.Context(), envs.Caller{}, envs.CleanupRequest{IdleFor: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 || len(res.Skipped) != 3 {
		t.Fatalf("removed %v, skipped %v; want all three skipped", res.Removed, res.Skipped)
	}
	for _, k := range keys {
		if _, err := st.GetEnv(t.Context(), k); err != nil {
			t.Errorf("%s: %v; want it kept", k, err)
		}
	}
	if r := res.Skipped[0].Reason; r == "" {
		t.Error("a skip without a reason")
	}
}
