package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/envid"
)

func lockedVersions(t *testing.T, r response) map[string]string {
	t.Helper()
	m, ok := r.Body["locked_versions"].(map[string]any)
	if !ok {
		t.Fatalf("no locked_versions in %s", r.Raw)
	}
	out := map[string]string{}
	for k, v := range m {
		out[k], _ = v.(string)
	}
	return out
}

func dependencies(t *testing.T, r response) []string {
	t.Helper()
	list, ok := r.Body["dependencies"].([]any)
	if !ok {
		t.Fatalf("no dependencies in %s", r.Raw)
	}
	out := make([]string, 0, len(list))
	for _, d := range list {
		out = append(out, d.(string))
	}
	return out
}

// TestLifecycle walks the TRD's whole API on one environment, as a user would.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})

	// Create with packages as repeated form fields.
	r := f.createForm(t, map[string][]string{"workflow_id": {"wf1"}, "node_id": {"node1"}, "packages": {"beta>=1", "delta==0.1.0"}}, "")
	expect(t, r, 201, "")
	if r.str("status") != "created" || r.str("version_id") != "v1" || r.str("python_version") != "3.11" {
		t.Fatalf("create response: %s", r.Raw)
	}
	if want := f.envDir("wf1", "node1", "v1"); r.str("env_path") != want {
		t.Errorf("env_path %q; want %q", r.str("env_path"), want)
	}
	if !strings.Contains(r.str("pyproject_toml"), `name = "`+(envid.Key{WorkflowID: "wf1", NodeID: "node1", VersionID: "v1"}).ProjectName()+`"`) {
		t.Errorf("pyproject_toml: %s", r.str("pyproject_toml"))
	}

	// Deps: from pyproject.toml and uv.lock.
	r = f.do(t, "GET", "/envs/wf1/node1/deps", nil)
	expect(t, r, 200, "")
	lv := lockedVersions(t, r)
	if lv["beta"] != "2.0.0" || lv["alpha"] != "2.0.0" || lv["delta"] != "0.1.0" {
		t.Errorf("locked_versions %v; want beta 2.0.0, alpha 2.0.0, delta 0.1.0", lv)
	}
	if d := dependencies(t, r); len(d) != 2 || !strings.HasPrefix(d[0], "beta") || d[1] != "delta==0.1.0" {
		t.Errorf("dependencies %q", d)
	}

	// Run: stdout, stderr, exit code, with the environment's own packages.
	r = f.do(t, "POST", "/envs/wf1/node1/run", map[string]any{
		"code": "import alpha, sys\nprint(alpha.__version__)\nprint('warn', file=sys.stderr)\nsys.exit(3)", "timeout": 30})
	expect(t, r, 200, "")
	if r.str("stdout") != "2.0.0\n" || r.str("stderr") != "warn\n" || r.Body["exit_code"] != float64(3) {
		t.Errorf("run: %s", r.Raw)
	}

	// Add, then a downgrade through update, then an upgrade to the newest allowed.
	r = f.do(t, "POST", "/envs/wf1/node1/deps", map[string]any{"packages": []string{"gamma"}})
	expect(t, r, 200, "")
	if lv := lockedVersions(t, r); lv["gamma"] != "1.0.0" || lv["alpha"] != "1.0.0" || lv["beta"] != "1.0.0" {
		t.Errorf("after adding gamma (alpha<1.1) the resolver must move beta and alpha down: %v", lv)
	}
	r = f.do(t, "DELETE", "/envs/wf1/node1/deps", map[string]any{"packages": []string{"gamma", "beta"}})
	expect(t, r, 200, "")
	if lv := lockedVersions(t, r); lv["gamma"] != "" || lv["beta"] != "" || lv["alpha"] != "" {
		t.Errorf("after removing gamma and beta nothing but delta should be locked: %v", lv)
	}
	r = f.do(t, "POST", "/envs/wf1/node1/deps", map[string]any{"packages": []string{"alpha>=1.0"}})
	expect(t, r, 200, "")
	r = f.do(t, "PUT", "/envs/wf1/node1/deps", map[string]any{"packages": []string{"alpha==1.0.0"}})
	expect(t, r, 200, "")
	if lv := lockedVersions(t, r); lv["alpha"] != "1.0.0" || r.str("status") != "updated" {
		t.Errorf("downgrade: %s", r.Raw)
	}
	r = f.do(t, "PUT", "/envs/wf1/node1/deps", map[string]any{"packages": []string{"alpha<2"}})
	expect(t, r, 200, "")
	if lv := lockedVersions(t, r); lv["alpha"] != "1.1.0" {
		t.Errorf("upgrade within alpha<2: locked %v; want 1.1.0", lv)
	}
	r = f.do(t, "PUT", "/envs/wf1/node1/deps", map[string]any{"packages": []string{"delta"}})
	expect(t, r, 200, "")
	if lv := lockedVersions(t, r); lv["delta"] != "0.1.0" {
		t.Errorf("delta==0.1.0 stays pinned on a bare update: %v", lv)
	}
	r = f.do(t, "POST", "/envs/wf1/node1/run", map[string]any{"code": "import alpha; print(alpha.__version__)"})
	if r.str("stdout") != "1.1.0\n" {
		t.Errorf("the venv must follow the lock: %s", r.Raw)
	}

	// Export gives exactly the files on disk.
	r = f.do(t, "GET", "/envs/wf1/node1/export?version_id=v1", nil)
	expect(t, r, 200, "")
	if r.str("pyproject_toml") != f.readFile(t, "wf1", "node1", "pyproject.toml") || r.str("uv_lock") != f.readFile(t, "wf1", "node1", "uv.lock") {
		t.Error("export differs from the project files on disk")
	}

	// Lose the project's .venv: status says so; runs through the API go on (they run the build by
	// id, not through the project directory); sync puts the .venv back.
	if err := os.RemoveAll(filepath.Join(f.envDir("wf1", "node1", "v1"), ".venv")); err != nil {
		t.Fatal(err)
	}
	r = f.do(t, "GET", "/envs/wf1/node1", nil)
	expect(t, r, 200, "")
	if r.Body["in_step"] != false {
		t.Errorf("status with no .venv must not be in step: %s", r.Raw)
	}
	expect(t, f.do(t, "POST", "/envs/wf1/node1/run", map[string]any{"code": "print(1)"}), 200, "")
	r = f.do(t, "POST", "/envs/wf1/node1/sync", nil)
	expect(t, r, 200, "")
	if r.str("status") != "synced" || r.Body["packages_installed"] != float64(2) {
		t.Errorf("sync: %s; want 2 packages (alpha, delta)", r.Raw)
	}
	r = f.do(t, "POST", "/envs/wf1/node1/run", map[string]any{"code": "import alpha, delta; print(alpha.__version__, delta.__version__)"})
	if r.str("stdout") != "1.1.0 0.1.0\n" {
		t.Errorf("after sync: %s", r.Raw)
	}
	r = f.do(t, "GET", "/envs/wf1/node1", nil)
	if r.Body["in_step"] != true || r.str("state") != "ACTIVE" {
		t.Errorf("status after sync: %s", r.Raw)
	}
	if _, err := os.Stat(filepath.Join(f.envDir("wf1", "node1", "v1"), ".venv", "bin", "python")); err != nil {
		t.Errorf("sync did not put the project's .venv back: %v", err)
	}

	// List.
	r = f.do(t, "GET", "/envs?workflow_id=wf1", nil)
	if list, _ := r.Body["environments"].([]any); len(list) != 1 {
		t.Errorf("list: %s", r.Raw)
	}

	// Delete; it is gone from disk and from the API; its history stays.
	r = f.do(t, "DELETE", "/envs/wf1/node1", nil)
	expect(t, r, 200, "")
	if _, err := os.Stat(f.envDir("wf1", "node1", "v1")); !os.IsNotExist(err) {
		t.Errorf("env dir still there after delete: %v", err)
	}
	expect(t, f.do(t, "GET", "/envs/wf1/node1/deps", nil), 404, "ENV_NOT_FOUND")

	// Every operation is in the audit, newest first, with its outcome.
	r = f.do(t, "GET", "/envs/wf1/node1/operations", nil)
	expect(t, r, 200, "")
	var got []string
	for _, o := range r.Body["operations"].([]any) {
		op := o.(map[string]any)
		got = append(got, op["operation"].(string)+":"+op["status"].(string))
		if op["actor"] != "e2e-test" || op["request_id"] == "" {
			t.Errorf("operation without actor or request id: %v", op)
		}
	}
	want := []string{"delete:succeeded", "run:succeeded", "sync:succeeded", "run:succeeded", "run:succeeded",
		"update:succeeded", "update:succeeded", "update:succeeded", "add:succeeded", "remove:succeeded", "add:succeeded",
		"run:succeeded", "create:succeeded"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit trail\n got %v\nwant %v", got, want)
	}
}

func TestCreateVariants(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})

	t.Run("requirements file", func(t *testing.T) {
		r := f.createForm(t, map[string][]string{"workflow_id": {"wf"}, "node_id": {"req"}},
			"# pinned for the node\nalpha==1.0.0\nepsilon  # brings beta and delta\n")
		expect(t, r, 201, "")
		lv := lockedVersions(t, f.do(t, "GET", "/envs/wf/req/deps", nil))
		if lv["alpha"] != "1.0.0" || lv["beta"] != "1.0.0" || lv["epsilon"] != "1.0.0" || lv["delta"] != "0.2.0" {
			t.Errorf("locked %v", lv)
		}
	})
	t.Run("packages as one JSON-array field, urlencoded", func(t *testing.T) {
		r := f.createURLEncoded(t, url.Values{"workflow_id": {"wf"}, "node_id": {"arr"}, "version_id": {"v2"}, "packages": {`["alpha<2", "delta"]`}})
		expect(t, r, 201, "")
		lv := lockedVersions(t, f.do(t, "GET", "/envs/wf/arr/deps?version_id=v2", nil))
		if lv["alpha"] != "1.1.0" || lv["delta"] != "0.2.0" {
			t.Errorf("locked %v", lv)
		}
		// Versions are separate environments.
		expect(t, f.do(t, "GET", "/envs/wf/arr/deps", nil), 404, "ENV_NOT_FOUND")
	})
	t.Run("JSON body, no packages", func(t *testing.T) {
		r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "empty"})
		expect(t, r, 201, "")
		r = f.do(t, "POST", "/envs/wf/empty/run", map[string]any{"code": "import sys; print(sys.version_info[:2])"})
		if r.str("stdout") != "(3, 11)\n" {
			t.Errorf("run in an empty env: %s", r.Raw)
		}
	})
	t.Run("ids that would collide under the TRD's joined layout stay apart", func(t *testing.T) {
		expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "a_b", "node_id": "c", "packages": []string{"delta==0.1.0"}}), 201, "")
		expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "a", "node_id": "b_c", "packages": []string{"delta==0.2.0"}}), 201, "")
		if lockedVersions(t, f.do(t, "GET", "/envs/a_b/c/deps", nil))["delta"] != "0.1.0" {
			t.Error("a_b/c lost its own delta")
		}
	})
}

// TestErrors shows each documented error code through the real stack, and that nothing changes.
func TestErrors(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	pyproject := f.readFile(t, "wf", "n", "pyproject.toml")
	lock := f.readFile(t, "wf", "n", "uv.lock")
	unchanged := func(t *testing.T) {
		t.Helper()
		if f.readFile(t, "wf", "n", "pyproject.toml") != pyproject || f.readFile(t, "wf", "n", "uv.lock") != lock {
			t.Fatal("pyproject.toml or uv.lock changed after a failed request")
		}
		r := f.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": "import alpha; print(alpha.__version__)"})
		if r.str("stdout") != "1.0.0\n" {
			t.Fatalf("the environment no longer runs its last good revision: %s", r.Raw)
		}
	}

	tests := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"option as a package", "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"--index-url=http://127.0.0.1:1/simple"}}, 400, "INVALID_PACKAGES"},
		{"URL as a package", "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha @ http://127.0.0.1:1/alpha.whl"}}, 400, "INVALID_PACKAGES"},
		{"path as a package", "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"../../etc"}}, 400, "INVALID_PACKAGES"},
		{"no packages", "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{}}, 400, "INVALID_PACKAGES"},
		{"packages not a list", "POST", "/envs/wf/n/deps", map[string]any{"packages": 7}, 400, "INVALID_REQUEST"},
		{"unknown environment", "GET", "/envs/wf/nope/deps", nil, 404, "ENV_NOT_FOUND"},
		{"unknown version", "POST", "/envs/wf/n/run?version_id=v9", map[string]any{"code": "print(1)"}, 404, "ENV_NOT_FOUND"},
		{"exists", "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n"}, 409, "ENV_ALREADY_EXISTS"},
		{"unsatisfiable", "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"gamma", "beta>=2"}}, 422, "PACKAGE_RESOLUTION_FAILED"},
		{"no such package", "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"does-not-exist"}}, 422, "PACKAGE_RESOLUTION_FAILED"},
		{"update to an impossible version", "PUT", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha==9.9"}}, 422, "PACKAGE_RESOLUTION_FAILED"},
		{"remove what is not there", "DELETE", "/envs/wf/n/deps", map[string]any{"packages": []string{"beta"}}, 404, "DEPENDENCY_NOT_FOUND"},
		{"update what is not there", "PUT", "/envs/wf/n/deps", map[string]any{"packages": []string{"beta"}}, 404, "DEPENDENCY_NOT_FOUND"},
		{"bad id", "GET", "/envs/wf/bad$id/deps", nil, 400, "INVALID_ID"},
		{"dot-dot id", "POST", "/envs", map[string]any{"workflow_id": "..", "node_id": "n"}, 400, "INVALID_ID"},
		{"bad python version", "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "p", "python_version": "3.x"}, 400, "INVALID_REQUEST"},
		{"python that is not installed", "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "p", "python_version": "3.4"}, 422, "PYTHON_UNAVAILABLE"},
		{"empty code", "POST", "/envs/wf/n/run", map[string]any{"code": ""}, 400, "INVALID_REQUEST"},
		{"negative timeout", "POST", "/envs/wf/n/run", map[string]any{"code": "print(1)", "timeout": -1}, 400, "INVALID_REQUEST"},
		{"timeout over the maximum", "POST", "/envs/wf/n/run", map[string]any{"code": "print(1)", "timeout": 1e6}, 400, "INVALID_REQUEST"},
		{"unknown field", "POST", "/envs/wf/n/run", map[string]any{"cod": "print(1)"}, 400, "INVALID_REQUEST"},
		{"wrong method", "PATCH", "/envs/wf/n/deps", nil, 405, "METHOD_NOT_ALLOWED"},
		{"no route", "GET", "/nothing", nil, 404, "NOT_FOUND"},
		{"body too large", "POST", "/envs/wf/n/run", map[string]any{"code": strings.Repeat("#", 9<<20)}, 413, "REQUEST_TOO_LARGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(t, tt.method, tt.path, tt.body)
			expect(t, r, tt.status, tt.code)
			e := r.Body["error"].(map[string]any)
			if msg, _ := e["message"].(string); msg == "" {
				t.Errorf("error without a message: %s", r.Raw)
			}
			unchanged(t)
		})
	}
	if _, err := os.Stat(f.envDir("wf", "p", "v1")); !os.IsNotExist(err) {
		t.Errorf("a refused create left a directory behind: %v", err)
	}

	t.Run("uv failure", func(t *testing.T) {
		f.proxy.corrupt.Store("delta-0.2.0-py3-none-any.whl")
		defer f.proxy.corrupt.Store("")
		r := f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}})
		expect(t, r, 500, "UV_EXECUTION_ERROR")
		if e := r.Body["error"].(map[string]any); e["uv_output"] == nil {
			t.Errorf("a uv failure should carry uv's output: %s", r.Raw)
		}
		unchanged(t)
		r = f.do(t, "GET", "/envs/wf/n", nil)
		if r.str("state") != "ACTIVE" || r.Body["in_step"] != true {
			t.Errorf("after a failed add the environment is back at its last good revision: %s", r.Raw)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		// The code runs in a PID namespace (the agent's default sandbox): the pids it prints are
		// not the host's, so the host finds its sleepers by a command line of their own.
		marker := strconv.Itoa(300000 + os.Getpid()%100000)
		code := "import subprocess, os, time\n" +
			"p = subprocess.Popen(['sleep', '" + marker + "'])\n" +
			"q = subprocess.Popen(['sh', '-c', 'sleep " + marker + " & echo $!; wait'], stdout=subprocess.PIPE)\n" +
			"print(os.getpid(), p.pid, q.pid, q.stdout.readline().decode().strip(), flush=True)\n" +
			"time.sleep(300)\n"
		start := time.Now()
		r := f.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": code, "timeout": 1.5})
		expect(t, r, 504, "EXECUTION_TIMEOUT")
		if time.Since(start) > 60*time.Second {
			t.Errorf("the timeout took %s to fire", time.Since(start))
		}
		e := r.Body["error"].(map[string]any)
		out, _ := e["stdout"].(string)
		pids := regexp.MustCompile(`\d+`).FindAllString(out, -1)
		if len(pids) != 4 {
			t.Fatalf("want 4 pids in the partial stdout, got %q", out)
		}
		waitGone(t, "sleep\x00"+marker+"\x00")
	})

	t.Run("audit", func(t *testing.T) {
		r := f.do(t, "GET", "/envs/wf/n/operations?limit=500", nil)
		counts := map[string]int{}
		for _, o := range r.Body["operations"].([]any) {
			op := o.(map[string]any)
			counts[fmt.Sprint(op["operation"], ":", op["status"], ":", op["error_code"])]++
			if op["operation"] == "run" {
				p := op["params"].(map[string]any)
				if _, ok := p["code_sha256"]; !ok || p["code"] != nil {
					t.Errorf("a run's audit records the code's hash, not the code: %v", p)
				}
			}
		}
		for _, want := range []string{"add:failed:PACKAGE_RESOLUTION_FAILED", "update:failed:PACKAGE_RESOLUTION_FAILED",
			"add:failed:UV_EXECUTION_ERROR", "run:failed:EXECUTION_TIMEOUT", "create:succeeded:<nil>"} {
			if counts[want] == 0 {
				t.Errorf("no audit row %s in %v", want, counts)
			}
		}
	})
}

// waitGone waits until no live process on the host has a command line (NUL-separated argv)
// containing cmdline; zombies awaiting their reaper count as gone.
func waitGone(t *testing.T, cmdline string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var alive []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || !strings.Contains(string(b), cmdline) {
				continue
			}
			if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
				if f := strings.Fields(string(st)); len(f) > 2 && f[2] != "Z" {
					alive = append(alive, pid)
				}
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range alive {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Errorf("processes %v (%q) outlived the timeout", alive, cmdline)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConcurrentMutation: one change per environment; a second change, a sync or a delete gets
// 423 at once, naming the holder, while runs go on (they use the current build, which a change
// never touches); a change whose caller goes away still completes and is audited as it ended.
func TestConcurrentMutation(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	pyproject := f.readFile(t, "wf", "n", "pyproject.toml")

	stalled := f.Index.Stall("delta")
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan response, 1)
	go func() {
		first <- f.doCtx(t, ctx, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}})
	}()
	select {
	case <-stalled:
	case <-time.After(60 * time.Second):
		t.Fatal("the first add never reached the index")
	}

	r := f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha==1.1.0"}})
	expect(t, r, 423, "ENV_LOCKED")
	if held := r.Body["error"].(map[string]any)["held_by"].(map[string]any); held["operation"] != "add" {
		t.Errorf("423 should name the holder: %s", r.Raw)
	}
	expect(t, f.do(t, "POST", "/envs/wf/n/sync", nil), 423, "ENV_LOCKED")
	expect(t, f.do(t, "DELETE", "/envs/wf/n", nil), 423, "ENV_LOCKED")
	// Builds: a run is never refused because of a change (before builds this was 423).
	if r := f.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": "import alpha; print(alpha.__version__)"}); r.Status != 200 || r.str("stdout") != "1.0.0\n" {
		t.Errorf("run during a change: %s; want 200 on the current build", r.Raw)
	}

	// The caller gives up; the add, admitted, runs to its end once the index answers.
	cancel()
	<-first
	f.Index.Release("delta")
	deadline := time.Now().Add(60 * time.Second)
	for {
		r = f.do(t, "GET", "/envs/wf/n", nil)
		if ops, _ := r.Body["operations_in_progress"].([]any); len(ops) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the interrupted add still holds the environment: %s", r.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Its outcome is recorded and published although nobody read the answer.
	if lockedVersions(t, f.do(t, "GET", "/envs/wf/n/deps", nil))["delta"] == "" || f.readFile(t, "wf", "n", "pyproject.toml") == pyproject {
		t.Error("the add whose caller went away did not complete")
	}
	var outcomes []string
	for _, o := range f.do(t, "GET", "/envs/wf/n/operations", nil).Body["operations"].([]any) {
		op := o.(map[string]any)
		outcomes = append(outcomes, fmt.Sprint(op["operation"], ":", op["status"]))
	}
	if !slices.Contains(outcomes, "add:succeeded") || slices.Contains(outcomes, "add:failed") || slices.Contains(outcomes, "add:running") {
		t.Errorf("audit %v; want the add whose caller went away succeeded", outcomes)
	}
	r = f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"alpha==1.1.0"}})
	expect(t, r, 200, "")

	// Runs share the environment with each other and with a change: a change commits while runs
	// are under way (before builds it got 423), and the runs end on the build they started on.
	runDone := make(chan response, 2)
	for range 2 {
		go func() {
			runDone <- f.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": "import time; time.sleep(2); print('ok')"})
		}()
	}
	waitFor(t, func() bool {
		r := f.do(t, "GET", "/envs/wf/n", nil)
		ops, _ := r.Body["operations_in_progress"].([]any)
		return len(ops) == 2
	})
	expect(t, f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta==0.1.0"}}), 200, "")
	for range 2 {
		if r := <-runDone; r.Status != 200 || r.str("stdout") != "ok\n" {
			t.Errorf("concurrent run: %s", r.Raw)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHardlinks: installed files are the cache's files, not copies, and two environments with the
// same lock share one build.
func TestHardlinks(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "a", "packages": []string{"alpha==1.0.0"}}), 201, "")
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "b", "packages": []string{"alpha==1.0.0"}}), 201, "")
	stat := func(p string) *syscall.Stat_t {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	a := stat(filepath.Join(f.envDir("wf", "a", "v1"), ".venv/lib/python3.11/site-packages/alpha/__init__.py"))
	b := stat(filepath.Join(f.envDir("wf", "b", "v1"), ".venv/lib/python3.11/site-packages/alpha/__init__.py"))
	if a.Ino != b.Ino || a.Nlink < 2 {
		t.Fatalf("alpha/__init__.py: inodes %d and %d, %d links; want one inode shared by the cache and the build both envs run on", a.Ino, b.Ino, a.Nlink)
	}
	found := false
	filepath.Walk(f.Cache, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && info.Sys().(*syscall.Stat_t).Ino == a.Ino {
			found = true
		}
		return nil
	})
	if !found {
		t.Error("the installed file's inode is not in UV_CACHE_DIR")
	}
}
