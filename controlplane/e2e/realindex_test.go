package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// realIndex finds the package index this machine uses, at run time: uv's own setting, else pip's
// (pip may be configured to reach PyPI through a mirror, and uv never reads pip's configuration),
// else uv's default. "-" means "leave uv's default".
func realIndex(t *testing.T) string {
	if v := os.Getenv("UV_DEFAULT_INDEX"); v != "" {
		return v
	}
	if v := os.Getenv("PIP_INDEX_URL"); v != "" {
		return v
	}
	out, err := exec.Command("python3", "-m", "pip", "config", "get", "global.index-url").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "-"
}

// TestRealIndex is the TRD's example on the real package index: numpy and pandas.
func TestRealIndex(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("needs the real package index")
	}
	f := newFabric(t, options{indexURL: realIndex(t)})
	r := f.createForm(t, map[string][]string{"workflow_id": {"workflow123"}, "node_id": {"node123"}, "version_id": {"v1"},
		"python_version": {"3.11"}, "packages": {`["numpy>=1.24.0", "pandas>=2.0.0"]`}}, "")
	expect(t, r, 201, "")

	r = f.do(t, "GET", "/envs/workflow123/node123/deps", nil)
	expect(t, r, 200, "")
	lv := lockedVersions(t, r)
	if lv["numpy"] == "" || lv["pandas"] == "" {
		t.Fatalf("locked_versions %v; want numpy and pandas", lv)
	}
	r = f.do(t, "POST", "/envs/workflow123/node123/run", map[string]any{
		"code": "import numpy as np, pandas as pd\nprint(np.__version__, pd.__version__)\nprint(pd.DataFrame({'a': np.arange(3)})['a'].sum())", "timeout": 120})
	expect(t, r, 200, "")
	if want := lv["numpy"] + " " + lv["pandas"] + "\n3\n"; r.str("stdout") != want {
		t.Errorf("run printed %q; want %q (stderr %q)", r.str("stdout"), want, r.str("stderr"))
	}

	// Node B needs numpy 1.x: a downgrade.
	r = f.do(t, "PUT", "/envs/workflow123/node123/deps", map[string]any{"packages": []string{"numpy<2"}})
	expect(t, r, 200, "")
	down := lockedVersions(t, r)["numpy"]
	if !strings.HasPrefix(down, "1.") {
		t.Fatalf("numpy after downgrade: %q", down)
	}
	r = f.do(t, "POST", "/envs/workflow123/node123/run", map[string]any{"code": "import numpy; print(numpy.__version__)", "timeout": 120})
	if r.str("stdout") != down+"\n" {
		t.Errorf("run after downgrade: %s", r.Raw)
	}
	expect(t, f.do(t, "DELETE", "/envs/workflow123/node123", nil), 200, "")
}

// TestRealIndexOwnName is issue 9's report on the real index: workflow_id=google, node_id=api,
// version_id=core with google-cloud-core resolves exactly as under other ids (the project's own
// name once shadowed google-api-core).
func TestRealIndexOwnName(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the real package index")
	}
	f := newFabric(t, options{indexURL: realIndex(t)})
	var locked []map[string]string
	for _, ids := range [][3]string{{"google", "api", "core"}, {"wf", "n", "v1"}} {
		expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": ids[0], "node_id": ids[1], "version_id": ids[2],
			"packages": []string{"google-cloud-core"}}), 201, "")
		locked = append(locked, lockedVersions(t, f.do(t, "GET", "/envs/"+ids[0]+"/"+ids[1]+"/deps?version_id="+ids[2], nil)))
	}
	for _, name := range []string{"google-cloud-core", "google-api-core", "google-auth"} {
		if locked[0][name] == "" || locked[0][name] != locked[1][name] {
			t.Errorf("%s: %q under google/api/core, %q under wf/n/v1; want the same", name, locked[0][name], locked[1][name])
		}
	}
}
