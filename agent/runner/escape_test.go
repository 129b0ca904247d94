package runner_test

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/testutil/proctest"

	"golang.org/x/sys/unix"

	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// The escape tests run hostile code in real environments, built by uv from the local index into
// a DATA_ROOT laid out like production (envs beside uv_cache, so site-packages is hardlinked to
// the cache), and check from the host that the code was contained.

// data is a DATA_ROOT with two environments, a control-plane database and a secret in the
// agent's environment.
type data struct {
	root, envs, cache string
	env, other        string // project directories
	db                string
	uid, gid          int
}

const agentSecret = "agent-token-3f9c2e7d"

// systemPython is an interpreter every user can execute (unlike one under /root).
func systemPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3.11", "/usr/bin/python3"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no /usr/bin/python3.11 or /usr/bin/python3")
	}
	t.Skip("no system Python under /usr/bin")
	return ""
}

func newData(t *testing.T) *data {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	d := &data{}
	d.uid, _ = strconv.Atoi(u.Uid)
	d.gid, _ = strconv.Atoi(u.Gid)
	d.root = t.TempDir()
	// The user tier has no mount namespace: the run user must be able to walk to its environment
	// as it would in production (DATA_ROOT 0755, service state directories 0700).
	for p := d.root; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.envs = filepath.Join(d.root, "envs")
	d.cache = filepath.Join(d.root, "uv_cache")
	d.db = filepath.Join(d.root, "controlplane", "fabric.db")
	if err := os.MkdirAll(filepath.Dir(d.db), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.db, []byte("SQLite format 3 "+agentSecret), 0o644); err != nil {
		t.Fatal(err)
	}
	ix := pyindex.Serve(t, pyindex.Universe())
	ex := uv.New(uv.Config{
		Bin:          testenv.UV(t),
		CacheDir:     d.cache,
		LinkMode:     "hardlink",
		DefaultIndex: ix.URL,
		Path:         "/usr/local/bin:/usr/bin:/bin",
		Home:         t.TempDir(),
		WaitDelay:    5 * time.Second,
	}, slog.New(slog.DiscardHandler))
	py := systemPython(t)
	for i, node := range []string{"a", "b"} {
		dir := filepath.Join(d.envs, "wf", node, "v1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		pp := fmt.Sprintf("[project]\nname = \"wf-%s\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = []\n", node)
		if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(pp), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ex.Add(t.Context(), uv.Project{Dir: dir, Python: py}, []string{"alpha"}, nil); err != nil {
			t.Fatalf("uv add: %v\n%s", err, uv.OutputOf(err))
		}
		if i == 0 {
			d.env = dir
		} else {
			d.other = dir
		}
	}
	t.Setenv("AGENT_TOKEN", agentSecret)
	return d
}

func (d *data) sandbox(t *testing.T, tier sandbox.Tier) sandbox.Config {
	t.Helper()
	cfg := sandbox.Config{
		Tier:         tier,
		UID:          d.uid,
		GID:          d.gid,
		PIDNamespace: true,
		Hide:         []string{d.root, d.envs, d.cache},
		Limits: sandbox.Limits{
			CPUSeconds:  60,
			MemoryBytes: 1 << 30,
			FileBytes:   16 << 20,
			OpenFiles:   256,
			Processes:   64,
		},
	}
	if err := cfg.Probe(sandbox.Program{}); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: sandbox tier %s unavailable: %v", tier, err)
		}
		t.Skipf("sandbox tier %s unavailable here: %v", tier, err)
	}
	return cfg
}

// sitePackages is the alpha package's __init__.py in env.
func sitePackagesFile(t *testing.T, env string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(env, ".venv", "lib", "python3*", "site-packages", "alpha", "__init__.py"))
	if err != nil || len(m) != 1 {
		t.Fatalf("alpha in %s: %v %v", env, m, err)
	}
	return m[0]
}

func run(t *testing.T, r runKind, sb sandbox.Config, env, code string, timeout time.Duration) runner.Result {
	t.Helper()
	res, err := r.run(t, runner.Spec{
		VenvDir: filepath.Join(env, ".venv"), Code: code, Timeout: timeout, MaxOutput: 1 << 20, Sandbox: sb,
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("exit=%d timed_out=%v stdout=%q stderr=%q", res.ExitCode, res.TimedOut, trim(res.Stdout), trim(res.Stderr))
	return res
}

func trim(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "..."
	}
	return string(b)
}

// The tiers this machine allows, strongest first, each with what it must contain.
var dropTiers = []sandbox.Tier{sandbox.Namespace, sandbox.User}

// namespaceOnly is for the tests of what only the namespace tier contains.
var namespaceOnly = []sandbox.Tier{sandbox.Namespace}

func TestEscapeReadSecrets(t *testing.T) {
	d := newData(t)
	code := fmt.Sprintf(`
import os, glob
found = []
if %[1]q in repr(dict(os.environ)):
    found.append("environ")
for p in glob.glob("/proc/[0-9]*/environ") + ["/proc/%[2]d/environ", "/proc/1/environ"]:
    try:
        if %[1]q.encode() in open(p, "rb").read():
            found.append(p)
    except OSError:
        pass
try:
    found.append("db:" + open(%[3]q).read())
except OSError as e:
    print("db", type(e).__name__)
print("found", found)
`, agentSecret, os.Getpid(), d.db)
	forRunners(t, append(dropTiers, sandbox.Process), func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		res := run(t, r, sb, d.env, code, 30*time.Second)
		out := string(res.Stdout)
		if res.ExitCode != 0 || !strings.Contains(out, "found") {
			t.Fatalf("code did not run: exit %d %q %q", res.ExitCode, res.Stdout, res.Stderr)
		}
		if tier == sandbox.Process {
			// The process tier runs as the agent's own user: only the environment is filtered.
			if strings.Contains(out, "'environ'") {
				t.Errorf("the agent's environment reached the code: %s", out)
			}
			return
		}
		if strings.Contains(out, agentSecret) || !strings.Contains(out, "found []") {
			t.Errorf("a secret reached the code: %s", out)
		}
	})
}

func TestEscapeForkBomb(t *testing.T) {
	d := newData(t)
	code := `
import os, time
reported = False
while True:
    try:
        os.fork()
    except OSError as e:
        if not reported:
            print("fork failed", e.errno, flush=True)
            reported = True
        time.sleep(0.05)
`
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		sb.Limits.Processes = 32
		res := run(t, r, sb, d.env, code, 3*time.Second)
		if !res.TimedOut {
			t.Errorf("got timed_out=false; want the bomb stopped by the timeout")
		}
		if !strings.Contains(string(res.Stdout), "fork failed 11") {
			t.Errorf("stdout %q: want fork to fail with EAGAIN (the process limit)", trim(res.Stdout))
		}
		// Every fork keeps the interpreter's command line, whose path is this test's own: cold,
		// "python main.py"; warm, the warm interpreter's "python -c ...". The warm interpreter
		// stays, and so does the child it arms for the next run: both still hold its control
		// socket on fd 0, where every process of a run has /dev/null.
		python := filepath.Join(d.env, ".venv", "bin", "python")
		mark := python + "\x00main.py"
		if r.warm {
			mark = python + "\x00-c"
		}
		waitFor(t, "the bomb's processes to die", func() bool {
			for _, pid := range proctest.With(mark) {
				if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid)); !r.warm || l == "/dev/null" {
					return false
				}
			}
			return true
		})
	})
}

func TestEscapeMemoryHog(t *testing.T) {
	d := newData(t)
	code := `
try:
    b = bytearray(4 << 30)
    print("allocated", len(b))
except MemoryError:
    print("MemoryError")
`
	forRunners(t, append(dropTiers, sandbox.Process), func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		sb.Limits.MemoryBytes = 512 << 20
		res := run(t, r, sb, d.env, code, 30*time.Second)
		if string(res.Stdout) != "MemoryError\n" {
			t.Errorf("stdout: got %q; want %q", res.Stdout, "MemoryError\n")
		}
	})
}

func TestEscapeOutputAndFileFlood(t *testing.T) {
	d := newData(t)
	code := `
import sys, os
try:
    with open("big", "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))
    print("wrote 64 MiB", flush=True)
except OSError as e:
    print("file", e.errno, flush=True)
print("flood", flush=True)
while True:
    sys.stdout.write("y" * 65536)
`
	forRunners(t, append(dropTiers, sandbox.Process), func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		res, err := r.run(t, runner.Spec{
			VenvDir: filepath.Join(d.env, ".venv"), Code: code, Timeout: 2 * time.Second, MaxOutput: 4096, Sandbox: sb,
		})
		if err != nil {
			t.Fatal(err)
		}
		want := "file 27\nflood\n" // EFBIG from the file-size limit
		if !strings.HasPrefix(string(res.Stdout), want) {
			t.Errorf("stdout starts %q; want %q", trim(res.Stdout), want)
		}
		if len(res.Stdout) != 4096 || !res.StdoutTruncated || !res.TimedOut {
			t.Errorf("got %d bytes truncated=%v timed_out=%v; want 4096, true, true", len(res.Stdout), res.StdoutTruncated, res.TimedOut)
		}
	})
}

// A grandchild that starts its own session escapes a process group; only the PID namespace
// catches it. The marker lets the host find it by its command line.
func TestEscapeSetsidOutlivesTimeout(t *testing.T) {
	d := newData(t)
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		marker := strconv.Itoa(40000 + os.Getpid()%10000)
		code := `
import subprocess, time
subprocess.Popen(["sh", "-c", "sleep ` + marker + ` & exit"], start_new_session=True,
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen(["setsid", "sleep", "` + marker + `"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
print("started", flush=True)
time.sleep(300)
`
		res := run(t, r, sb, d.env, code, 3*time.Second)
		if !res.TimedOut || string(res.Stdout) != "started\n" {
			t.Fatalf("got timed_out=%v stdout=%q; want the code started and timed out", res.TimedOut, res.Stdout)
		}
		waitFor(t, "the setsid sleepers to die", func() bool { return len(proctest.With("sleep\x00"+marker)) == 0 })
	})
}

// site-packages is hardlinked to the uv cache: a write would change every environment sharing
// the file.
func TestEscapeWriteSitePackages(t *testing.T) {
	d := newData(t)
	target := sitePackagesFile(t, d.env)
	var st syscall.Stat_t
	if err := syscall.Stat(target, &st); err != nil || st.Nlink < 2 {
		t.Fatalf("%s: nlink %d (%v); want a hardlink into the cache", target, st.Nlink, err)
	}
	before, _ := os.ReadFile(target)
	code := fmt.Sprintf(`
import os
for p, how in [(%[1]q, "a"), (os.path.dirname(%[1]q) + "/new.py", "w"), (%[2]q + "/x", "w"), (%[3]q + "/x", "w")]:
    try:
        open(p, how).write("pwned = True\n")
        print("wrote", p)
    except OSError as e:
        print("denied", e.errno)
try:
    os.chmod(%[1]q, 0o666)
    print("chmod")
except OSError as e:
    print("denied", e.errno)
`, target, d.env, d.cache)
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		res := run(t, r, sb, d.env, code, 30*time.Second)
		if strings.Contains(string(res.Stdout), "wrote") || strings.Contains(string(res.Stdout), "chmod") ||
			strings.Count(string(res.Stdout), "denied") != 5 {
			t.Errorf("stdout %q: want every write denied", res.Stdout)
		}
		if after, _ := os.ReadFile(target); string(after) != string(before) {
			t.Errorf("%s changed", target)
		}
	})
}

func TestEscapeReadOtherEnvironment(t *testing.T) {
	d := newData(t)
	sb := d.sandbox(t, sandbox.Namespace)
	code := fmt.Sprintf(`
import os
for p in [%[1]q + "/pyproject.toml", %[1]q + "/.venv/pyvenv.cfg", %[2]q]:
    try:
        open(p).read()
        print("read", p)
    except OSError as e:
        print("denied", e.errno)
print(sorted(os.listdir(%[3]q)), sorted(os.listdir(%[4]q)))
print(open(%[5]q + "/pyproject.toml").read().splitlines()[1])
`, d.other, d.cache, d.envs, d.root, d.env)
	forRunners(t, namespaceOnly, func(t *testing.T, r runKind, _ sandbox.Tier) {
		res := run(t, r, sb, d.env, code, 30*time.Second)
		want := "denied 2\ndenied 2\ndenied 2\n['wf'] ['envs']\nname = \"wf-a\"\n"
		if string(res.Stdout) != want {
			t.Errorf("stdout: got %q; want %q", res.Stdout, want)
		}
	})
}

// The host's services are out of reach whether or not network is allowed: a server on the host
// (all addresses) cannot be reached through 127.0.0.1 (the run's own loopback), slirp's gateway
// to the host's loopback (10.0.2.2), the host's LAN address, or the host's end of the test's veth.
// With network allowed, an outside address (a server in another network namespace, standing in
// for the internet) is reachable; without, it is not.
func TestEscapeNetwork(t *testing.T) {
	d := newData(t)
	hostPort := serve(t, "tcp", ":0")
	outside, vethHost := outsideNamespace(t)
	outsidePort := outside.listen(t)
	hosts := []string{"127.0.0.1", "10.0.2.2", vethHost}
	if ip := hostIP(); ip != "" {
		hosts = append(hosts, ip)
	}
	code := fmt.Sprintf(`
import socket
def attempt(h, p):
    try:
        socket.create_connection((h, p), timeout=3).close()
        return "connected"
    except OSError as e:
        return "blocked"
for h in %s:
    print("host", attempt(h, %d))
print("outside", attempt(%q, %d))
`, pyList(hosts), hostPort, outside.addr, outsidePort)
	forRunners(t, namespaceOnly, func(t *testing.T, r runKind, _ sandbox.Tier) {
		for _, allow := range []bool{false, true} {
			t.Run(fmt.Sprintf("allow=%v", allow), func(t *testing.T) {
				sb := d.sandbox(t, sandbox.Namespace)
				sb.AllowNetwork = allow
				res := run(t, r, sb, d.env, code, 60*time.Second)
				want := strings.Repeat("host blocked\n", len(hosts)) + "outside " + map[bool]string{true: "connected", false: "blocked"}[allow] + "\n"
				if string(res.Stdout) != want {
					t.Errorf("stdout: got %q; want %q", res.Stdout, want)
				}
			})
		}
	})
}

// serve accepts (and closes) connections on addr until the test ends, and returns its port.
func serve(t *testing.T, network, addr string) int {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptAll(ln)
	return ln.Addr().(*net.TCPAddr).Port
}

func acceptAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// outsideNS is a network namespace joined to the host by a veth pair: an address that is not
// the host's, reachable from it, like a server on the internet.
type outsideNS struct {
	name, addr string
}

// outsideNamespace makes one (removed with the test) and returns it and the host's end address.
func outsideNamespace(t *testing.T) (outsideNS, string) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	n := os.Getpid() % 200
	ns := outsideNS{name: fmt.Sprintf("envfabric-outside-%d", os.Getpid()), addr: fmt.Sprintf("10.213.%d.2", n)}
	host, peer := fmt.Sprintf("efo%dh", os.Getpid()), fmt.Sprintf("efo%dp", os.Getpid())
	hostAddr := fmt.Sprintf("10.213.%d.1", n)
	steps := [][]string{
		{"netns", "add", ns.name},
		{"link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns.name},
		{"addr", "add", hostAddr + "/30", "dev", host},
		{"link", "set", host, "up"},
		{"-n", ns.name, "addr", "add", ns.addr + "/30", "dev", peer},
		{"-n", ns.name, "link", "set", peer, "up"},
		{"-n", ns.name, "link", "set", "lo", "up"},
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.name).Run() })
	for _, args := range steps {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	return ns, hostAddr
}

// listen starts a server inside the namespace: a socket belongs to the network namespace of the
// thread that made it, so one locked thread enters the namespace, listens, and goes back.
func (o outsideNS) listen(t *testing.T) int {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded if it could not go back
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer own.Close()
		target, err := os.Open("/run/netns/" + o.name)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if _, _, errno := syscall.RawSyscall(unix.SYS_SETNS, target.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
			ch <- result{err: errno}
			return
		}
		ln, err := net.Listen("tcp", o.addr+":0")
		if _, _, errno := syscall.RawSyscall(unix.SYS_SETNS, own.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 && err == nil {
			ln.Close()
			err = errno
		}
		ch <- result{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in %s: %v", o.name, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	go acceptAll(r.ln)
	return r.ln.Addr().(*net.TCPAddr).Port
}

// An interpreter the run user cannot reach (a pyenv under /root, mode 0700) is a clear
// ENV_NOT_READY, not a mysterious exit code. Cold only: a warm interpreter of such an environment
// cannot start either, and its runs go cold, which is this test.
func TestRunUnreachableInterpreter(t *testing.T) {
	d := newData(t)
	sb := d.sandbox(t, sandbox.Namespace)
	hidden := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(hidden, 0o700); err != nil {
		t.Fatal(err)
	}
	venv := filepath.Join(hidden, "p", ".venv")
	if err := os.MkdirAll(filepath.Join(venv, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(hidden, "python3"), filepath.Join(venv, "bin", "python")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(systemPython(t), filepath.Join(hidden, "python3")); err != nil {
		t.Fatal(err)
	}
	sb.Tier = sandbox.User // no mount namespace: the 0700 directory is what stops the run user
	_, err := runner.Run(t.Context(), runner.Spec{VenvDir: venv, Code: "print(1)", Timeout: 10 * time.Second, MaxOutput: 100, Sandbox: sb})
	if err == nil || !strings.Contains(err.Error(), "ENV_NOT_READY") || !strings.Contains(err.Error(), "run user") {
		t.Errorf("got %v; want ENV_NOT_READY naming the run user", err)
	}
}

func pyList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// hostIP is a non-loopback address of this host, if it has one.
func hostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// waitFor polls cond: a killed process needs a moment to be reaped.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkRunTier is the cost of a trivial run in each tier (python start-up included), so the
// price of isolation can be compared with the process tier; "+cgroup" adds the whole-run limits
// (a cgroup made, joined, read and removed per run), "+network" the user-mode network.
func BenchmarkRunTier(b *testing.B) {
	cases := []struct {
		name    string
		tier    sandbox.Tier
		cgroup  bool
		network bool
	}{
		{"namespace", sandbox.Namespace, false, false},
		{"user", sandbox.User, false, false},
		{"process", sandbox.Process, false, false},
		{"namespace+cgroup", sandbox.Namespace, true, false},
		{"user+cgroup", sandbox.User, true, false},
		{"namespace+network", sandbox.Namespace, false, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			d := benchData(b)
			sb := sandbox.Config{Tier: c.tier, UID: d.uid, GID: d.gid, Hide: []string{d.root}, Limits: sandbox.Limits{MemoryBytes: 1 << 30}, AllowNetwork: c.network}
			if c.cgroup {
				sb.RunLimits = sandbox.RunLimits{MemoryBytes: 1 << 30, Processes: 64}
				g, err := sandbox.FindCgroups(sb.RunLimits)
				if err != nil {
					b.Skipf("no cgroups: %v", err)
				}
				sb.Cgroups = g
			}
			if err := sb.Probe(sandbox.Program{}); err != nil {
				b.Skipf("%s unavailable: %v", c.name, err)
			}
			spec := runner.Spec{VenvDir: filepath.Join(d.env, ".venv"), Code: "pass", Timeout: 30 * time.Second, MaxOutput: 1024, Sandbox: sb}
			for b.Loop() {
				res, err := runner.Run(b.Context(), spec)
				if err != nil || res.ExitCode != 0 {
					b.Fatalf("run: %v %+v", err, res)
				}
			}
		})
	}
}

// benchData is a DATA_ROOT with one bare venv made from the system Python (no uv needed).
func benchData(b *testing.B) *data {
	b.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		b.Skip(err)
	}
	d := &data{}
	d.uid, _ = strconv.Atoi(u.Uid)
	d.gid, _ = strconv.Atoi(u.Gid)
	d.root = b.TempDir()
	for p := d.root; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	d.env = filepath.Join(d.root, "envs", "e")
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-m", "venv", "--without-pip", filepath.Join(d.env, ".venv")).CombinedOutput(); err != nil {
		b.Skipf("venv: %v %s", err, out)
	}
	return d
}

// leakFD opens a pipe whose write end is not close-on-exec, as a descriptor the agent inherited
// from its own parent would be (a shell's log pipe), and returns its number.
func leakFD(t *testing.T) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), syscall.F_SETFD, 0); errno != 0 {
		t.Fatalf("clear FD_CLOEXEC: %v", errno)
	}
	return int(w.Fd())
}

// Code holds stdin, stdout and stderr only: not the inherited descriptor, nor the sandbox's
// status pipe, nor anything else.
func TestEscapeDescriptors(t *testing.T) {
	d := newData(t)
	leaked := leakFD(t)
	code := fmt.Sprintf(`
import os
held = []
for fd in range(3, max(4096, %d + 1)):
    try:
        os.fstat(fd)
        held.append(fd)
    except OSError:
        pass
print("held", held)
`, leaked)
	forRunners(t, sandbox.Tiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		res := run(t, r, sb, d.env, code, 30*time.Second)
		if got, want := string(res.Stdout), "held []\n"; got != want {
			t.Errorf("stdout: got %q; want %q (fd %d was inherited by the agent)", got, want, leaked)
		}
	})
}

// A run leaves something in every place it can write: a file and a FIFO in each directory that
// is world-writable or its own, a POSIX message queue and a System V shared-memory segment. None
// of it may reach the host or a later run, and the only directories it may write are its private
// ones (the root file system is read-only).
func TestEscapeWritablePlaces(t *testing.T) {
	d := newData(t)
	sb := d.sandbox(t, sandbox.Namespace)
	marker := "envfabric-leak-" + strconv.Itoa(os.Getpid())
	prelude := fmt.Sprintf(`
import ctypes, os
marker = %q
libc = ctypes.CDLL(None, use_errno=True)
libc.mq_open.restype = ctypes.c_int
places = {"/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue", os.environ["HOME"]}
for root, dirs, _ in os.walk("/"):
    dirs[:] = [x for x in dirs if os.path.join(root, x) not in ("/proc", "/sys")]
    try:
        st = os.lstat(root)
    except OSError:
        continue
    if st.st_mode & 0o002 or st.st_uid == os.getuid():
        places.add(root)
`, marker)
	leave := prelude + `
wrote = set()
for p in sorted(places):
    try:
        open(os.path.join(p, marker), "w").write("x")
        os.mkfifo(os.path.join(p, marker + ".fifo"))
        wrote.add(os.path.realpath(p))
    except OSError:
        pass
print("wrote", sorted(wrote))
print("shm", libc.shmget(0x5eed, 4096, 0o1666) >= 0)
print("mq", libc.mq_open(("/" + marker).encode(), os.O_CREAT | os.O_RDWR, 0o666, None) >= 0)
`
	find := prelude + `
found = [p for p in sorted(places) if os.path.lexists(os.path.join(p, marker)) or os.path.lexists(os.path.join(p, marker + ".fifo"))]
print("found", found)
print("shm", libc.shmget(0x5eed, 0, 0) >= 0)
print("mq", libc.mq_open(("/" + marker).encode(), os.O_RDWR) >= 0)
`
	forRunners(t, namespaceOnly, func(t *testing.T, r runKind, _ sandbox.Tier) {
		res := run(t, r, sb, d.env, leave, 60*time.Second)
		out := string(res.Stdout)
		work := ""
		for _, line := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(line, "wrote "); ok {
				for _, p := range strings.Split(strings.Trim(rest, "[]"), ", ") {
					p = strings.Trim(p, "'")
					switch {
					case p == "/tmp" || p == "/var/tmp" || p == "/dev/shm" || p == "/run/lock":
					case strings.HasPrefix(p, "/tmp/envfabric-run-") && work == "":
						work = p // the run's own work directory, under the private /tmp
					default:
						t.Errorf("the run could write %s: want only its private places", p)
					}
				}
			}
		}
		if !strings.Contains(out, "'/run/lock'") || !strings.Contains(out, "shm True\nmq True\n") {
			t.Fatalf("stdout %q: want the private places (/run/lock too), shared memory and a queue usable", out)
		}
		for _, p := range []string{"/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock"} {
			if _, err := os.Lstat(filepath.Join(p, marker)); err == nil {
				os.Remove(filepath.Join(p, marker))
				os.Remove(filepath.Join(p, marker+".fifo"))
				t.Errorf("%s/%s is on the host after the run", p, marker)
			}
		}
		res = run(t, r, sb, d.env, find, 60*time.Second)
		if got, want := string(res.Stdout), "found []\nshm False\nmq False\n"; got != want {
			t.Errorf("a later run: got %q; want %q", got, want)
		}
	})
}

// kernelSurface tries, through raw system calls, what an unprivileged user may do without a
// system-call filter on this kind of host (each call succeeds, or fails differently, without one)
// and prints "name errno" for each; 0 means it worked.
const kernelSurface = `
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(L(nr), *[a if isinstance(a, (bytes, ctypes.Array)) else L(a) for a in args])
    return 0 if r >= 0 else ctypes.get_errno()
def in_child(fn):
    pid = os.fork()
    if pid == 0:
        os._exit(fn())
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x20000, 0x40000000
print("unshare(NEWUSER)", in_child(lambda: sc(272, CLONE_NEWUSER)))
print("unshare(NEWUSER|NEWNS|NEWNET)", in_child(lambda: sc(272, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET)))
def clone_newuser():
    r = libc.syscall(L(56), L(CLONE_NEWUSER | 17), L(0), L(0), L(0), L(0))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        return 0
    return ctypes.get_errno()
print("clone(NEWUSER)", in_child(clone_newuser))
print("clone3", sc(435, 0, 0))
print("setns", sc(308, os.open("/proc/self/ns/net", os.O_RDONLY), 0))
params = ctypes.create_string_buffer(120)
print("io_uring_setup", sc(425, 8, params))
print("ptrace(TRACEME)", in_child(lambda: sc(101, 0, 0, 0, 0)))
print("userfaultfd", sc(323, 1))
attr = bytearray(128)
struct.pack_into("IIQ", attr, 0, 1, 128, 0)
struct.pack_into("Q", attr, 40, 0x60)
print("perf_event_open", sc(298, (ctypes.c_char * 128).from_buffer(attr), 0, -1, -1, 0))
print("clock_settime", sc(227, 0, struct.pack("qq", 0, 0)))
print("mount in a new user namespace", in_child(lambda: sc(272, CLONE_NEWUSER | CLONE_NEWNS) or sc(165, b"none", b"/tmp", b"tmpfs", 0, 0)))
`

// The system-call filter of the user and namespace tiers refuses each attempt (the process tier
// has none: there the attempts show what the filter takes away).
func TestEscapeKernelSurface(t *testing.T) {
	d := newData(t)
	want := strings.Join([]string{
		"unshare(NEWUSER) 1", "unshare(NEWUSER|NEWNS|NEWNET) 1", "clone(NEWUSER) 1", "clone3 38", "setns 1",
		"io_uring_setup 38", "ptrace(TRACEME) 1", "userfaultfd 1", "perf_event_open 1", "clock_settime 1",
		"mount in a new user namespace 1",
	}, "\n") + "\n"
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		res := run(t, r, sb, d.env, kernelSurface, 30*time.Second)
		if got := string(res.Stdout); got != want {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}
	})
	forRunners(t, []sandbox.Tier{sandbox.Process}, func(t *testing.T, r runKind, _ sandbox.Tier) {
		sb := d.sandbox(t, sandbox.Process)
		res := run(t, r, sb, d.env, kernelSurface, 30*time.Second)
		if strings.Contains(string(res.Stdout), "io_uring_setup 38") {
			t.Errorf("io_uring refused without a filter: the attempts above prove nothing on this host")
		}
	})
}

// keyringPrelude defines keyctl and add_key through ctypes; a failure is -errno.
const keyringPrelude = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
MARK = b"envfabric-test-key"
def r(v):
    return v if v >= 0 else -ctypes.get_errno()
def keyctl(*a):
    ctypes.set_errno(0)
    return r(libc.syscall(L(250), *[x if isinstance(x, bytes) else L(x) for x in a]))
def add_key(ring, data):
    ctypes.set_errno(0)
    return r(libc.syscall(L(248), b"user", MARK, data, L(len(data)), L(ring)))
`

// Each run has its own session keyring and reaches no keyring of the run user that outlives it:
// not the user or user-session keyring (by special id or by the serial /proc/keys shows), not the
// persistent keyring, not a named session keyring; and a key it left is gone for the next run.
func TestEscapeKeyring(t *testing.T) {
	d := newData(t)
	leave := keyringPrelude + `
print("session", keyctl(0, -3, 0))
print("key", add_key(-3, b"secret"))
print("user", add_key(-4, b"secret"), keyctl(0, -4, 1))
print("user-session", add_key(-5, b"secret"), keyctl(0, -5, 1))
print("persistent", keyctl(22, -1, -3))
print("join named", keyctl(1, b"shared"))
for line in open("/proc/keys"):
    f = line.split()
    if len(f) > 8 and f[8].startswith("_uid"):
        serial = int(f[0], 16)
        print("by serial", f[8], add_key(serial, b"x"), keyctl(11, serial, 0, 0))
`
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		res := run(t, r, sb, d.env, leave, 30*time.Second)
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(res.Stdout)), "\n") {
			k, v, _ := strings.Cut(line, " ")
			if k == "by" {
				if !strings.HasSuffix(v, " -13 -13") {
					t.Errorf("%s: want EACCES both to add and to read", line)
				}
				continue
			}
			got[k] = v
		}
		for k, want := range map[string]string{"user": "-1 -1", "user-session": "-1 -1", "persistent": "-1", "join": "named -1"} {
			if got[k] != want {
				t.Errorf("%s: got %q; want %q (refused)", k, got[k], want)
			}
		}
		session, key := got["session"], got["key"]
		if strings.HasPrefix(session, "-") || strings.HasPrefix(key, "-") || key == "" {
			t.Fatalf("session keyring %q, key %q: want the run's own keyring usable", session, key)
		}
		find := keyringPrelude + `
print("session", keyctl(0, -3, 0))
print("search", keyctl(10, -3, b"user", MARK, 0))
print("read", keyctl(11, ` + key + `, 0, 0) < 0)
`
		res = run(t, r, sb, d.env, find, 30*time.Second)
		out := string(res.Stdout)
		// A warm run shares its interpreter's session keyring (the system-call filter it inherits
		// refuses joining a new one), which the interpreter clears after every run: the next run
		// sees the same keyring, empty.
		if (!r.warm && strings.Contains(out, "session "+session+"\n")) || !strings.Contains(out, "search -126\nread True\n") {
			t.Errorf("a later run: got %q; want another session keyring, no key found (ENOKEY), the old key unreadable", out)
		}
	})
}

// withRunLimits puts sb under whole-run limits, in a cgroup per run.
func withRunLimits(t *testing.T, sb sandbox.Config, l sandbox.RunLimits) sandbox.Config {
	t.Helper()
	g, err := sandbox.FindCgroups(l)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: no cgroups for whole-run limits: %v", err)
		}
		t.Skipf("no cgroups for whole-run limits here: %v", err)
	}
	sb.RunLimits, sb.Cgroups = l, g
	return sb
}

// Every way a run ends has its exit_reason.
func TestExitReasons(t *testing.T) {
	d := newData(t)
	tests := []struct {
		name, code string
		timeout    time.Duration
		want       string
		wantExit   int
	}{
		{"exit 0", `print("ok")`, 30 * time.Second, runner.ExitedNormally, 0},
		{"exit 3", `raise SystemExit(3)`, 30 * time.Second, runner.ExitedNormally, 3},
		{"killed by a signal", `import os, signal; os.kill(os.getpid(), signal.SIGKILL)`, 30 * time.Second, runner.ExitSignal, -1},
		{"timeout", `import time; time.sleep(60)`, time.Second, runner.ExitTimeout, -1},
		// Touched memory: bytes filled with x, not a calloc'd region the kernel never backs.
		{"memory", `b = b"x" * (512 << 20); print(len(b))`, 30 * time.Second, runner.ExitMemory, -1},
	}
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := withRunLimits(t, d.sandbox(t, tier), sandbox.RunLimits{MemoryBytes: 128 << 20, Processes: 64})
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := run(t, r, sb, d.env, tt.code, tt.timeout)
				if res.ExitReason != tt.want || res.ExitCode != tt.wantExit {
					t.Errorf("got exit_reason %q exit %d; want %q %d", res.ExitReason, res.ExitCode, tt.want, tt.wantExit)
				}
			})
		}
	})
}

// The private tmpfs are memory: together they are bounded by the run's memory limit, not only
// each by its size.
func TestEscapeMemoryThroughTmpfs(t *testing.T) {
	d := newData(t)
	sb := withRunLimits(t, d.sandbox(t, sandbox.Namespace), sandbox.RunLimits{MemoryBytes: 128 << 20})
	sb.Limits.FileBytes = 64 << 20 // each tmpfs may hold 64 MiB; four of them 256
	code := `
for d in ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]:
    with open(d + "/fill", "wb") as f:
        for _ in range(60):
            f.write(b"x" * (1 << 20))
            f.flush()
    print("filled", d, flush=True)
print("all filled")
`
	forRunners(t, namespaceOnly, func(t *testing.T, r runKind, _ sandbox.Tier) {
		res := run(t, r, sb, d.env, code, 60*time.Second)
		if strings.Contains(string(res.Stdout), "all filled") {
			t.Errorf("240 MiB of tmpfs filled under a 128 MiB run limit")
		}
		if res.ExitReason != runner.ExitMemory && !strings.Contains(string(res.Stderr), "OSError") {
			t.Errorf("got exit_reason %q, stderr %q; want memory, or a write refused", res.ExitReason, trim(res.Stderr))
		}
	})
}

// Many processes, each under its own address-space limit, are bounded as a whole.
func TestEscapeMemoryThroughProcesses(t *testing.T) {
	d := newData(t)
	sb := withRunLimits(t, d.sandbox(t, sandbox.Namespace), sandbox.RunLimits{MemoryBytes: 192 << 20})
	code := `
import os, time
kids = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        b = b"x" * (48 << 20)
        time.sleep(5)
        os._exit(0)
    kids.append(pid)
print("statuses", sorted(os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids))
`
	forRunners(t, namespaceOnly, func(t *testing.T, r runKind, _ sandbox.Tier) {
		res := run(t, r, sb, d.env, code, 60*time.Second)
		if res.ExitReason != runner.ExitMemory || !strings.Contains(string(res.Stdout), "-9") {
			t.Errorf("got exit_reason %q, stdout %q; want memory, and children killed", res.ExitReason, res.Stdout)
		}
	})
}

// The run's processes are bounded as a whole (pids cgroup), whatever the run user's rlimit.
func TestEscapeManyProcesses(t *testing.T) {
	d := newData(t)
	code := `
import os, time
n = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed", e.errno)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print("children", n)
`
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := withRunLimits(t, d.sandbox(t, tier), sandbox.RunLimits{Processes: 24})
		sb.Limits.Processes = 0 // only the cgroup bounds it
		res := run(t, r, sb, d.env, code, 30*time.Second)
		var n int
		if _, err := fmt.Sscanf(strings.TrimPrefix(string(res.Stdout), "fork failed 11\n"), "children %d", &n); err != nil || n >= 24 {
			t.Errorf("stdout %q: want fork to fail with EAGAIN before 24 processes", res.Stdout)
		}
	})
}
