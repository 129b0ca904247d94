package e2e

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the test's own connection to the control plane's SQLite file

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
)

// Integrity: no acknowledged change is lost, nothing unacknowledged is left live, and the audit
// records what really happened (issue 9).

// numbered returns n releases named <prefix>01, <prefix>02, ... without dependencies.
func numbered(prefix string, n int) []pyindex.Package {
	out := make([]pyindex.Package, n)
	for i := range out {
		out[i] = pyindex.Package{Name: fmt.Sprintf("%s%02d", prefix, i+1), Version: "1.0.0"}
	}
	return out
}

// retryLocked sends a request until it is not answered 423, as the clients did.
func (f *fabric) retryLocked(t *testing.T, method, path string, body any) response {
	t.Helper()
	for {
		r := f.do(t, method, path, body)
		if r.Status != 423 {
			return r
		}
		time.Sleep(20 * time.Millisecond) // a client's back-off, not a wait for an outcome
	}
}

// inStep fails unless the environment at path (/envs/{wf}/{node}[?version_id=]) has its files
// equal to its current revision and .venv matching them.
func (f *fabric) inStep(t *testing.T, path string) {
	t.Helper()
	r := f.do(t, "GET", path, nil)
	disk, _ := r.Body["disk"].(map[string]any)
	if r.Status != 200 || r.str("state") != "ACTIVE" || r.Body["in_step"] != true ||
		disk["files_match_revision"] != true || disk["venv_in_sync"] != true {
		t.Errorf("status of %s not in step: %s", path, r.Raw)
	}
}

// TestConcurrentAddsAllSurvive: four clients each add five packages to one environment at once,
// retrying every 423. Every add acknowledged with a 2xx is in the dependencies and the lock, and
// the files and .venv agree with the database.
func TestConcurrentAddsAllSurvive(t *testing.T) {
	const clients, adds = 4, 5
	f := newFabric(t, options{packages: numbered("pkg", clients*adds)})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n"}), 201, "")

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range adds {
				pkg := fmt.Sprintf("pkg%02d", c*adds+a+1)
				r := f.retryLocked(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{pkg}})
				if r.Status/100 != 2 {
					t.Errorf("add %s: %d %s", pkg, r.Status, tail(r.Raw, 1000))
					continue
				}
				mu.Lock()
				acked = append(acked, pkg)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	deps := f.do(t, "GET", "/envs/wf/n/deps", nil)
	expect(t, deps, 200, "")
	locked := lockedVersions(t, deps)
	declared := fmt.Sprint(deps.Body["dependencies"])
	for _, pkg := range acked {
		if locked[pkg] != "1.0.0" || !strings.Contains(declared, pkg) {
			t.Errorf("acknowledged %s is missing: dependencies %s, locked %v", pkg, declared, locked)
		}
	}
	if len(acked) != clients*adds {
		t.Errorf("%d adds acknowledged; want %d", len(acked), clients*adds)
	}
	f.inStep(t, "/envs/wf/n")
}

// TestSyncRacingAdd: syncs sent while packages are being added never put an older revision back.
func TestSyncRacingAdd(t *testing.T) {
	const adds = 4
	f := newFabric(t, options{packages: numbered("race", adds)})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if r := f.retryLocked(t, "POST", "/envs/wf/n/sync", nil); r.Status != 200 {
				t.Errorf("sync: %d %s", r.Status, tail(r.Raw, 1000))
				return
			}
		}
	}()
	for i := range adds {
		pkg := fmt.Sprintf("race%02d", i+1)
		expect(t, f.retryLocked(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{pkg}}), 200, "")
	}
	close(done)
	wg.Wait()

	locked := lockedVersions(t, f.do(t, "GET", "/envs/wf/n/deps", nil))
	for i := range adds {
		if pkg := fmt.Sprintf("race%02d", i+1); locked[pkg] != "1.0.0" {
			t.Errorf("the add of %s was undone by a sync: locked %v", pkg, locked)
		}
	}
	f.inStep(t, "/envs/wf/n")
}

// shadowing reproduces google/api/core: a distribution named like the old project name of the
// ids (<wf>-<node>-<version>) that the requested package's newest release needs. A project that
// took that name would shadow it, and uv would settle for the old release without it.
var shadowing = []pyindex.Package{
	{Name: "google-api-core", Version: "2.0.0"},
	{Name: "google-cloud-core", Version: "0.27.1"},
	{Name: "google-cloud-core", Version: "2.4.0", Requires: []string{"google-api-core>=2.0"}},
}

// TestOwnNameNeverResolves: the ids google/api/core resolve google-cloud-core exactly as other
// ids do, and an environment made under the old naming moves to the reserved name on its next
// change, which then resolves correctly too.
func TestOwnNameNeverResolves(t *testing.T) {
	f := newFabric(t, options{packages: shadowing})
	want := map[string]string{"google-cloud-core": "2.4.0", "google-api-core": "2.0.0"}
	for _, ids := range [][3]string{{"google", "api", "core"}, {"wf", "n", "v1"}} {
		r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": ids[0], "node_id": ids[1], "version_id": ids[2],
			"packages": []string{"google-cloud-core"}})
		expect(t, r, 201, "")
		got := lockedVersions(t, f.do(t, "GET", "/envs/"+ids[0]+"/"+ids[1]+"/deps?version_id="+ids[2], nil))
		for name, v := range want {
			if got[name] != v {
				t.Errorf("%v: locked %v; want %s %s as under any ids", ids, got, name, v)
			}
		}
	}

	// An environment from before the reserved names: its recorded revision (and its files) carry
	// the old name google-api-core.
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "google", "node_id": "api", "version_id": "old"}), 201, "")
	key := envid.Key{WorkflowID: "google", NodeID: "api", VersionID: "old"}
	db := openSQLite(t, f)
	// Revisions reference their files by digest in contents (one row per distinct content).
	cur := f.do(t, "GET", "/envs/google/api/export?version_id=old", nil)
	digests := map[string]string{}
	for col, body := range map[string]string{"pyproject_digest": cur.str("pyproject_toml"), "lock_digest": cur.str("uv_lock")} {
		renamed := strings.ReplaceAll(body, key.ProjectName(), "google-api-core")
		digests[col] = store.Digest(renamed)
		if _, err := db.Exec(`INSERT OR IGNORE INTO contents (digest, body) VALUES (?, ?)`, digests[col], renamed); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`UPDATE env_revisions SET pyproject_digest = ?, lock_digest = ?
		WHERE workflow_id = 'google' AND node_id = 'api' AND version_id = 'old'`, digests["pyproject_digest"], digests["lock_digest"]); err != nil {
		t.Fatal(err)
	}
	old := f.do(t, "GET", "/envs/google/api/export?version_id=old", nil)
	if !strings.Contains(old.str("pyproject_toml"), `name = "google-api-core"`) {
		t.Fatalf("could not give the environment its old name: %s", old.Raw)
	}
	r := f.do(t, "POST", "/envs/google/api/deps?version_id=old", map[string]any{"packages": []string{"google-cloud-core"}})
	expect(t, r, 200, "")
	got := lockedVersions(t, r)
	for name, v := range want {
		if got[name] != v {
			t.Errorf("after moving to the reserved name: locked %v; want %s %s", got, name, v)
		}
	}
	exp := f.do(t, "GET", "/envs/google/api/export?version_id=old", nil)
	if !strings.Contains(exp.str("pyproject_toml"), `name = "`+key.ProjectName()+`"`) {
		t.Errorf("the new revision does not record the reserved name:\n%s", exp.str("pyproject_toml"))
	}
	f.inStep(t, "/envs/google/api?version_id=old")
}

// openSQLite opens the control plane's SQLite database beside it, as an operator (or a fault)
// would.
func openSQLite(t *testing.T, f *fabric) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(f.DataRoot, "controlplane", "fabric.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestCommitFailureRestores: the database refuses the new revision after uv succeeded (a trigger
// that raises). The answer is DB_AUDIT_ERROR, and files, .venv and the database are all at the
// base revision; the audit row is closed as failed and says the environment was restored.
func TestCommitFailureRestores(t *testing.T) {
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	pyproject, lock := f.readFile(t, "wf", "n", "pyproject.toml"), f.readFile(t, "wf", "n", "uv.lock")
	before := f.do(t, "GET", "/envs/wf/n/deps", nil)

	db := openSQLite(t, f)
	if _, err := db.Exec(`CREATE TRIGGER refuse_revisions BEFORE INSERT ON env_revisions
		BEGIN SELECT RAISE(ABORT, 'injected fault: no new revisions'); END`); err != nil {
		t.Fatal(err)
	}
	r := f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}})
	expect(t, r, 500, "DB_AUDIT_ERROR")
	if e := r.Body["error"].(map[string]any); e["restored"] != true {
		t.Errorf("the answer does not say the environment was restored: %s", r.Raw)
	}
	if f.readFile(t, "wf", "n", "pyproject.toml") != pyproject || f.readFile(t, "wf", "n", "uv.lock") != lock {
		t.Error("the project files kept the uncommitted change")
	}
	if m, _ := filepath.Glob(filepath.Join(f.envDir("wf", "n", "v1"), ".venv", "lib", "python*", "site-packages", "delta*")); len(m) != 0 {
		t.Errorf(".venv kept the uncommitted package: %v", m)
	}
	after := f.do(t, "GET", "/envs/wf/n/deps", nil)
	if after.Body["revision"] != before.Body["revision"] || lockedVersions(t, after)["delta"] != "" {
		t.Errorf("the database moved: before %s\nafter %s", before.Raw, after.Raw)
	}
	f.inStep(t, "/envs/wf/n")
	add := lastOperation(t, f, "wf", "n")
	if add["operation"] != "add" || add["status"] != "failed" || add["error_code"] != "DB_AUDIT_ERROR" {
		t.Errorf("audit of the add: %v; want add failed DB_AUDIT_ERROR", add)
	}
	if res, _ := add["result"].(map[string]any); res["restored"] != true {
		t.Errorf("the audit does not record the restore: %v", add)
	}

	if _, err := db.Exec(`DROP TRIGGER refuse_revisions`); err != nil {
		t.Fatal(err)
	}
	r = f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}})
	expect(t, r, 200, "")
	if lockedVersions(t, r)["delta"] == "" {
		t.Errorf("after the fault: %s", r.Raw)
	}
}

func lastOperation(t *testing.T, f *fabric, wf, node string) map[string]any {
	t.Helper()
	ops, _ := f.do(t, "GET", "/envs/"+wf+"/"+node+"/operations", nil).Body["operations"].([]any)
	if len(ops) == 0 {
		t.Fatalf("no operations recorded for %s/%s", wf, node)
	}
	return ops[0].(map[string]any)
}

// holdProject takes the agent's lock on the shared storage for an environment, as another agent
// in the middle of a call would: the agent's next call on it waits until release is called.
func holdProject(t *testing.T, f *fabric, key envid.Key) (release func()) {
	t.Helper()
	sum := sha256.Sum256([]byte(key.WorkflowID + "\x00" + key.NodeID + "\x00" + key.VersionID))
	path := filepath.Join(f.Envs, ".locks", hex.EncodeToString(sum[:16])+".lock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { fh.Close() }) }
	t.Cleanup(release)
	return release
}

// TestClientDisconnect: a client that goes away while its add or delete is under way does not
// cut the operation short; the operation completes and the audit says so.
func TestClientDisconnect(t *testing.T) {
	f := newFabric(t, options{})
	tests := []struct {
		name, method, path string
		body               any
		check              func(t *testing.T)
	}{
		{"add", "POST", "/envs/wf/add/deps", map[string]any{"packages": []string{"delta==0.2.0"}}, func(t *testing.T) {
			if lockedVersions(t, f.do(t, "GET", "/envs/wf/add/deps", nil))["delta"] != "0.2.0" {
				t.Error("the add whose client went away is not in the environment")
			}
			f.inStep(t, "/envs/wf/add")
		}},
		{"delete", "DELETE", "/envs/wf/delete", nil, func(t *testing.T) {
			expect(t, f.do(t, "GET", "/envs/wf/delete", nil), 404, "ENV_NOT_FOUND")
			if _, err := os.Stat(f.envDir("wf", "delete", "v1")); !os.IsNotExist(err) {
				t.Errorf("the directory is still there: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": tt.name, "packages": []string{"alpha==1.0.0"}}), 201, "")
			release := holdProject(t, f, envid.Key{WorkflowID: "wf", NodeID: tt.name, VersionID: "v1"})
			ctx, cancel := context.WithCancel(context.Background())
			answered := make(chan response, 1)
			go func() { answered <- f.doCtx(t, ctx, tt.method, tt.path, tt.body) }()
			// Admitted and waiting for the project: its lease is held.
			waitFor(t, func() bool {
				ops, _ := f.do(t, "GET", "/envs/wf/"+tt.name, nil).Body["operations_in_progress"].([]any)
				return len(ops) == 1
			})
			cancel()
			if r := <-answered; r.Status != -1 {
				t.Fatalf("the request was answered before its client went away: %d %s", r.Status, r.Raw)
			}
			release()
			var last map[string]any
			waitFor(t, func() bool {
				last = lastOperation(t, f, "wf", tt.name)
				return last["status"] != "running"
			})
			if last["operation"] != tt.name || last["status"] != "succeeded" {
				t.Errorf("audit after the client went away: %v; want %s succeeded", last, tt.name)
			}
			tt.check(t)
			var outcomes []string
			for _, o := range f.do(t, "GET", "/envs/wf/"+tt.name+"/operations", nil).Body["operations"].([]any) {
				op := o.(map[string]any)
				outcomes = append(outcomes, fmt.Sprint(op["operation"], ":", op["status"]))
			}
			if slices.ContainsFunc(outcomes, func(s string) bool { return !strings.HasSuffix(s, ":succeeded") }) {
				t.Errorf("audit: %v; want every operation succeeded", outcomes)
			}
		})
	}
}
