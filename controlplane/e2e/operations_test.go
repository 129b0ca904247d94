package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestHostConstraints: a bare name the host project constrains gets the host's specifier;
// explicit specifiers win; the response and the audit say what was applied.
func TestHostConstraints(t *testing.T) {
	t.Parallel()
	host := filepath.Join(t.TempDir(), "pyproject.toml")
	if err := os.WriteFile(host, []byte("[project]\nname = \"platform\"\ndependencies = [\"alpha>=1.0,<2\", \"delta==0.1.0\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFabric(t, options{cpEnv: []string{"HOST_PYPROJECT=" + host}})
	r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha", "delta==0.2.0"}})
	expect(t, r, 201, "")
	applied, _ := r.Body["host_constraints_applied"].([]any)
	if len(applied) != 1 || applied[0].(map[string]any)["applied"] != "alpha>=1.0,<2" {
		t.Errorf("host_constraints_applied: %s", r.Raw)
	}
	lv := lockedVersions(t, f.do(t, "GET", "/envs/wf/n/deps", nil))
	if lv["alpha"] != "1.1.0" || lv["delta"] != "0.2.0" {
		t.Errorf("locked %v; want alpha 1.1.0 (host's <2) and delta 0.2.0 (the request's own pin)", lv)
	}
	r = f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"beta"}})
	expect(t, r, 200, "")
	if lockedVersions(t, r)["beta"] != "1.0.0" {
		t.Errorf("beta must follow alpha<2 from the host: %s", r.Raw)
	}
	ops := f.do(t, "GET", "/envs/wf/n/operations", nil).Body["operations"].([]any)
	create := ops[len(ops)-1].(map[string]any)
	if p := create["params"].(map[string]any); p["host_constraints_applied"] == nil {
		t.Errorf("the audit of create does not record the applied constraint: %v", p)
	}
}

// TestCleanup: idle environments are removed on request and on the schedule, busy ones are
// skipped, a dry run removes nothing, and every removal is audited as cleanup.
func TestCleanup(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	for _, n := range []string{"old", "busy"} {
		expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": n}), 201, "")
	}
	r := f.do(t, "POST", "/envs/cleanup", map[string]any{"dry_run": true, "idle_hours": 0})
	expect(t, r, 200, "")
	if removed := r.Body["removed"].([]any); len(removed) != 2 {
		t.Fatalf("dry run: %s", r.Raw)
	}
	if _, err := os.Stat(f.envDir("wf", "old", "v1")); err != nil {
		t.Fatal("a dry run removed an environment")
	}
	expect(t, f.do(t, "POST", "/envs/cleanup", map[string]any{}), 200, "") // 72 h: nothing is that old
	if _, err := os.Stat(f.envDir("wf", "old", "v1")); err != nil {
		t.Fatal("cleanup with the default idle limit removed a fresh environment")
	}

	running := make(chan response, 1)
	go func() {
		running <- f.do(t, "POST", "/envs/wf/busy/run", map[string]any{"code": "import time; time.sleep(3)"})
	}()
	waitFor(t, func() bool {
		ops, _ := f.do(t, "GET", "/envs/wf/busy", nil).Body["operations_in_progress"].([]any)
		return len(ops) == 1
	})
	r = f.do(t, "POST", "/envs/cleanup", map[string]any{"idle_hours": 0})
	expect(t, r, 200, "")
	removed, skipped := r.Body["removed"].([]any), r.Body["skipped"].([]any)
	if len(removed) != 1 || removed[0].(map[string]any)["node_id"] != "old" || len(skipped) != 1 {
		t.Fatalf("cleanup with a run in progress: %s", r.Raw)
	}
	<-running
	if _, err := os.Stat(f.envDir("wf", "old", "v1")); !os.IsNotExist(err) {
		t.Error("the idle environment is still on disk")
	}
	expect(t, f.do(t, "GET", "/envs/wf/old", nil), 404, "ENV_NOT_FOUND")
	ops := f.do(t, "GET", "/envs/wf/old/operations", nil).Body["operations"].([]any)
	if last := ops[0].(map[string]any); last["operation"] != "cleanup" || last["status"] != "succeeded" {
		t.Errorf("cleanup is not audited: %v", last)
	}
}

func TestScheduledCleanup(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{cpEnv: []string{"CLEANUP_INTERVAL=500ms", "CLEANUP_IDLE_HOURS=0.0005"}}) // 1.8 s
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n"}), 201, "")
	waitFor(t, func() bool { return f.do(t, "GET", "/envs/wf/n", nil).Status == 404 })
	ops := f.do(t, "GET", "/envs/wf/n/operations", nil).Body["operations"].([]any)
	if last := ops[0].(map[string]any); last["operation"] != "cleanup" || last["actor"] != "scheduler" {
		t.Errorf("want a cleanup by the scheduler, got %v", last)
	}
}

// TestControlPlaneCrash: a control plane killed in the middle of an add leaves a lease that
// expires by itself; the environment stayed at its last good revision on its current build the
// whole time (the add was building beside it), and it works again after.
func TestControlPlaneCrash(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	pyproject := f.readFile(t, "wf", "n", "pyproject.toml")

	stalled := f.Index.Stall("delta")
	f.addInto(t, "wf", "n", "delta", stalled)
	f.killControlPlane(t)
	f.startControlPlane(t)

	// The dead holder's lease still stands until it expires (LEASE_TTL=6s here).
	expect(t, f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha==1.1.0"}}), 423, "ENV_LOCKED")
	waitFor(t, func() bool {
		ops, _ := f.do(t, "GET", "/envs/wf/n", nil).Body["operations_in_progress"].([]any)
		return len(ops) == 0
	})
	// Nothing was touched before the commit that never came: the status shows the resting state
	// (the repair pass settles a state left INSTALLING, unless the next change comes first).
	waitFor(t, func() bool {
		r := f.do(t, "GET", "/envs/wf/n", nil)
		return r.str("state") == "ACTIVE" && r.Body["in_step"] == true
	})
	if got := f.readFile(t, "wf", "n", "pyproject.toml"); got != pyproject {
		t.Errorf("after the repair pass pyproject.toml is not the last good one:\n%s", got)
	}
	var last response
	waitFor(t, func() bool {
		last = f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha==1.1.0"}})
		return last.Status != 423
	})
	expect(t, last, 200, "")
	if lockedVersions(t, last)["delta"] != "" {
		t.Errorf("the interrupted add of delta left a trace: %s", last.Raw)
	}
	if got := f.readFile(t, "wf", "n", "pyproject.toml"); got == pyproject {
		t.Error("the new add did not change pyproject.toml")
	}
	if r := f.do(t, "GET", "/envs/wf/n", nil); r.str("state") != "ACTIVE" || r.Body["in_step"] != true {
		t.Errorf("after recovery: %s", r.Raw)
	}
	// The dead control plane's add is closed in the audit, not left running forever.
	var outcomes []string
	for _, o := range f.do(t, "GET", "/envs/wf/n/operations", nil).Body["operations"].([]any) {
		op := o.(map[string]any)
		outcomes = append(outcomes, fmt.Sprint(op["operation"], ":", op["status"], ":", op["error_code"]))
	}
	if want := "add:failed:INTERRUPTED"; !slices.Contains(outcomes, want) || slices.Contains(outcomes, "add:running:<nil>") {
		t.Errorf("audit after the crash: %v; want %s and nothing running", outcomes, want)
	}
}
