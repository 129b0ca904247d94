package warm_test

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/testutil/proctest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/warm"
)

// venv is a bare virtual environment of the system Python in a directory every user can reach.
func venv(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for p := root; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "env", ".venv")
	if out, err := exec.Command("/usr/bin/python3", "-m", "venv", "--without-pip", dir).CombinedOutput(); err != nil {
		t.Skipf("venv: %v %s", err, out)
	}
	return dir
}

// nsSandbox is the namespace tier with the agent's kind of limits, whole-run ones included when
// the host has cgroups for them.
func nsSandbox(t *testing.T) sandbox.Config {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	sb := sandbox.Config{Tier: sandbox.Namespace, UID: uid, GID: gid, Limits: sandbox.Limits{MemoryBytes: 1 << 30, Processes: 64, CPUSeconds: 60}}
	if err := sb.Probe(sandbox.Program{}); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: namespace tier unavailable: %v", err)
		}
		t.Skipf("namespace tier unavailable: %v", err)
	}
	l := sandbox.RunLimits{MemoryBytes: 256 << 20, Processes: 64}
	if g, err := sandbox.FindCgroups(l); err == nil {
		sb.RunLimits, sb.Cgroups = l, g
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: no cgroups: %v", err)
	}
	return sb
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func newPool(t *testing.T, cfg warm.Config) *warm.Pool {
	t.Helper()
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = 1 << 30
	}
	if cfg.ParentsPerBuild == 0 {
		cfg.ParentsPerBuild = 1
	}
	if cfg.WaitFree == 0 {
		cfg.WaitFree = time.Minute
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := warm.New(cfg)
	t.Cleanup(p.Close)
	return p
}

// runWarm runs code in a child of b's parent; it fails the test if the run went cold.
func runWarm(t *testing.T, p *warm.Pool, b warm.Build, sb sandbox.Config, code string, timeout time.Duration, maxOut int64) runner.Result {
	t.Helper()
	if err := p.Prestart(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	res, ok, err := p.Run(t.Context(), b, runner.Spec{VenvDir: b.Venv, Code: code, Timeout: timeout, MaxOutput: maxOut, Sandbox: sb})
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("the run went cold")
	}
	t.Logf("exit=%d reason=%s stdout=%q stderr=%q", res.ExitCode, res.ExitReason, res.Stdout, res.Stderr)
	return res
}

// A run changes what it can of its process and its places; the next run, forked from the same
// parent, sees none of it and draws other random numbers.
func TestRunsLeaveNothing(t *testing.T) {
	v, sb := venv(t), nsSandbox(t)
	p := newPool(t, warm.Config{Sandbox: sb})
	b := warm.Build{ID: "b", Venv: v, Preload: []string{"json", "random", "tempfile"}}
	leave := `
import json, os, random, signal, tempfile
json.MARK = 1
json.dumps = None
os.environ["LEAK"] = "1"
open(os.path.join(tempfile.gettempdir(), "leak"), "w").write("x")
open("/tmp/leak", "w").write("x")
open("/dev/shm/leak", "w").write("x")
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(os.getppid(), random.random())
`
	look := `
import json, os, random, signal, tempfile
print(os.getppid(), random.random())
print(hasattr(json, "MARK"), json.dumps is None, "LEAK" in os.environ, os.listdir("."), "leak" in os.listdir("/tmp"), os.listdir("/dev/shm"),
      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, tempfile.gettempdir() == os.getcwd())
`
	first := strings.Fields(string(runWarm(t, p, b, sb, leave, 30*time.Second, 1<<20).Stdout))
	res := runWarm(t, p, b, sb, look, 30*time.Second, 1<<20)
	lines := strings.Split(string(res.Stdout), "\n")
	second := strings.Fields(lines[0])
	if len(first) != 2 || len(second) != 2 || first[0] != second[0] {
		t.Fatalf("got %q then %q; want two runs forked from one parent", first, second)
	}
	if first[1] == second[1] {
		t.Errorf("both runs drew %s from random", first[1])
	}
	if want := "False False False ['main.py'] False [] True True"; lines[1] != want {
		t.Errorf("a later run: got %q; want %q", lines[1], want)
	}
}

// The timeout kills the child and everything it started, sessions of their own included, and the
// parent goes on serving.
func TestTimeoutKillsTree(t *testing.T) {
	v, sb := venv(t), nsSandbox(t)
	p := newPool(t, warm.Config{Sandbox: sb})
	b := warm.Build{ID: "b", Venv: v}
	marker := strconv.Itoa(50000 + os.Getpid()%10000)
	code := `
import os, subprocess, time
subprocess.Popen(["sleep", "` + marker + `"])
subprocess.Popen(["setsid", "sleep", "` + marker + `"])
subprocess.Popen(["sh", "-c", "sleep ` + marker + ` & exit"], start_new_session=True)
time.sleep(0.5)
print(os.getppid(), flush=True)
time.sleep(300)
`
	res := runWarm(t, p, b, sb, code, 2*time.Second, 1<<20)
	if !res.TimedOut || res.ExitReason != runner.ExitTimeout || res.ExitCode != -1 {
		t.Fatalf("got timed_out=%v exit_reason=%q exit=%d; want the timeout", res.TimedOut, res.ExitReason, res.ExitCode)
	}
	waitFor(t, "the run's processes to die", func() bool { return len(processesWith("sleep\x00"+marker)) == 0 })
	again := runWarm(t, p, b, sb, `import os; print(os.getppid())`, 30*time.Second, 1<<20)
	if string(again.Stdout) != string(res.Stdout) {
		t.Errorf("parent %q after the timeout, %q before: want the same parent serving", again.Stdout, res.Stdout)
	}
}

// A parent killed between runs is replaced (the run meanwhile goes cold); one killed during a run
// ends that run as killed by a signal, at once.
func TestParentDies(t *testing.T) {
	v, sb := venv(t), nsSandbox(t)
	p := newPool(t, warm.Config{Sandbox: sb})
	b := warm.Build{ID: "b", Venv: v}
	python := filepath.Join(v, "bin", "python") + "\x00-c"
	runWarm(t, p, b, sb, `pass`, 30*time.Second, 1<<20)
	parents := processesWith(python)
	if len(parents) != 1 {
		t.Fatalf("parents %v; want one", parents)
	}
	if err := syscall.Kill(parents[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the parent to die", func() bool { return !proctest.Alive(parents[0]) })
	res, ok, err := p.Run(t.Context(), b, runner.Spec{VenvDir: v, Code: "pass", Timeout: 10 * time.Second, MaxOutput: 100, Sandbox: sb})
	if ok || err != nil {
		t.Fatalf("got warm=%v err=%v %+v; want the run sent cold while a new parent starts", ok, err, res)
	}
	res = runWarm(t, p, b, sb, `print("replaced")`, 30*time.Second, 1<<20)
	if string(res.Stdout) != "replaced\n" || res.ExitCode != 0 {
		t.Fatalf("got %q exit %d", res.Stdout, res.ExitCode)
	}

	parents = processesWith(python)
	if len(parents) != 1 {
		t.Fatalf("parents %v; want one", parents)
	}
	// Started: a child handed its run has /dev/null as stdin (the parent has its socket, and so
	// has a child armed for a run that has not come, which would rightly go cold). The last run's
	// child may still be tearing down after its answer: it does not count.
	started := func() []int {
		var pids []int
		for _, pid := range proctest.With(python) {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid)); l == "/dev/null" {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	before := started()
	done := make(chan runner.Result, 1)
	go func() {
		r, _, _ := p.Run(t.Context(), b, runner.Spec{VenvDir: v, Code: "import time; print('started', flush=True); time.sleep(300)", Timeout: 5 * time.Minute, MaxOutput: 100, Sandbox: sb})
		done <- r
	}()
	waitFor(t, "the run to start", func() bool {
		for _, pid := range started() {
			if !slices.Contains(before, pid) {
				return true
			}
		}
		return false
	})
	if err := syscall.Kill(parents[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the run outlived its parent")
	}
	if res.ExitCode != -1 || res.ExitReason != runner.ExitSignal || res.TimedOut {
		t.Errorf("got exit %d reason %q timed_out %v; want -1, signal", res.ExitCode, res.ExitReason, res.TimedOut)
	}
	runWarm(t, p, b, sb, `pass`, 30*time.Second, 1<<20)
}

// Over its memory budget the pool stops the least recently used build's parent.
func TestMemoryBudget(t *testing.T) {
	v1, v2, sb := venv(t), venv(t), nsSandbox(t)
	probe := newPool(t, warm.Config{Sandbox: sb})
	runWarm(t, probe, warm.Build{ID: "probe", Venv: v1}, sb, "pass", 30*time.Second, 100)
	one := probe.Memory()
	if one <= 0 {
		t.Fatalf("a parent's memory: %d", one)
	}
	probe.Close()

	p := newPool(t, warm.Config{Sandbox: sb, MemoryBytes: one * 3 / 2})
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collectors()...)
	a, b := warm.Build{ID: "a", Venv: v1}, warm.Build{ID: "b", Venv: v2}
	runWarm(t, p, a, sb, "pass", 30*time.Second, 100)
	runWarm(t, p, b, sb, "pass", 30*time.Second, 100)
	waitFor(t, "an eviction", func() bool { return p.Parents() == 1 })
	if got, err := testutil.GatherAndCount(reg, "envfabric_agent_warm_evictions_total"); err != nil || got != 1 {
		t.Errorf("evictions series: %d (%v); want 1", got, err)
	}
	// b first: a's cold run starts a parent for a again, which may then evict b's.
	if _, ok, _ := p.Run(t.Context(), b, runner.Spec{VenvDir: v2, Code: "pass", Timeout: 10 * time.Second, MaxOutput: 100, Sandbox: sb}); !ok {
		t.Errorf("build b's run went cold; want its parent kept")
	}
	if _, ok, _ := p.Run(t.Context(), a, runner.Spec{VenvDir: v1, Code: "pass", Timeout: 10 * time.Second, MaxOutput: 100, Sandbox: sb}); ok {
		t.Errorf("build a's run was warm; want its parent evicted (least recently used)")
	}
}

// A warm run answers as a cold run of the same code does.
func TestSameAnswersAsCold(t *testing.T) {
	v, sb := venv(t), nsSandbox(t)
	p := newPool(t, warm.Config{Sandbox: sb})
	b := warm.Build{ID: "b", Venv: v, Preload: []string{"json"}}
	cases := []struct {
		name, code string
		timeout    time.Duration
		maxOut     int64
	}{
		{"output", "import sys\nprint('out')\nprint('err', file=sys.stderr)", 30 * time.Second, 1 << 20},
		{"traceback", "def f():\n    return 1 / 0\nf()", 30 * time.Second, 1 << 20},
		{"chained traceback", "try:\n    {}['k']\nexcept KeyError:\n    raise ValueError('v')", 30 * time.Second, 1 << 20},
		{"syntax error", "def (:", 30 * time.Second, 1 << 20},
		{"bare SystemExit", "raise SystemExit", 30 * time.Second, 1 << 20},
		{"SystemExit code", "import sys; sys.exit(7)", 30 * time.Second, 1 << 20},
		{"SystemExit large", "import sys; sys.exit(300)", 30 * time.Second, 1 << 20},
		{"SystemExit message", "raise SystemExit('bye')", 30 * time.Second, 1 << 20},
		{"os._exit", "import os; print('x', flush=True); os._exit(5)", 30 * time.Second, 1 << 20},
		{"atexit", "import atexit\natexit.register(lambda: print('bye'))\nprint('hi')", 30 * time.Second, 1 << 20},
		{"threads joined", "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), print('late'))).start()\nprint('early')", 30 * time.Second, 1 << 20},
		{"main module", "import os, sys\nprint(__name__, __file__ == os.path.abspath('main.py'), sys.argv, sys.path[0] == os.getcwd(), __spec__)", 30 * time.Second, 1 << 20},
		{"environment", "import os\nprint(sorted(k for k in os.environ if k != 'LC_CTYPE'))", 30 * time.Second, 1 << 20},
		{"unbuffered", "import sys, os\nsys.stdout.write('a')\nos.write(1, b'b')\nsys.stdout.write('c\\n')", 30 * time.Second, 1 << 20},
		{"KeyboardInterrupt", "raise KeyboardInterrupt", 30 * time.Second, 1 << 20},
		{"code replaces os._exit", "import os\nos._exit = None\nprint('x')", 30 * time.Second, 1 << 20},
		{"loader", "print(type(__loader__).__name__, __cached__)", 30 * time.Second, 1 << 20},
		{"killed by a signal", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 30 * time.Second, 1 << 20},
		{"truncated", "print('x' * 10000)\nimport sys; print('y' * 10000, file=sys.stderr)", 30 * time.Second, 100},
		{"timeout", "import time\nprint('t', flush=True)\ntime.sleep(60)", time.Second, 1 << 20},
	}
	work := regexp.MustCompile(`/tmp/envfabric-run-[^/"]+(/[0-9]+)?`)
	norm := func(b []byte) string { return work.ReplaceAllString(string(b), "WORK") }
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			spec := runner.Spec{VenvDir: v, Code: tt.code, Timeout: tt.timeout, MaxOutput: tt.maxOut, Sandbox: sb}
			cold, err := runner.Run(t.Context(), spec)
			if err != nil {
				t.Fatal(err)
			}
			hot := runWarm(t, p, b, sb, tt.code, tt.timeout, tt.maxOut)
			for _, c := range []struct{ what, cold, warm string }{
				{"stdout", norm(cold.Stdout), norm(hot.Stdout)},
				{"stderr", norm(cold.Stderr), norm(hot.Stderr)},
				{"exit", fmt.Sprint(cold.ExitCode, cold.ExitReason, cold.TimedOut), fmt.Sprint(hot.ExitCode, hot.ExitReason, hot.TimedOut)},
				{"truncated", fmt.Sprint(cold.StdoutTruncated, cold.StderrTruncated), fmt.Sprint(hot.StdoutTruncated, hot.StderrTruncated)},
			} {
				if c.cold != c.warm {
					t.Errorf("%s: warm %q; cold %q", c.what, c.warm, c.cold)
				}
			}
		})
	}
}

// processesWith lists the parents whose command line contains s: not their children (a child
// armed for the next run is forked from its parent, with the same command line).
func processesWith(s string) []int {
	found := map[int]bool{}
	for _, pid := range proctest.With(s) {
		found[pid] = true
	}
	var pids []int
	for pid := range found {
		if !found[proctest.Parent(pid)] {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A child cannot reach its parent: no signal by pid, group, -1, thread, queue, pidfd or as a
// descriptor's owner, no ptrace, no reading its memory or environment; the parent goes on serving.
func TestChildCannotReachParent(t *testing.T) {
	v, sb := venv(t), nsSandbox(t)
	p := newPool(t, warm.Config{Sandbox: sb})
	b := warm.Build{ID: "b", Venv: v}
	code := `
import ctypes, fcntl, os, signal, socket
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(L(nr), *[L(x) for x in a])
    return 0 if r >= 0 else ctypes.get_errno()
parent = os.getppid()
pgid = os.getpgid(parent)
def attempt(name, fn):
    try:
        fn()
        print(name, "done")
    except OSError as e:
        print(name, e.errno)
attempt("kill", lambda: os.kill(parent, signal.SIGKILL))
attempt("kill group", lambda: os.killpg(pgid, signal.SIGKILL))
attempt("kill -1", lambda: os.kill(-1, signal.SIGKILL))
attempt("kill init", lambda: os.kill(1, signal.SIGTERM))
print("tgkill", sc(234, parent, parent, 9))
print("tkill", sc(200, parent, 9))
print("rt_sigqueueinfo", sc(129, parent, 9, 0))
print("pidfd_open", sc(434, parent, 0))
d = os.open("/proc/%d" % parent, os.O_RDONLY | os.O_DIRECTORY)
print("pidfd_send_signal(/proc)", sc(424, d, 9, 0, 0))
print("ptrace attach", sc(101, 16, parent, 0, 0))
a, b = socket.socketpair()
attempt("F_SETOWN", lambda: fcntl.fcntl(a, fcntl.F_SETOWN, parent))
attempt("F_SETOWN group", lambda: fcntl.fcntl(a, fcntl.F_SETOWN, -pgid))
attempt("F_SETOWN self", lambda: fcntl.fcntl(a, fcntl.F_SETOWN, os.getpid()))
for f in ("mem", "environ", "fd/0"):
    try:
        open("/proc/%d/%s" % (parent, f), "rb").read(1)
        print(f, "read")
    except OSError as e:
        print(f, e.errno)
attempt("kill self group", lambda: os.killpg(os.getpgrp(), 0))
print(parent)
`
	res := runWarm(t, p, b, sb, code, 30*time.Second, 1<<20)
	lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	want := []string{"kill 1", "kill group 1", "kill -1 1", "kill init 1", "tgkill 1", "tkill 1", "rt_sigqueueinfo 1", "pidfd_open 1",
		"pidfd_send_signal(/proc) 1", "ptrace attach 1", "F_SETOWN 1", "F_SETOWN group 1", "F_SETOWN self done",
		"mem 13", "environ 13", "fd/0 13", "kill self group done"}
	if len(lines) != len(want)+1 {
		t.Fatalf("stdout %q stderr %q", res.Stdout, res.Stderr)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("got %q; want %q", lines[i], w)
		}
	}
	again := runWarm(t, p, b, sb, `import os; print(os.getppid())`, 30*time.Second, 1<<20)
	if strings.TrimSpace(string(again.Stdout)) != lines[len(lines)-1] {
		t.Errorf("parent %q, then %q: want the same parent serving", lines[len(lines)-1], again.Stdout)
	}
}

// A parent is recycled after WARM_MAX_RUNS runs: the next run goes cold while another starts.
func TestRecycleAfterMaxRuns(t *testing.T) {
	v, sb := venv(t), nsSandbox(t)
	p := newPool(t, warm.Config{Sandbox: sb, MaxRuns: 2})
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collectors()...)
	b := warm.Build{ID: "b", Venv: v}
	python := filepath.Join(v, "bin", "python") + "\x00-c"
	runWarm(t, p, b, sb, "pass", 30*time.Second, 100)
	first := processesWith(python)
	runWarm(t, p, b, sb, "pass", 30*time.Second, 100)
	waitFor(t, "the recycled parent to go", func() bool { return len(first) == 1 && !proctest.Alive(first[0]) })
	runWarm(t, p, b, sb, "pass", 30*time.Second, 100)
	if now := processesWith(python); len(now) != 1 || now[0] == first[0] {
		t.Errorf("parents %v after two runs of %v; want another one", now, first)
	}
	if got := counterValue(t, reg, "envfabric_agent_warm_evictions_total", "runs"); got != 1 {
		t.Errorf("evictions{reason=runs} = %v; want 1", got)
	}
}

// Concurrent runs of one build are served by as many parents, at once: each of two runs waits
// for the other to have started.
func TestConcurrentRuns(t *testing.T) {
	v := venv(t)
	sb := sandbox.Config{Tier: sandbox.Process, PIDNamespace: true} // a /tmp both runs see
	p := newPool(t, warm.Config{Sandbox: sb, ParentsPerBuild: 2})
	b := warm.Build{ID: "b", Venv: v}
	dir := t.TempDir()
	code := func(mine, theirs string) string {
		return fmt.Sprintf(`import os, time
open(%q, "w").close()
while not os.path.exists(%q):
    time.sleep(0.01)
print("met")`, filepath.Join(dir, mine), filepath.Join(dir, theirs))
	}
	if err := p.Prestart(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res  runner.Result
		warm bool
		err  error
	}
	done := make(chan result, 2)
	for _, c := range []string{code("a", "b"), code("b", "a")} {
		go func() {
			res, ok, err := p.Run(t.Context(), b, runner.Spec{VenvDir: v, Code: c, Timeout: 30 * time.Second, MaxOutput: 100, Sandbox: sb})
			done <- result{res, ok, err}
		}()
	}
	for range 2 {
		r := <-done
		if r.err != nil || !r.warm || string(r.res.Stdout) != "met\n" {
			t.Errorf("got warm=%v err=%v %+v; want both runs warm, each meeting the other", r.warm, r.err, r.res)
		}
	}
}

// counterValue is the value of counter name with the one label value (0 if absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
