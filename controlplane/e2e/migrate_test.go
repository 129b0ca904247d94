package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestMigrateToFleet grows a single host into a fleet as an operator would: a single-host fabric
// with environments, mutations and runs is stopped, `controlplane migrate` copies its SQLite
// database into PostgreSQL, and a fleet control plane and agent started on that database and
// the same storage serve the same environments, revisions and history, run code in them and
// change them, the audit going on after the last operation id copied.
func TestMigrateToFleet(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "a", "packages": []string{"alpha==1.0.0"}}), 201, "")
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "b", "packages": []string{"beta"}}), 201, "")
	expect(t, f.do(t, "POST", "/envs/wf/a/deps", map[string]any{"packages": []string{"delta"}}), 200, "")
	expect(t, f.do(t, "PUT", "/envs/wf/a/deps", map[string]any{"packages": []string{"alpha==1.1.0"}}), 200, "")
	expect(t, f.do(t, "POST", "/envs/wf/a/run", map[string]any{"code": "import alpha; print(alpha.__version__)"}), 200, "")
	expect(t, f.do(t, "DELETE", "/envs/wf/b/deps", map[string]any{"packages": []string{"beta"}}), 200, "")
	expect(t, f.do(t, "POST", "/envs/wf/b/deps", map[string]any{"packages": []string{"nonexistent-package"}}), 422, "PACKAGE_RESOLUTION_FAILED")

	// What a user reads of the single host, to be read the same from the fleet.
	views := []string{"/envs", "/envs/wf/a/deps", "/envs/wf/b/deps", "/envs/wf/a/export", "/envs/wf/b/export",
		"/envs/wf/a/operations", "/envs/wf/b/operations"}
	before := map[string]any{}
	for _, v := range views {
		r := f.do(t, "GET", v, nil)
		expect(t, r, 200, "")
		before[v] = r.Body
	}
	lastOp := int64(0)
	for _, node := range []string{"a", "b"} {
		for _, o := range before["/envs/wf/"+node+"/operations"].(map[string]any)["operations"].([]any) {
			lastOp = max(lastOp, int64(o.(map[string]any)["id"].(float64)))
		}
	}
	f.cp.stop(t)
	f.agent.stop(t)

	url := database(t)
	cpBin, _ := binaries(t)
	sqlitePath := filepath.Join(f.DataRoot, "controlplane", "fabric.db")
	migrate := func(args ...string) (string, string, error) {
		cmd := exec.Command(cpBin, append([]string{"migrate", "-from", sqlitePath, "-to", url}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, errOut, err := migrate()
	if err != nil {
		t.Fatalf("controlplane migrate: %v\n%s\n%s", err, out, errOut)
	}
	for _, table := range []string{"envs", "env_revisions", "env_operations"} {
		if !strings.Contains(out, "\n"+table+" ") {
			t.Errorf("the report does not name table %s:\n%s", table, out)
		}
	}
	// A second run finds the target populated and refuses, saying how to override.
	if out, errOut, err := migrate(); err == nil || !strings.Contains(errOut, "-replace") {
		t.Errorf("a second migrate into the populated database: %v\n%s\n%s; want a refusal naming -replace", err, out, errOut)
	}

	fl := newFleet(t, fleetOptions{controlPlanes: 1, agents: 1, dataRoot: f.DataRoot, db: url, index: f.Index,
		agentEnv: []string{"UV_DEFAULT_INDEX=" + f.proxy.URL}}) // the index the locks name
	cp := fl.cp(0)
	for _, v := range views {
		r := cp.do(t, "GET", v, nil)
		expect(t, r, 200, "")
		if !reflect.DeepEqual(r.Body, before[v]) {
			a, _ := json.MarshalIndent(before[v], "", " ")
			b, _ := json.MarshalIndent(r.Body, "", " ")
			t.Errorf("GET %s differs after the migration\nsingle host: %s\nfleet: %s", v, a, b)
		}
	}
	r := cp.do(t, "POST", "/envs/wf/a/run", map[string]any{"code": "import alpha, delta; print(alpha.__version__, delta.__version__)"})
	expect(t, r, 200, "")
	if got := r.str("stdout"); got != "1.1.0 0.2.0\n" {
		t.Errorf("run in the migrated environment printed %q; want %q", got, "1.1.0 0.2.0\n")
	}
	r = cp.do(t, "POST", "/envs/wf/b/deps", map[string]any{"packages": []string{"gamma"}})
	expect(t, r, 200, "")
	ops := cp.do(t, "GET", "/envs/wf/b/operations", nil).Body["operations"].([]any)
	newest := ops[0].(map[string]any)
	if id := int64(newest["id"].(float64)); newest["operation"] != "add" || id <= lastOp {
		t.Errorf("the fleet's first operation is %v id %d; want an add after id %d", newest["operation"], id, lastOp)
	}
	if got := cp.do(t, "GET", "/envs/wf/b/deps", nil).Body["locked_versions"].(map[string]any)["gamma"]; got != "1.0.0" {
		t.Errorf("gamma locked at %v after the fleet's add; want 1.0.0", got)
	}
}
