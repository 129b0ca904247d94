package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
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
