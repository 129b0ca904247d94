package runner_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/testutil/proctest"

	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/shared/errcode"
)

// newVenv makes a bare virtual environment (no pip) in a temporary directory.
func newVenv(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not on PATH")
	}
	dir := filepath.Join(t.TempDir(), ".venv")
	if out, err := exec.Command(py, "-m", "venv", "--without-pip", dir).CombinedOutput(); err != nil {
		t.Fatalf("python3 -m venv: %v\n%s", err, out)
	}
	return dir
}

// runCases hold for every sandbox tier.
var runCases = []struct {
	name       string
	code       string
	wantStdout string
	wantStderr string
	wantExit   int
}{
	{"stdout", `print("hello")`, "hello\n", "", 0},
	{"stderr and exit code", "import sys\nsys.stderr.write('bad\\n')\nsys.exit(3)", "", "bad\n", 3},
	{"exception", `raise SystemExit("boom")`, "", "boom\n", 1},
	{"no agent environment", `import os; print(os.environ.get("ENVFABRIC_SECRET", "absent"))`, "absent\n", "", 0},
	{"fresh empty work dir", `import os; print(sorted(os.listdir(".")), os.getcwd() == os.environ["HOME"] == os.environ["TMPDIR"])`, "['main.py'] True\n", "", 0},
	{"venv interpreter", `import sys, os; print(sys.prefix == os.environ["VIRTUAL_ENV"])`, "True\n", "", 0},
	{"stdin is empty", `import sys; print(repr(sys.stdin.read()))`, "''\n", "", 0},
	// The namespace tier's read-only /dev still hands out pseudo-terminals and /dev/null.
	{"devices usable", `import os; m, s = os.openpty(); open("/dev/null", "w").write("x"); print(os.isatty(s))`, "True\n", "", 0},
}

func TestRun(t *testing.T) {
	testRun(t, runners[0], newVenv(t), sandbox.Config{})
}

// TestRunTiers runs the same cases in every tier this machine allows, with a venv of the system
// Python (the run user cannot reach one under /root), cold and warm.
func TestRunTiers(t *testing.T) {
	d := newData(t)
	t.Setenv("ENVFABRIC_SECRET", "x")
	forRunners(t, sandbox.Tiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		testRun(t, r, filepath.Join(d.env, ".venv"), d.sandbox(t, tier))
	})
}

func testRun(t *testing.T, r runKind, venv string, sb sandbox.Config) {
	if !r.warm {
		t.Setenv("ENVFABRIC_SECRET", "x")
	}
	for _, tt := range runCases {
		t.Run(tt.name, func(t *testing.T) {
			res, err := r.run(t, runner.Spec{VenvDir: venv, Code: tt.code, Timeout: 30 * time.Second, MaxOutput: 1 << 20, Sandbox: sb})
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Stdout) != tt.wantStdout {
				t.Errorf("stdout: got %q; want %q", res.Stdout, tt.wantStdout)
			}
			if string(res.Stderr) != tt.wantStderr {
				t.Errorf("stderr: got %q; want %q", res.Stderr, tt.wantStderr)
			}
			if res.ExitCode != tt.wantExit {
				t.Errorf("exit code: got %d; want %d", res.ExitCode, tt.wantExit)
			}
			if res.TimedOut || res.StdoutTruncated || res.StderrTruncated {
				t.Errorf("got %+v; want no timeout or truncation", res)
			}
		})
	}
}

func TestRunWorkDirRemoved(t *testing.T) {
	venv := newVenv(t)
	res, err := runner.Run(t.Context(), runner.Spec{VenvDir: venv, Code: `import os; print(os.getcwd())`, Timeout: 30 * time.Second, MaxOutput: 4096})
	if err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimSpace(string(res.Stdout))
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir %s still there (stat: %v)", dir, err)
	}
}

// A timeout kills the code, its child and its grandchild, quickly.
func TestRunTimeoutKillsProcessGroup(t *testing.T) {
	venv := newVenv(t)
	pidFile := filepath.Join(t.TempDir(), "pids")
	code := `
import subprocess, os, time
child = subprocess.Popen(["sleep", "300"])
grand = subprocess.Popen(["sh", "-c", "sleep 300 & echo $! > ` + pidFile + `.grand; wait"])
time.sleep(0.5)
with open("` + pidFile + `", "w") as f:
    f.write("%d %d %d" % (os.getpid(), child.pid, grand.pid))
print("started", flush=True)
time.sleep(300)
`
	start := time.Now()
	res, err := runner.Run(t.Context(), runner.Spec{VenvDir: venv, Code: code, Timeout: 2 * time.Second, MaxOutput: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 6*time.Second {
		t.Errorf("run took %v; want about 2s", elapsed)
	}
	if !res.TimedOut || res.ExitCode != -1 {
		t.Errorf("got timed_out=%v exit=%d; want true, -1", res.TimedOut, res.ExitCode)
	}
	if string(res.Stdout) != "started\n" {
		t.Errorf("stdout: got %q; want %q", res.Stdout, "started\n")
	}
	pids := readPids(t, pidFile)
	pids = append(pids, readPids(t, pidFile+".grand")...)
	if len(pids) != 4 {
		t.Fatalf("got pids %v; want 4", pids)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("process %d survived the timeout", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// A process left behind by code that exits normally is killed too.
func TestRunKillsLeftoversAfterExit(t *testing.T) {
	venv := newVenv(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	code := `
import subprocess
p = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open("` + pidFile + `", "w").write(str(p.pid))
`
	if _, err := runner.Run(t.Context(), runner.Spec{VenvDir: venv, Code: code, Timeout: 30 * time.Second, MaxOutput: 4096}); err != nil {
		t.Fatal(err)
	}
	for _, pid := range readPids(t, pidFile) {
		if !gone(pid) {
			t.Errorf("process %d survived", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestRunCancel(t *testing.T) {
	venv := newVenv(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := runner.Run(ctx, runner.Spec{VenvDir: venv, Code: "import time; time.sleep(300)", Timeout: time.Minute, MaxOutput: 4096})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v; want context.DeadlineExceeded", err)
	}
}

func TestRunOutputCap(t *testing.T) {
	venv := newVenv(t)
	code := `
import sys
for _ in range(200):
    sys.stdout.write("x" * 10000)
    sys.stderr.write("y" * 10000)
print("done", file=sys.stderr)
`
	res, err := runner.Run(t.Context(), runner.Spec{VenvDir: venv, Code: code, Timeout: 30 * time.Second, MaxOutput: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Stdout, bytes.Repeat([]byte("x"), 1000)) || !res.StdoutTruncated {
		t.Errorf("stdout: got %d bytes truncated=%v; want 1000 x's truncated", len(res.Stdout), res.StdoutTruncated)
	}
	if len(res.Stderr) != 1000 || !res.StderrTruncated {
		t.Errorf("stderr: got %d bytes truncated=%v; want 1000 truncated", len(res.Stderr), res.StderrTruncated)
	}
	if res.ExitCode != 0 || res.TimedOut {
		t.Errorf("got exit=%d timed_out=%v; want 0, false", res.ExitCode, res.TimedOut)
	}
}

func TestRunNoVenv(t *testing.T) {
	_, err := runner.Run(t.Context(), runner.Spec{VenvDir: filepath.Join(t.TempDir(), ".venv"), Code: "print(1)", Timeout: time.Second, MaxOutput: 10})
	if got := errcode.Of(err); got != errcode.EnvNotReady {
		t.Errorf("got %v; want %s", err, errcode.EnvNotReady)
	}
}

func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// gone waits a little for pid to die: SIGKILL is delivered asynchronously, and an orphan is
// reaped by init on its own schedule.
func gone(pid int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for proctest.Alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
