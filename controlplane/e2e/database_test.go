package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/envfabric/envfabric/shared/testutil/pgtest"
)

// TestDatabaseGoesAway: the fabric on a real PostgreSQL; when the database is unreachable every
// side-effecting request gets 500 DB_AUDIT_ERROR and nothing happens; when it is back, work goes on.
func TestDatabaseGoesAway(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartT(t)
	f := newFabric(t, options{databaseURL: pg.NewDatabase(t)})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	pyproject := f.readFile(t, "wf", "n", "pyproject.toml")
	lock := f.readFile(t, "wf", "n", "uv.lock")
	venv := filepath.Join(f.envDir("wf", "n", "v1"), ".venv", "lib", "python3.11", "site-packages")

	pg.Stop()
	requests := []struct {
		name, method, path string
		body               any
	}{
		{"create", "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "other", "packages": []string{"delta"}}},
		{"add", "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}}},
		{"remove", "DELETE", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha"}}},
		{"update", "PUT", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha==1.1.0"}}},
		{"sync", "POST", "/envs/wf/n/sync", nil},
		{"run", "POST", "/envs/wf/n/run", map[string]any{"code": "open('/tmp/should-not-exist-envfabric', 'w')"}},
		{"delete", "DELETE", "/envs/wf/n", nil},
		{"cleanup", "POST", "/envs/cleanup", map[string]any{"idle_hours": 0}},
	}
	for _, tt := range requests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, f.do(t, tt.method, tt.path, tt.body), 500, "DB_AUDIT_ERROR")
		})
	}
	if r := f.do(t, "GET", "/readyz", nil); r.Status != 503 {
		t.Errorf("readyz without a database: %d %s", r.Status, r.Raw)
	}
	if f.readFile(t, "wf", "n", "pyproject.toml") != pyproject || f.readFile(t, "wf", "n", "uv.lock") != lock {
		t.Fatal("the project files changed while the audit database was down")
	}
	if _, err := os.Stat(filepath.Join(venv, "delta")); !os.IsNotExist(err) {
		t.Error("delta was installed while the audit database was down")
	}
	if _, err := os.Stat(f.envDir("wf", "other", "v1")); !os.IsNotExist(err) {
		t.Error("an environment was created while the audit database was down")
	}
	if _, err := os.Stat("/tmp/should-not-exist-envfabric"); !os.IsNotExist(err) {
		os.Remove("/tmp/should-not-exist-envfabric")
		t.Error("code ran while the audit database was down")
	}

	if err := pg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, f.cp, f.URL+"/readyz")
	r := f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}})
	expect(t, r, 200, "")
	if lockedVersions(t, r)["delta"] != "0.2.0" {
		t.Errorf("after the database came back: %s", r.Raw)
	}
}
