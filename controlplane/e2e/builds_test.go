package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// The end-to-end tests of immutable builds (docs/builds.md): real processes, real uv, the local
// index. Each test has one fabric of its own and runs in parallel with the others.

// hasDelta is code that reports whether delta is importable, lazily, after waiting: a run that
// started on a build without it must not find it even when a change switched the environment
// meanwhile.
const hasDelta = "import importlib.util as u\nprint('delta' if u.find_spec('delta') else 'no delta')"

func runCode(t *testing.T, f *fabric, path, code string) response {
	t.Helper()
	return f.do(t, "POST", path+"/run", map[string]any{"code": code})
}

func statusBuild(t *testing.T, f *fabric, path string) (string, map[string]any, response) {
	t.Helper()
	r := f.do(t, "GET", path, nil)
	expect(t, r, 200, "")
	b, _ := r.Body["build"].(map[string]any)
	return r.str("build_id"), b, r
}

// TestBuildsRunsDuringChange: runs keep answering 200 throughout an add that takes seconds (its
// resolution waits on the index), a run in flight when the change commits finishes on the build
// it started on, and the runs after the acknowledgement see the new packages. Then, on the same
// environment: a dry run answers the difference and changes nothing, and a rollback makes
// revision 1 current again without a resolve or an install.
func TestBuildsRunsDuringChange(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	const env = "/envs/wf/n"
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	before, _, _ := statusBuild(t, f, env)

	stalled := f.Index.Stall("delta")
	added := make(chan response, 1)
	go func() { added <- f.do(t, "POST", env+"/deps", map[string]any{"packages": []string{"delta"}}) }()
	select {
	case <-stalled:
	case <-time.After(60 * time.Second):
		t.Fatal("the add never reached the index")
	}

	// While the add waits on the index: runs in a loop, every one answered 200 on the current build.
	var answered, refused atomic.Int64
	stop := make(chan struct{})
	var loop sync.WaitGroup
	loop.Add(1)
	go func() {
		defer loop.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// A run that reads the environment after the add committed (it may, before the
			// add's answer reaches this test) is on revision 2's build: each run must see the
			// packages of the revision it names.
			r := runCode(t, f, env, hasDelta)
			if r.Status == 200 && (r.Body["revision"] == float64(1) && r.str("stdout") == "no delta\n" ||
				r.Body["revision"] == float64(2) && r.str("stdout") == "delta\n") {
				answered.Add(1)
			} else {
				refused.Add(1)
				t.Errorf("a run during the add: %s", tail(r.Raw, 600))
			}
		}
	}()
	// And one run that starts now and looks for delta only after the add has committed.
	inFlight := make(chan response, 1)
	go func() {
		inFlight <- runCode(t, f, env, "import time\ntime.sleep(10)\n"+hasDelta)
	}()
	waitFor(t, func() bool { return answered.Load() >= 3 })
	time.Sleep(2 * time.Second) // the add takes seconds
	f.Index.Release("delta")
	var r response
	select {
	case r = <-added:
	case <-time.After(2 * time.Minute):
		t.Fatal("the add did not answer")
	}
	expect(t, r, 200, "")
	close(stop)
	loop.Wait()
	if refused.Load() > 0 || answered.Load() < 3 {
		t.Errorf("runs during the add: %d answered, %d not; want all answered", answered.Load(), refused.Load())
	}
	t.Logf("%d runs answered 200 while the add was under way", answered.Load())
	// Acknowledged: the next run sees the new build.
	if r := runCode(t, f, env, hasDelta); r.Status != 200 || r.str("stdout") != "delta\n" || r.Body["revision"] != float64(2) {
		t.Errorf("the first run after the add: %s; want delta at revision 2", r.Raw)
	}
	// The run in flight during the switch finished on the build it started on.
	select {
	case r = <-inFlight:
	case <-time.After(time.Minute):
		t.Fatal("the run in flight did not answer")
	}
	if r.Status != 200 || r.str("stdout") != "no delta\n" || r.Body["revision"] != float64(1) {
		t.Errorf("the run in flight during the switch: %s; want it on revision 1's build (no delta)", r.Raw)
	}
	after, _, _ := statusBuild(t, f, env)
	if after == "" || after == before {
		t.Errorf("build ids: %q before the add, %q after; want a new build", before, after)
	}

	// Dry run: the difference, transitive packages included, and nothing changed.
	dir := f.envDir("wf", "n", "v1")
	files := func() string {
		a, _ := os.ReadFile(filepath.Join(dir, "pyproject.toml"))
		b, _ := os.ReadFile(filepath.Join(dir, "uv.lock"))
		return string(a) + "\x00" + string(b)
	}
	onDisk, deps := files(), f.do(t, "GET", env+"/deps", nil)
	r = f.do(t, "POST", env+"/deps", map[string]any{"packages": []string{"epsilon"}, "dry_run": true})
	expect(t, r, 200, "")
	changes := map[string][2]any{}
	for _, c := range r.Body["changes"].([]any) {
		m := c.(map[string]any)
		changes[m["name"].(string)] = [2]any{m["from"], m["to"]}
	}
	if r.Body["dry_run"] != true || changes["epsilon"] != [2]any{nil, "1.0.0"} || changes["beta"] != [2]any{nil, "1.0.0"} ||
		len(changes) != 2 || r.Body["revision"] != float64(2) || lockedVersions(t, r)["epsilon"] != "1.0.0" {
		t.Errorf("dry run of an add: %s; want epsilon and beta (transitive) added, revision 2", r.Raw)
	}
	r = f.do(t, "DELETE", env+"/deps", map[string]any{"packages": []string{"delta"}, "dry_run": true})
	if c, _ := r.Body["changes"].([]any); r.Status != 200 || len(c) != 1 || c[0].(map[string]any)["to"] != nil {
		t.Errorf("dry run of a remove: %s; want delta removed (to null)", r.Raw)
	}
	if files() != onDisk {
		t.Error("a dry run changed the project files")
	}
	if now := f.do(t, "GET", env+"/deps", nil); now.Raw != deps.Raw {
		t.Errorf("a dry run changed the environment:\nbefore %s\nafter %s", deps.Raw, now.Raw)
	}
	op := lastOperation(t, f, "wf", "n")
	if p, _ := op["params"].(map[string]any); op["operation"] != "remove" || op["status"] != "succeeded" || p["dry_run"] != true {
		t.Errorf("audit of a dry run: %v; want a succeeded remove with params.dry_run", op)
	}

	// Rollback to revision 1: its files and build, at once.
	r = f.do(t, "POST", env+"/rollback", map[string]any{"revision": 1})
	expect(t, r, 200, "")
	if r.Body["rolled_back_to"] != float64(1) || r.Body["rebuilt"] != false || r.Body["revision"] != float64(3) || lockedVersions(t, r)["delta"] != "" {
		t.Errorf("rollback: %s; want revision 3 with revision 1's packages, no rebuild", r.Raw)
	}
	if id, _, _ := statusBuild(t, f, env); id != before {
		t.Errorf("after the rollback the build is %q; want revision 1's %q", id, before)
	}
	if op := lastOperation(t, f, "wf", "n"); op["operation"] != "rollback" || op["status"] != "succeeded" {
		t.Errorf("audit of the rollback: %v", op)
	}
	if r := runCode(t, f, env, hasDelta); r.str("stdout") != "no delta\n" {
		t.Errorf("a run after the rollback: %s", r.Raw)
	}
	expect(t, f.do(t, "POST", env+"/rollback", map[string]any{"revision": 9}), 400, "INVALID_REQUEST")
	expect(t, f.do(t, "POST", env+"/rollback", map[string]any{}), 400, "INVALID_REQUEST")
}

// du is the disk usage of paths in KiB, each hardlinked file counted once.
func du(t *testing.T, paths ...string) int64 {
	t.Helper()
	out, err := exec.Command("du", append([]string{"-skc"}, paths...)...).Output()
	if err != nil {
		t.Fatalf("du: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	n, err := strconv.ParseInt(strings.Fields(lines[len(lines)-1])[0], 10, 64)
	if err != nil {
		t.Fatalf("du: %q", out)
	}
	return n
}

// TestBuildsShared: ten identical environments cost at most 64 KiB each beyond the first; one
// made "from" another takes its build without a resolve; a package directory deleted by hand is
// reported by status and repaired by sync; a build a run holds is never removed by cleanup.
func TestBuildsShared(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	pkgs := []string{"alpha==1.0.0", "delta==0.1.0"}
	create := func(node string) response {
		r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": node, "packages": pkgs})
		expect(t, r, 201, "")
		return r
	}
	first := create("n0")
	one := du(t, f.Envs, f.Cache)
	for i := 1; i < 10; i++ {
		if r := create("n" + strconv.Itoa(i)); r.str("build_id") != first.str("build_id") {
			t.Errorf("environment %d has build %q; want the first one's %q", i, r.str("build_id"), first.str("build_id"))
		}
	}
	ten := du(t, f.Envs, f.Cache)
	each := (ten - one) / 9
	t.Logf("disk: 1 environment %d KiB, 10 identical %d KiB: %d KiB each beyond the first", one, ten, each)
	if each > 64 {
		t.Errorf("each further identical environment costs %d KiB; want at most 64", each)
	}
	_, b, _ := statusBuild(t, f, "/envs/wf/n0")
	if b["shared_with"] != float64(9) || b["intact"] != true || b["state"] != "READY" {
		t.Errorf("status build: %v; want READY, intact, shared with 9", b)
	}

	// From another environment: its files and build, no resolution.
	logBefore, _ := os.ReadFile(f.agent.log)
	r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "copy", "from": map[string]any{"workflow_id": "wf", "node_id": "n0"}})
	expect(t, r, 201, "")
	logAfter, _ := os.ReadFile(f.agent.log)
	if r.str("build_id") != first.str("build_id") || r.Body["revision"] != float64(1) {
		t.Errorf("create from n0: %s; want n0's build at revision 1", r.Raw)
	}
	if n := strings.Count(string(logAfter[len(logBefore):]), "msg=locked"); n != 0 {
		t.Errorf("create from another environment resolved %d time(s); want none", n)
	}
	if op := lastOperation(t, f, "wf", "copy"); op["operation"] != "create" || op["result"].(map[string]any)["resolved"] != false {
		t.Errorf("audit of the create from n0: %v; want resolved false", op)
	}
	if r := runCode(t, f, "/envs/wf/copy", "import alpha, delta; print(alpha.__version__, delta.__version__)"); r.str("stdout") != "1.0.0 0.1.0\n" {
		t.Errorf("run in the copy: %s", r.Raw)
	}

	// Damage: delete an installed package's directory by hand.
	pkgDirs, _ := filepath.Glob(filepath.Join(f.Envs, ".builds", first.str("build_id"), ".venv", "lib", "python*", "site-packages", "delta"))
	if len(pkgDirs) != 1 {
		t.Fatalf("delta's directory in the build: %v", pkgDirs)
	}
	if err := os.RemoveAll(pkgDirs[0]); err != nil {
		t.Fatal(err)
	}
	_, b, st := statusBuild(t, f, "/envs/wf/n3")
	damaged, _ := b["damaged"].([]any)
	if b["intact"] != false || len(damaged) != 1 || damaged[0].(map[string]any)["name"] != "delta" || st.Body["in_step"] != false {
		t.Errorf("status after deleting delta's directory: %s; want the build damaged in delta", st.Raw)
	}
	if m := metrics(t, f); !strings.Contains(m, "\nenvfabric_builds_damaged 1\n") {
		t.Errorf("metrics after the damage was found: want envfabric_builds_damaged 1\n%s", grepLines(m, "envfabric_builds"))
	}
	r = f.do(t, "POST", "/envs/wf/n3/sync", nil)
	expect(t, r, 200, "")
	if m := metrics(t, f); !strings.Contains(m, "\nenvfabric_builds_damaged 0\n") {
		t.Errorf("metrics after the repair: want envfabric_builds_damaged 0\n%s", grepLines(m, "envfabric_builds"))
	}
	if r.Body["repaired"] != true {
		t.Errorf("sync of a damaged build: %s; want repaired", r.Raw)
	}
	_, b, st = statusBuild(t, f, "/envs/wf/n3")
	if b["intact"] != true || b["state"] != "READY" || st.Body["in_step"] != true {
		t.Errorf("status after the sync: %s; want the build intact", st.Raw)
	}
	if r := runCode(t, f, "/envs/wf/n7", "import delta; print(delta.__version__)"); r.str("stdout") != "0.1.0\n" {
		t.Errorf("a run of another environment of the repaired build: %s", r.Raw)
	}

	// A build in use: a run holds revision 1's build of "solo" while an add moves solo to
	// another build; cleanup must skip the old build until the run has ended.
	solo := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "solo", "packages": []string{"alpha==1.1.0"}})
	expect(t, solo, 201, "")
	old := solo.str("build_id")
	running := make(chan response, 1)
	go func() {
		running <- runCode(t, f, "/envs/wf/solo", "import time; time.sleep(12); import alpha; print(alpha.__version__)")
	}()
	waitFor(t, func() bool {
		ops, _ := f.do(t, "GET", "/envs/wf/solo", nil).Body["operations_in_progress"].([]any)
		return len(ops) == 1
	})
	expect(t, f.do(t, "POST", "/envs/wf/solo/deps", map[string]any{"packages": []string{"delta"}}), 200, "")
	skipped := false
	for deadline := time.Now().Add(11 * time.Second); time.Now().Before(deadline) && !skipped; time.Sleep(time.Second) {
		c := f.do(t, "POST", "/envs/cleanup", map[string]any{"idle_hours": 1000})
		expect(t, c, 200, "")
		for _, e := range c.Body["builds_removed"].([]any) {
			if e.(map[string]any)["build_id"] == old {
				t.Fatalf("cleanup removed a build a run holds: %s", c.Raw)
			}
		}
		for _, e := range c.Body["builds_skipped"].([]any) {
			skipped = skipped || e.(map[string]any)["build_id"] == old
		}
	}
	if !skipped {
		t.Error("cleanup never reported the build in use as skipped")
	}
	if r := <-running; r.Status != 200 || r.str("stdout") != "1.1.0\n" {
		t.Errorf("the run that held the old build: %s", r.Raw)
	}
	c := f.do(t, "POST", "/envs/cleanup", map[string]any{"idle_hours": 1000})
	removed := slices.ContainsFunc(c.Body["builds_removed"].([]any), func(e any) bool { return e.(map[string]any)["build_id"] == old })
	if _, err := os.Stat(filepath.Join(f.Envs, ".builds", old)); !removed || !os.IsNotExist(err) {
		t.Errorf("cleanup after the run: %s (stat: %v); want the unreferenced build removed", c.Raw, err)
	}
	if _, err := os.Stat(filepath.Join(f.Envs, ".builds", first.str("build_id"), "BUILD.json")); err != nil {
		t.Errorf("cleanup touched a build environments use: %v", err)
	}
}

// TestBuildsAgentKilledMidBuild: kill -9 of the agent while it materialises a build leaves the
// current build serving, and the half build is never used: the next add materialises it afresh.
func TestBuildsAgentKilledMidBuild(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	const env = "/envs/wf/n"
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	current, _, _ := statusBuild(t, f, env)

	reached, release := f.proxy.stallFiles(t, "delta-")
	added := make(chan response, 1)
	go func() { added <- f.do(t, "POST", env+"/deps", map[string]any{"packages": []string{"delta"}}) }()
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatal("the build never downloaded delta")
	}
	half := ""
	entries, _ := os.ReadDir(filepath.Join(f.Envs, ".builds"))
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(f.Envs, ".builds", e.Name(), "BUILD.json")); e.IsDir() && e.Name() != current && os.IsNotExist(err) && !strings.HasPrefix(e.Name(), ".") {
			half = e.Name()
		}
	}
	if half == "" {
		t.Fatalf("no build being materialised under %s: %v", filepath.Join(f.Envs, ".builds"), entries)
	}
	_ = f.agent.cmd.Process.Kill()
	<-f.agent.done
	select {
	case r := <-added:
		expect(t, r, 503, "AGENT_UNAVAILABLE")
	case <-time.After(2 * time.Minute):
		t.Fatal("the add did not answer after its agent died")
	}
	release()
	f.restartAgent(t)
	// The current build serves at once; nothing to repair.
	if r := runCode(t, f, env, hasDelta); r.Status != 200 || r.str("stdout") != "no delta\n" {
		t.Errorf("a run after the agent died mid-build: %s", r.Raw)
	}
	if id, b, st := statusBuild(t, f, env); id != current || b["intact"] != true || st.str("state") != "ACTIVE" || st.Body["revision"] != float64(1) {
		t.Errorf("status after the agent died mid-build: %s; want revision 1 on build %s, ACTIVE", st.Raw, current)
	}
	// The half build is not complete, and the next add materialises it afresh.
	if _, err := os.Stat(filepath.Join(f.Envs, ".builds", half, "BUILD.json")); !os.IsNotExist(err) {
		t.Errorf("the half build has a completion marker: %v", err)
	}
	r := f.do(t, "POST", env+"/deps", map[string]any{"packages": []string{"delta"}})
	expect(t, r, 200, "")
	if r.str("build_id") != half {
		t.Logf("the add's build %s; the half one was %s", r.str("build_id"), half)
	}
	if _, err := os.Stat(filepath.Join(f.Envs, ".builds", r.str("build_id"), "BUILD.json")); err != nil {
		t.Errorf("the build the add committed is not complete: %v", err)
	}
	if r := runCode(t, f, env, hasDelta); r.str("stdout") != "delta\n" {
		t.Errorf("a run after the add: %s", r.Raw)
	}
}

// TestBuildsHibernation: a build unused for HIBERNATE_AFTER is removed and its environment shows
// HIBERNATED; the next run wakes it transparently (the answer says so).
func TestBuildsHibernation(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{cpEnv: []string{"HIBERNATE_AFTER=5s", "LEASE_TTL=3s"}})
	const env = "/envs/wf/n"
	r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.1.0"}})
	expect(t, r, 201, "")
	id := r.str("build_id")
	waitFor(t, func() bool { return f.do(t, "GET", env, nil).str("state") == "HIBERNATED" })
	if _, err := os.Stat(filepath.Join(f.Envs, ".builds", id)); !os.IsNotExist(err) {
		t.Errorf("the hibernated build is still on disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.envDir("wf", "n", "v1"), "uv.lock")); err != nil {
		t.Errorf("hibernation removed the project files: %v", err)
	}
	r = runCode(t, f, env, "import alpha; print(alpha.__version__)")
	if r.Status != 200 || r.str("stdout") != "1.1.0\n" || r.Body["woke"] != true {
		t.Errorf("a run of a hibernated environment: %s; want it woken and answered", r.Raw)
	}
	// Used a moment ago, it stays awake for HIBERNATE_AFTER.
	if st := f.do(t, "GET", env, nil); st.str("state") != "ACTIVE" {
		t.Errorf("status after the wake: %s; want ACTIVE", st.Raw)
	}
	if r := runCode(t, f, env, "print(1)"); r.Status != 200 || r.Body["woke"] != nil {
		t.Errorf("a second run: %s; want it answered without a wake", r.Raw)
	}
	if _, err := os.Stat(filepath.Join(f.Envs, ".builds", id, "BUILD.json")); err != nil {
		t.Errorf("the woken build is not complete on disk: %v", err)
	}
}

// TestBuildsUpgradeInPlace: an environment of the layout before builds (its own full .venv, no
// build id in the database) runs as before, and moves to a build on its next change or on
// POST .../sync.
func TestBuildsUpgradeInPlace(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	var ids []string
	for _, node := range []string{"n", "m"} {
		r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": node, "packages": []string{"alpha==1.0.0"}})
		expect(t, r, 201, "")
		ids = append(ids, r.str("build_id"))
	}
	id := ids[0]
	st := f.do(t, "GET", "/envs/wf/n", nil)
	// Make both what the layout before builds left: a full .venv of their own, no build recorded.
	for _, node := range []string{"n", "m"} {
		dir := f.envDir("wf", node, "v1")
		if err := os.RemoveAll(filepath.Join(dir, ".venv")); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(context.Background(), testenv.UV(t), "sync", "--frozen", "--project", dir, "--python", st.str("python_path"))
		cmd.Env = append(os.Environ(), "UV_CACHE_DIR="+f.Cache, "UV_DEFAULT_INDEX="+f.proxy.URL, "UV_PROJECT_ENVIRONMENT=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("uv sync of the old layout: %v\n%s", err, out)
		}
	}
	db := openSQLite(t, f)
	for _, q := range []string{`UPDATE envs SET build_id = ''`, `UPDATE env_revisions SET build_id = ''`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, env := range []string{"/envs/wf/n", "/envs/wf/m"} {
		if r := runCode(t, f, env, "import alpha; print(alpha.__version__)"); r.Status != 200 || r.str("stdout") != "1.0.0\n" {
			t.Errorf("a run of the old layout: %s", r.Raw)
		}
		if b, _, st := statusBuild(t, f, env); b != "" || st.Body["build"] != nil {
			t.Errorf("status of the old layout: %s; want no build", st.Raw)
		}
	}
	// POST .../sync, the documented command, moves n to a build.
	r := f.do(t, "POST", "/envs/wf/n/sync", nil)
	expect(t, r, 200, "")
	if r.str("build_id") != id {
		t.Errorf("sync of the old layout: %s; want build %s", r.Raw, id)
	}
	// Its next change moves m.
	r = f.do(t, "POST", "/envs/wf/m/deps", map[string]any{"packages": []string{"delta"}})
	expect(t, r, 200, "")
	for env, want := range map[string]string{"n": id, "m": r.str("build_id")} {
		dir := f.envDir("wf", env, "v1")
		if link, err := os.Readlink(filepath.Join(dir, ".venv", "build")); err != nil || want == "" || !strings.Contains(link, want) {
			t.Errorf("%s: after the move the .venv's build link is %q (%v); want it at build %s", env, link, err, want)
		}
		if _, b, _ := statusBuild(t, f, "/envs/wf/"+env); b == nil || b["intact"] != true {
			t.Errorf("%s: status after the move: %v", env, b)
		}
	}
	if r := runCode(t, f, "/envs/wf/n", "import alpha; print(alpha.__version__)"); r.str("stdout") != "1.0.0\n" {
		t.Errorf("a run after the move to builds: %s", r.Raw)
	}
	if r := runCode(t, f, "/envs/wf/m", hasDelta); r.str("stdout") != "delta\n" {
		t.Errorf("a run after the change that moved m: %s", r.Raw)
	}
}

// metrics is the control plane's /metrics text.
func metrics(t *testing.T, f *fabric) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
