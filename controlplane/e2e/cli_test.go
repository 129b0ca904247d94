package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/client"
	"github.com/envfabric/envfabric/controlplane/osv/osvtest"
	"github.com/envfabric/envfabric/controlplane/sbom/sbomtest"
	"github.com/envfabric/envfabric/shared/errcode"
)

// cliRun is what a user sees of one envfabric command: its exit status and its two streams.
type cliRun struct {
	args           []string
	exit           int
	stdout, stderr string
}

func (r cliRun) String() string {
	return "envfabric " + strings.Join(r.args, " ") + "\nexit " + strconv.Itoa(r.exit) + "\nstdout:\n" + tail(r.stdout, 3000) + "\nstderr:\n" + tail(r.stderr, 3000)
}

// envfabric runs the command-line client against f as a user would: the control plane's URL and
// a token from the environment (ENVFABRIC_URL, ENVFABRIC_TOKEN), stdin from stdin, in dir.
func (f *fabric) envfabric(t *testing.T, dir, token, stdin string, args ...string) cliRun {
	t.Helper()
	binaries(t)
	cmd := exec.Command(bins.Envfabric, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "ENVFABRIC_URL=" + f.URL}
	if token != "" {
		cmd.Env = append(cmd.Env, "ENVFABRIC_TOKEN="+token)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliRun{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		t.Fatalf("running envfabric %v: %v", args, err)
	}
	return r
}

// want fails the test unless the command exited with exit.
func (r cliRun) want(t *testing.T, exit int) cliRun {
	t.Helper()
	if r.exit != exit {
		t.Fatalf("exit %d; want %d\n%s", r.exit, exit, r)
	}
	return r
}

// json decodes the command's stdout, which --json makes the API's JSON.
func (r cliRun) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("stdout is not a JSON object: %v\n%s", err, r)
	}
	return m
}

// TestCLI walks the README's command-line flow with the built envfabric against a real single
// host fabric: exit statuses, what a run prints, the exported files, the error code of a missing
// environment, and --json answers that parse.
func TestCLI(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	work := t.TempDir()
	cli := func(args ...string) cliRun { t.Helper(); return f.envfabric(t, work, adminSecret, "", args...) }

	// create, with packages as arguments and from a requirements file.
	r := cli("create", "wf", "n", "alpha==1.0.0").want(t, 0)
	if !strings.Contains(r.stdout, "created wf/n/v1") {
		t.Errorf("create printed %q; want it to name the environment it created", r.stdout)
	}
	if err := os.WriteFile(filepath.Join(work, "req.txt"), []byte("# pinned\ndelta==0.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := cli("create", "wf", "req", "-r", "req.txt", "--json").want(t, 0).json(t)
	if m["status"] != "created" || m["revision"] != float64(1) {
		t.Errorf("create --json: %v", m)
	}

	// deps, add, update, remove: the tables name every locked version.
	r = cli("deps", "wf", "n").want(t, 0)
	if !regexp.MustCompile(`(?m)^alpha\s+1\.0\.0\s+alpha==1\.0\.0\s*$`).MatchString(r.stdout) {
		t.Errorf("deps table has no row for alpha 1.0.0:\n%s", r.stdout)
	}
	cli("add", "wf", "n", "delta==0.2.0").want(t, 0)
	r = cli("update", "wf", "n", "alpha>=2").want(t, 0)
	if !strings.Contains(r.stdout, "updated wf/n/v1: revision 3") || !regexp.MustCompile(`(?m)^alpha\s+2\.0\.0\s`).MatchString(r.stdout) {
		t.Errorf("update printed:\n%s", r.stdout)
	}
	cli("remove", "wf", "n", "delta").want(t, 0)
	m = cli("deps", "wf", "n", "--json").want(t, 0).json(t)
	if lv, _ := m["locked_versions"].(map[string]any); lv["alpha"] != "2.0.0" || lv["delta"] != nil || m["revision"] != float64(4) {
		t.Errorf("deps --json after add, update, remove: %v", m)
	}

	// run: the code's stdout and stderr byte for byte, and its exit status.
	r = cli("run", "wf", "n", "-c", "import alpha, sys\nprint(alpha.__version__)\nprint('warn', file=sys.stderr)\nsys.exit(3)").want(t, 3)
	if r.stdout != "2.0.0\n" || r.stderr != "warn\n" {
		t.Errorf("run printed stdout %q, stderr %q; want \"2.0.0\\n\", \"warn\\n\"", r.stdout, r.stderr)
	}
	if err := os.WriteFile(filepath.Join(work, "bytes.py"), []byte("import sys\nsys.stdout.buffer.write(bytes(range(256)))\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = cli("run", "wf", "n", "bytes.py").want(t, 0)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	if r.stdout != string(all) {
		t.Errorf("run of a file writing every byte printed %q; want the 256 bytes", r.stdout)
	}
	r = f.envfabric(t, work, adminSecret, "print(6 * 7)\n", "run", "wf", "n", "-").want(t, 0)
	if r.stdout != "42\n" {
		t.Errorf("run from stdin printed %q; want \"42\\n\"", r.stdout)
	}
	m = cli("run", "wf", "n", "-c", "print('hi')", "--json").want(t, 0).json(t)
	if m["stdout"] != "hi\n" || m["exit_code"] != float64(0) || m["exit_reason"] != "exited" {
		t.Errorf("run --json: %v", m)
	}
	r = cli("run", "wf", "n", "--timeout", "1", "-c", "import sys, time\nprint('started', flush=True)\ntime.sleep(60)").want(t, 124)
	if r.stdout != "started\n" || !strings.Contains(r.stderr, "EXECUTION_TIMEOUT") {
		t.Errorf("a run past its timeout printed stdout %q, stderr %q; want its partial output and EXECUTION_TIMEOUT", r.stdout, r.stderr)
	}

	// export: the files the API exports, which are the ones on the storage.
	out := filepath.Join(work, "exported")
	cli("export", "wf", "n", "-o", out).want(t, 0)
	api := f.do(t, "GET", "/envs/wf/n/export", nil)
	expect(t, api, 200, "")
	for name, key := range map[string]string{"pyproject.toml": "pyproject_toml", "uv.lock": "uv_lock"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != api.str(key) || string(b) != f.readFile(t, "wf", "n", name) {
			t.Errorf("exported %s differs from GET export's %s or from the storage's", name, key)
		}
	}
	r = cli("export", "wf", "n", "-o", out).want(t, 1)
	if !strings.Contains(r.stderr, "--force") {
		t.Errorf("a second export into the same directory: %s", r)
	}
	cli("export", "wf", "n", "-o", out, "--force").want(t, 0)

	// sync, status, list, history, agents, cleanup --dry-run.
	if r = cli("sync", "wf", "n").want(t, 0); !strings.HasPrefix(r.stdout, "synced wf/n/v1") {
		t.Errorf("sync printed %q", r.stdout)
	}
	if r = cli("status", "wf", "n").want(t, 0); !regexp.MustCompile(`(?m)^in step\s+true$`).MatchString(r.stdout) {
		t.Errorf("status:\n%s", r.stdout)
	}
	if m = cli("status", "wf", "n", "--json").want(t, 0).json(t); m["exists"] != true || m["revision"] != float64(4) {
		t.Errorf("status --json: %v", m)
	}
	r = cli("list", "--workflow", "wf").want(t, 0)
	for _, node := range []string{"n", "req"} {
		if !regexp.MustCompile(`(?m)^wf\s+` + node + `\s+v1\s`).MatchString(r.stdout) {
			t.Errorf("list has no row for wf/%s:\n%s", node, r.stdout)
		}
	}
	m = cli("list", "--workflow", "wf", "--json").want(t, 0).json(t)
	if envs, _ := m["environments"].([]any); len(envs) != 2 {
		t.Errorf("list --json: %v", m)
	}
	// One page of one, then the rest through the cursor the first page gave.
	m = cli("list", "--workflow", "wf", "--limit", "1", "--json").want(t, 0).json(t)
	cursor, _ := m["next_cursor"].(string)
	if cursor == "" {
		t.Fatalf("list --limit 1 of two: no next_cursor in %v", m)
	}
	m = cli("list", "--workflow", "wf", "--limit", "1", "--cursor", cursor, "--json").want(t, 0).json(t)
	if envs, _ := m["environments"].([]any); len(envs) != 1 {
		t.Errorf("the second page: %v", m)
	}
	r = cli("history", "wf", "n").want(t, 0)
	for _, op := range []string{"create", "add", "update", "remove", "run", "sync"} {
		if !regexp.MustCompile(`(?m)^\d+\s+` + op + `\s+succeeded\s+e2e-test\s`).MatchString(r.stdout) {
			t.Errorf("history has no succeeded %s by e2e-test:\n%s", op, r.stdout)
		}
	}
	if ops, _ := cli("history", "wf", "n", "--limit", "2", "--json").want(t, 0).json(t)["operations"].([]any); len(ops) != 2 {
		t.Errorf("history --limit 2 --json: %d operations", len(ops))
	}
	if r = cli("agents").want(t, 0); !strings.HasPrefix(r.stdout, "mode: single-host\n") || !strings.Contains(r.stdout, "alive") {
		t.Errorf("agents:\n%s", r.stdout)
	}
	if m = cli("agents", "--json").want(t, 0).json(t); m["mode"] != "single-host" {
		t.Errorf("agents --json: %v", m)
	}
	m = cli("cleanup", "--dry-run", "--idle-hours", "0", "--json").want(t, 0).json(t)
	if removed, _ := m["removed"].([]any); m["dry_run"] != true || len(removed) != 2 {
		t.Errorf("cleanup --dry-run --idle-hours 0 --json: %v", m)
	}
	cli("deps", "wf", "n").want(t, 0) // the dry run removed nothing

	// --version names another environment of the same node.
	cli("create", "wf", "n", "alpha==1.1.0", "--version", "v2").want(t, 0)
	if m = cli("deps", "wf", "n", "--version", "v2", "--json").want(t, 0).json(t); m["version_id"] != "v2" {
		t.Errorf("deps --version v2: %v", m)
	}

	// Failures: the code on stderr, a non-zero exit, and with --json the API's error body.
	r = cli("deps", "wf", "missing").want(t, 1)
	if !strings.Contains(r.stderr, "ENV_NOT_FOUND") {
		t.Errorf("deps of a missing environment: %s", r)
	}
	m = cli("status", "wf", "missing", "--json").want(t, 1).json(t)
	if e, _ := m["error"].(map[string]any); e["code"] != "ENV_NOT_FOUND" || e["request_id"] == "" {
		t.Errorf("status --json of a missing environment: %v", m)
	}
	if r = f.envfabric(t, work, readerSecret, "", "delete", "wf", "n").want(t, 1); !strings.Contains(r.stderr, "FORBIDDEN") {
		t.Errorf("delete with a read token: %s", r)
	}
	if r = f.envfabric(t, work, "", "", "list").want(t, 1); !strings.Contains(r.stderr, "UNAUTHENTICATED") {
		t.Errorf("list without a token: %s", r)
	}
	if r = cli("add", "wf", "n", "alpha==9.9.9").want(t, 1); !strings.Contains(r.stderr, "PACKAGE_RESOLUTION_FAILED") {
		t.Errorf("add of a version that does not exist: %s", r)
	}
	if r = cli("run", "wf", "n").want(t, 2); !strings.Contains(r.stderr, "-c CODE or FILE") {
		t.Errorf("run without code: %s", r)
	}
	cli("frobnicate").want(t, 2)
	cli("list", "--url", "http://127.0.0.1:1").want(t, 3)

	// delete: then the environment is gone.
	if r = cli("delete", "wf", "n").want(t, 0); !strings.HasPrefix(r.stdout, "deleted wf/n/v1") {
		t.Errorf("delete printed %q", r.stdout)
	}
	cli("status", "wf", "n").want(t, 1)
	if _, err := os.Stat(f.envDir("wf", "n", "v1")); !os.IsNotExist(err) {
		t.Errorf("the deleted environment's directory: %v", err)
	}
}

// TestClient: the typed client against a real fabric — typed answers, run output as bytes, and
// failures as *client.Error with the facts their codes carry, the 423 retry included.
func TestClient(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	ctx := context.Background()
	c, err := client.New(f.URL, client.WithToken(adminSecret))
	if err != nil {
		t.Fatal(err)
	}
	env := client.Env{WorkflowID: "wf", NodeID: "n"}
	created, err := c.Create(ctx, client.CreateRequest{WorkflowID: "wf", NodeID: "n", Packages: []string{"alpha==1.0.0"}})
	if err != nil {
		t.Fatal(err)
	}
	if created.Status != "created" || created.Revision != 1 || created.VersionID != "v1" || created.OperationID == 0 {
		t.Errorf("create: %+v", created)
	}

	high := make([]byte, 128)
	for i := range high {
		high[i] = byte(128 + i)
	}
	run, err := c.Run(ctx, env, client.RunRequest{Code: "import sys; sys.stdout.buffer.write(bytes(range(128, 256))); sys.exit(4)"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(run.Stdout, high) || run.StdoutEncoding != client.EncodingBase64 || run.ExitCode != 4 || run.Revision != 1 {
		t.Errorf("run: stdout %q (%s), exit %d, revision %d", run.Stdout, run.StdoutEncoding, run.ExitCode, run.Revision)
	}
	_, err = c.Run(ctx, env, client.RunRequest{Code: "import sys, time; sys.stdout.buffer.write(b'\\xffpartial'); sys.stdout.flush(); time.sleep(60)", Timeout: time.Second})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Code != errcode.ExecutionTimeout || apiErr.StatusCode != 504 {
		t.Fatalf("a run past its timeout: %v", err)
	}
	if partial, ok := apiErr.RunTimeout(); !ok || string(partial.Stdout) != "\xffpartial" || partial.Timeout != 1 {
		t.Errorf("the timed-out run's partial output: %+v, %t", partial, ok)
	}

	_, err = c.Deps(client.WithRequestID(ctx, "client-e2e-1"), client.Env{WorkflowID: "wf", NodeID: "missing"})
	if !errors.As(err, &apiErr) || apiErr.Code != errcode.EnvNotFound || apiErr.StatusCode != 404 || apiErr.RequestID != "client-e2e-1" {
		t.Errorf("deps of a missing environment: %#v", err)
	}

	// An add stalled on the index holds the environment: a sync is refused at once, naming it;
	// a client that retries 423 gets through once the add has ended.
	stalled := f.Index.Stall("delta")
	added := make(chan error, 1)
	go func() {
		_, err := c.Add(ctx, env, []string{"delta"})
		added <- err
	}()
	select {
	case <-stalled:
	case <-time.After(60 * time.Second):
		t.Fatal("the add never reached the index")
	}
	_, err = c.Sync(ctx, env)
	if !errors.As(err, &apiErr) || apiErr.Code != errcode.EnvLocked {
		t.Fatalf("a sync while an add holds the environment: %v", err)
	}
	if held, ok := apiErr.HeldBy(); !ok || held.Operation != "add" {
		t.Errorf("held_by: %+v, %t", held, ok)
	}
	patient, _ := client.New(f.URL, client.WithToken(adminSecret),
		client.WithLockedRetry(client.LockedRetry{Attempts: 100, Wait: 100 * time.Millisecond}))
	synced := make(chan error, 1)
	go func() {
		_, err := patient.Sync(ctx, env)
		synced <- err
	}()
	// The patient sync has been refused at least once (the audit records refusals) before the add
	// may go on.
	deadline := time.Now().Add(60 * time.Second)
	for refused := 0; refused < 2; {
		h, err := c.Operations(ctx, env, client.OperationsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		refused = 0
		for _, op := range h.Operations {
			if op.Operation == "sync" && op.ErrorCode == string(errcode.EnvLocked) {
				refused++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the patient sync was never refused: %+v", h.Operations)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.Index.Release("delta")
	if err := <-added; err != nil {
		t.Fatalf("the add: %v", err)
	}
	if err := <-synced; err != nil {
		t.Fatalf("the sync retried on 423: %v", err)
	}
	deps, err := c.Deps(ctx, env)
	if err != nil || deps.LockedVersions["delta"] == "" {
		t.Errorf("deps after the add: %+v, %v", deps, err)
	}

	all, err := c.ListAll(ctx, client.ListOptions{WorkflowID: "wf", Limit: 1})
	if err != nil || len(all) != 1 || all[0].State == "" {
		t.Errorf("ListAll: %+v, %v", all, err)
	}
	agents, err := c.Agents(ctx)
	if err != nil || agents.Mode != "single-host" || len(agents.Agents) != 1 || agents.Agents[0].State != "alive" {
		t.Errorf("agents: %+v, %v", agents, err)
	}
	ready, err := c.Readyz(ctx)
	if err != nil || !ready.Ready {
		t.Errorf("readyz: %+v, %v", ready, err)
	}
}

// TestCLIBuilds walks the builds' commands with the built envfabric against a real fabric: a dry
// run of each change prints its change table and leaves the exported files byte-identical,
// rollback and create --from take a revision's or another environment's build, status shows the
// build and damage to it, sync repairs it, cleanup removes the build nothing uses, and a rollback
// to that revision materialises it again.
func TestCLIBuilds(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	work := t.TempDir()
	cli := func(args ...string) cliRun { t.Helper(); return f.envfabric(t, work, adminSecret, "", args...) }
	row := func(r cliRun, pattern string) {
		t.Helper()
		if !regexp.MustCompile(`(?m)` + pattern).MatchString(r.stdout) {
			t.Errorf("no line matching %q in\n%s", pattern, r)
		}
	}

	cli("create", "wf", "n", "alpha==1.0.0").want(t, 0)
	m := cli("add", "wf", "n", "delta==0.1.0", "--json").want(t, 0).json(t)
	withDelta, _ := m["build_id"].(string)
	if m["revision"] != float64(2) || withDelta == "" {
		t.Fatalf("add --json: %v", m)
	}

	// Dry runs: the table of what would change, transitive packages included; nothing changes.
	before := filepath.Join(work, "before")
	cli("export", "wf", "n", "-o", before).want(t, 0)
	r := cli("add", "wf", "n", "epsilon", "--dry-run").want(t, 0) // epsilon needs beta and delta, which is there
	row(r, `^dry run of add on wf/n/v1: 2 locked packages would change; nothing was changed \(revision 2 stays current\)$`)
	row(r, `^PACKAGE\s+FROM\s+TO\s+CHANGE$`)
	row(r, `^beta\s+-\s+1\.0\.0\s+added$`)
	row(r, `^epsilon\s+-\s+1\.0\.0\s+added$`)
	r = cli("update", "wf", "n", "delta>=0.2", "--dry-run").want(t, 0)
	row(r, `^delta\s+0\.1\.0\s+0\.2\.0\s+changed$`)
	row(r, `^dependencies after it: .*delta>=0\.2`)
	r = cli("remove", "wf", "n", "delta", "--dry-run").want(t, 0)
	row(r, `^delta\s+0\.1\.0\s+-\s+removed$`)
	m = cli("update", "wf", "n", "alpha>=2", "--dry-run", "--json").want(t, 0).json(t)
	changes, _ := m["changes"].([]any)
	if m["dry_run"] != true || m["revision"] != float64(2) || len(changes) != 1 {
		t.Fatalf("update --dry-run --json: %v", m)
	}
	if c, _ := changes[0].(map[string]any); c["name"] != "alpha" || c["from"] != "1.0.0" || c["to"] != "2.0.0" {
		t.Errorf("update --dry-run --json's change: %v", c)
	}
	if r = cli("add", "wf", "n", "alpha==9.9.9", "--dry-run").want(t, 1); !strings.Contains(r.stderr, "PACKAGE_RESOLUTION_FAILED") {
		t.Errorf("a dry run that cannot resolve: %s", r)
	}
	after := filepath.Join(work, "after")
	cli("export", "wf", "n", "-o", after).want(t, 0)
	for _, name := range []string{"pyproject.toml", "uv.lock"} {
		b, _ := os.ReadFile(filepath.Join(before, name))
		a, _ := os.ReadFile(filepath.Join(after, name))
		if len(b) == 0 || !bytes.Equal(a, b) || f.readFile(t, "wf", "n", name) != string(b) {
			t.Errorf("%s changed across the dry runs (export before and after, or on the storage)", name)
		}
	}
	if m = cli("deps", "wf", "n", "--json").want(t, 0).json(t); m["revision"] != float64(2) {
		t.Errorf("deps after the dry runs: %v; want revision 2 still", m)
	}

	// Rollback: revision 1's files and build as revision 3, at once.
	r = cli("rollback", "wf", "n", "1").want(t, 0)
	row(r, `^rolled back wf/n/v1 to revision 1's files and build: now revision 3$`)
	row(r, `^alpha\s+1\.0\.0\s+alpha==1\.0\.0$`)
	if strings.Contains(r.stdout, "delta") || strings.Contains(r.stdout, "rebuilt") {
		t.Errorf("rollback to revision 1: %s; want no delta, no rebuild", r)
	}
	if r = cli("run", "wf", "n", "-c", "import importlib.util as u, alpha; print(alpha.__version__, u.find_spec('delta') is None)").want(t, 0); r.stdout != "1.0.0 True\n" {
		t.Errorf("a run after the rollback printed %q; want alpha 1.0.0 and no delta", r.stdout)
	}
	if r = cli("rollback", "wf", "n", "99").want(t, 1); !strings.Contains(r.stderr, "INVALID_REQUEST") || !strings.Contains(r.stderr, "no revision 99") {
		t.Errorf("rollback to a revision that does not exist: %s", r)
	}
	cli("rollback", "wf", "n", "latest").want(t, 2)

	// create --from: the source's build, shared; status says so.
	created := cli("create", "wf", "copy", "--from", "wf/n", "--json").want(t, 0).json(t)
	st := cli("status", "wf", "n", "--json").want(t, 0).json(t)
	if created["build_id"] == "" || created["build_id"] != st["build_id"] || created["revision"] != float64(1) {
		t.Errorf("create --from wf/n: %v; want wf/n's build %v at revision 1", created, st["build_id"])
	}
	first, _ := st["build_id"].(string)
	r = cli("status", "wf", "copy").want(t, 0)
	row(r, `^build\s+`+first+` \(READY\), 1 package, shared with 1 other environment$`)
	row(r, `^build check\s+intact \(\d+ files checked against their RECORD\)$`)
	if r = cli("create", "wf", "other", "six", "--from", "wf/n").want(t, 2); !strings.Contains(r.stderr, "not both") {
		t.Errorf("create with packages and --from: %s", r)
	}
	if r = cli("create", "wf", "other", "--from", "wf/missing").want(t, 1); !strings.Contains(r.stderr, "ENV_NOT_FOUND") {
		t.Errorf("create --from an environment that does not exist: %s", r)
	}

	// Damage: alpha's directory deleted from the shared build shows in status; sync repairs it.
	dirs, _ := filepath.Glob(filepath.Join(f.Envs, ".builds", first, ".venv", "lib", "python*", "site-packages", "alpha"))
	if len(dirs) != 1 {
		t.Fatalf("alpha's directory in the build: %v", dirs)
	}
	if err := os.RemoveAll(dirs[0]); err != nil {
		t.Fatal(err)
	}
	r = cli("status", "wf", "copy").want(t, 0)
	row(r, `^build\s+`+first+` \(DAMAGED\)`)
	row(r, `^build check\s+DAMAGED: 1 package with missing or wrong-size files`)
	row(r, `^damaged\s+alpha 1\.0\.0: [1-9]\d* missing, 0 wrong size \(alpha/`)
	row(r, `^in step\s+false$`)
	r = cli("sync", "wf", "copy").want(t, 0)
	row(r, `^repaired: the build was damaged and was replaced by a fresh one \(build `+first+`\)$`)
	r = cli("status", "wf", "n").want(t, 0)
	row(r, `^build check\s+intact`)
	row(r, `^in step\s+true$`)

	// Cleanup: revision 2's build (alpha and delta) is no current revision's; once unused for a
	// lease TTL it goes, and a rollback to revision 2 materialises it again.
	waitFor(t, func() bool {
		m := cli("cleanup", "--dry-run", "--idle-hours", "1000", "--json").want(t, 0).json(t)
		builds, _ := m["builds_removed"].([]any)
		return slices.ContainsFunc(builds, func(b any) bool { return b.(map[string]any)["build_id"] == withDelta })
	})
	r = cli("cleanup", "--idle-hours", "1000").want(t, 0)
	row(r, `^removed 0 environments unused for 1000h, freeing 0 B; skipped 0$`)
	row(r, `^removed 1 build no environment's current revision uses, freeing .+; skipped 0 \(in all: .+\)$`)
	row(r, `^`+withDelta+`\s+0\s+\S.*\s+removed$`)
	if _, err := os.Stat(filepath.Join(f.Envs, ".builds", withDelta)); !os.IsNotExist(err) {
		t.Errorf("the build cleanup said it removed: %v", err)
	}
	r = cli("rollback", "wf", "n", "2").want(t, 0)
	row(r, `^rolled back wf/n/v1 to revision 2's files and build: now revision 4$`)
	row(r, `^rebuilt: that build had been removed and was materialised again from its uv.lock$`)
	if r = cli("run", "wf", "n", "-c", "import delta; print(delta.__version__)").want(t, 0); r.stdout != "0.1.0\n" {
		t.Errorf("a run after the rollback to revision 2 printed %q", r.stdout)
	}
	// history: the revision each change committed, the dry runs marked.
	r = cli("history", "wf", "n").want(t, 0)
	row(r, `^\d+\s+rollback\s+succeeded\s+e2e-test\s.*\s4\s+-$`)
	row(r, `^\d+\s+rollback\s+succeeded\s+e2e-test\s.*\s3\s+-$`)
	row(r, `^\d+\s+add\s+succeeded\s+e2e-test\s.*\s2\s+-$`)
	row(r, `^\d+\s+update \(dry run\)\s+succeeded\s+e2e-test\s.*\s-\s+-$`)
	row(r, `^\d+\s+add \(dry run\)\s+failed\s+e2e-test\s.*\sPACKAGE_RESOLUTION_FAILED$`)
}

// TestCLIDependencies: the fleet's dependency questions through the built envfabric, against a
// real fabric with the OSV dataset of osvtest: which environments hold a package (with a
// specifier, every page or one), the advisories hitting the fleet and one environment, an SBOM
// written to a file that validates against CycloneDX 1.5, and PACKAGE_POLICY's refusals.
func TestCLIDependencies(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	osvZip := filepath.Join(work, "all.zip")
	osvtest.WriteZip(t, osvZip, nil)
	policy := filepath.Join(work, "policy.toml")
	if err := os.WriteFile(policy, []byte("[[deny]]\npackage = \"gamma\"\nreason = \"not here\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFabric(t, options{cpEnv: []string{"OSV_DATA=" + osvZip, "PACKAGE_POLICY=" + policy}})
	cli := func(args ...string) cliRun { t.Helper(); return f.envfabric(t, work, adminSecret, "", args...) }
	row := func(r cliRun, pattern string) {
		t.Helper()
		if !regexp.MustCompile(`(?m)` + pattern).MatchString(r.stdout) {
			t.Errorf("no line matching %q in\n%s", pattern, r)
		}
	}
	cli("create", "wf", "old", "alpha==1.0.0").want(t, 0)
	cli("create", "wf", "fixed", "alpha==1.1.0").want(t, 0)
	cli("create", "wf", "two", "beta==2.0.0").want(t, 0)

	// packages: every holder, declared or through another package; a specifier narrows them.
	r := cli("packages", "Alpha").want(t, 0)
	row(r, `^alpha: 3 environments$`)
	row(r, `^wf\s+fixed\s+v1\s+1\.1\.0\s+yes$`)
	row(r, `^wf\s+old\s+v1\s+1\.0\.0\s+yes$`)
	row(r, `^wf\s+two\s+v1\s+2\.0\.0\s+no$`)
	r = cli("packages", "alpha", "--specifier", "<1.1").want(t, 0)
	row(r, `^alpha <1\.1: 1 environment$`)
	if strings.Contains(r.stdout, "fixed") || strings.Contains(r.stdout, "two") {
		t.Errorf("packages alpha --specifier <1.1 lists a version outside it:\n%s", r)
	}
	m := cli("packages", "alpha", "--limit", "1", "--json").want(t, 0).json(t)
	cursor, _ := m["next_cursor"].(string)
	if envs, _ := m["environments"].([]any); len(envs) != 1 || cursor == "" {
		t.Fatalf("packages alpha --limit 1 --json: %v", m)
	}
	if r = cli("packages", "alpha", "--limit", "1", "--cursor", cursor).want(t, 0); !strings.Contains(r.stderr, "more: envfabric packages alpha --cursor ") {
		t.Errorf("the second page of one names no next page:\n%s", r)
	}
	if m = cli("packages", "alpha", "--json").want(t, 0).json(t); len(m["environments"].([]any)) != 3 || m["next_cursor"] != nil {
		t.Errorf("packages alpha --json, every page: %v", m)
	}
	if r = cli("packages", "alpha", "--specifier", "=>1").want(t, 1); !strings.Contains(r.stderr, "INVALID_REQUEST") {
		t.Errorf("a specifier that is not one: %s", r)
	}

	// vulnerabilities: the fleet's, one row per advisory and environment; then one environment's.
	r = cli("vulnerabilities").want(t, 0)
	row(r, `^1 advisory hit the fleet \(\d+ loaded from OSV_DATA\)$`)
	row(r, `^GHSA-aaaa-1111-2222\s+CRITICAL 9\.8\s+alpha\s+1\.0\.0\s+1\.1\.0\s+wf/old/v1$`)
	row(r, `^GHSA-aaaa-1111-2222\s+CRITICAL 9\.8\s+alpha\s+2\.0\.0\s+1\.1\.0\s+wf/two/v1$`)
	row(r, `^GHSA-aaaa-1111-2222: alpha evaluates untrusted input \(CVE-2099-0001, PYSEC-2099-1\)$`)
	if strings.Contains(r.stdout, "wf/fixed/") || strings.Contains(r.stdout, "PYSEC-2099-3") {
		t.Errorf("the fleet's vulnerabilities list the fixed version or the withdrawn record:\n%s", r)
	}
	r = cli("vulnerabilities", "--env-limit", "1").want(t, 0)
	row(r, `^GHSA-aaaa-1111-2222\s+CRITICAL 9\.8\s+… 1 environment more \(--env-limit\)$`)
	r = cli("vulnerabilities", "wf", "old").want(t, 0)
	row(r, `^wf/old/v1: 1 known vulnerability$`)
	row(r, `^GHSA-aaaa-1111-2222\s+CRITICAL 9\.8\s+alpha\s+1\.0\.0\s+1\.1\.0$`)
	if r = cli("vulnerabilities", "wf", "fixed").want(t, 0); strings.TrimSpace(r.stdout) != "wf/fixed/v1: 0 known vulnerabilities" {
		t.Errorf("vulnerabilities of the fixed environment:\n%s", r)
	}
	if m = cli("vulnerabilities", "wf", "two", "--json").want(t, 0).json(t); len(m["vulnerabilities"].([]any)) != 1 {
		t.Errorf("vulnerabilities wf two --json: %v", m)
	}
	cli("vulnerabilities", "wf", "none").want(t, 1)

	// sbom: to stdout, or a file that is refused a second time without --force.
	r = cli("sbom", "wf", "two").want(t, 0)
	if err := sbomtest.Validate(t, []byte(r.stdout)); err != nil {
		t.Fatalf("sbom on stdout does not validate against CycloneDX 1.5: %v\n%s", err, r)
	}
	bom := filepath.Join(work, "bom.json")
	if r = cli("sbom", "wf", "two", "-o", bom).want(t, 0); !strings.HasPrefix(r.stdout, "wrote "+bom) {
		t.Errorf("sbom -o printed %q", r.stdout)
	}
	b, err := os.ReadFile(bom)
	if err != nil {
		t.Fatal(err)
	}
	if err := sbomtest.Validate(t, b); err != nil || !strings.Contains(string(b), "pkg:pypi/alpha@2.0.0") || !strings.Contains(string(b), "pkg:pypi/beta@2.0.0") {
		t.Errorf("the SBOM file (%v):\n%s", err, b)
	}
	if r = cli("sbom", "wf", "two", "-o", bom).want(t, 1); !strings.Contains(r.stderr, "--force") {
		t.Errorf("a second sbom into the same file: %s", r)
	}
	cli("sbom", "wf", "two", "-o", bom, "--force").want(t, 0)

	// The install policy refuses a change, and its dry run, naming the rule; nothing changed.
	for _, dry := range []bool{true, false} {
		args := []string{"add", "wf", "old", "gamma"}
		if dry {
			args = append(args, "--dry-run")
		}
		if r = cli(args...).want(t, 1); !strings.Contains(r.stderr, "PACKAGE_DENIED") || !strings.Contains(r.stderr, "gamma") {
			t.Errorf("an add of a denied package: %s", r)
		}
	}
	m = cli("add", "wf", "old", "gamma", "--json").want(t, 1).json(t)
	if e, _ := m["error"].(map[string]any); e["code"] != "PACKAGE_DENIED" || e["denied"].(map[string]any)["package"] != "gamma" {
		t.Errorf("add --json of a denied package: %v", m)
	}
	if m = cli("deps", "wf", "old", "--json").want(t, 0).json(t); m["revision"] != float64(1) || m["locked_versions"].(map[string]any)["gamma"] != nil {
		t.Errorf("deps after the refusals: %v; want revision 1 without gamma", m)
	}
}
