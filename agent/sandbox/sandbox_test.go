package sandbox_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envfabric/envfabric/agent/sandbox"
)

func nobody(t *testing.T) (int, int) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// The strongest tier the machine allows is logged, and must be the namespace tier in CI, which
// runs on the same kind of machine as production.
func TestTierAvailable(t *testing.T) {
	uid, gid := nobody(t)
	var strongest sandbox.Tier
	for _, tier := range sandbox.Tiers {
		cfg := sandbox.Config{Tier: tier, UID: uid, GID: gid, Hide: []string{t.TempDir()}}
		if err := cfg.Probe(sandbox.Program{}); err != nil {
			t.Logf("sandbox tier %s: unavailable: %v", tier, err)
			continue
		}
		t.Logf("sandbox tier %s: available: %s", tier, cfg.Describe())
		if strongest == "" {
			strongest = tier
		}
	}
	t.Logf("STRONGEST SANDBOX TIER ON THIS MACHINE: %s", strongest)
	t.Logf("SYSCALL FILTER (user and namespace tiers): %s", sandbox.FilterSummary())
	g, err := sandbox.FindCgroups(sandbox.RunLimits{MemoryBytes: 1 << 30, Processes: 64})
	if err != nil {
		t.Logf("WHOLE-RUN CGROUP: none: %v", err)
	} else {
		t.Logf("WHOLE-RUN CGROUP: %s (memory and process count bound per run)", g.Describe())
	}
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: the default whole-run limits need cgroups: %v", err)
	}
	if strongest != sandbox.Namespace && os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: the namespace tier must be available (got %q)", strongest)
	}
}

func TestNamespaceView(t *testing.T) {
	uid, gid := nobody(t)
	root := t.TempDir()
	hide := filepath.Join(root, "data")
	env := filepath.Join(hide, "envs", "a")
	other := filepath.Join(hide, "envs", "b")
	for _, d := range []string{env, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := sandbox.Config{Tier: sandbox.Namespace, UID: uid, GID: gid, Hide: []string{hide}}
	if err := cfg.Probe(sandbox.Program{}); err != nil {
		t.Skipf("namespace tier unavailable: %v", err)
	}
	script := `id -u; cat ` + env + `/f; echo; cat ` + other + `/f 2>&1; ls ` + hide + `/envs; touch ` + env + `/g 2>&1; echo $$`
	cmd, out := runSh(t, cfg, script, env)
	t.Logf("exit %d output:\n%s", cmd.ExitCode(), out)
	lines := strings.Split(out, "\n")
	if lines[0] != strconv.Itoa(uid) {
		t.Errorf("uid: got %q; want %d", lines[0], uid)
	}
}

func TestSearchablePath(t *testing.T) {
	uid, gid := nobody(t)
	root := t.TempDir()
	open := filepath.Join(root, "open", "bin")
	closed := filepath.Join(root, "closed", "bin")
	for _, d := range []string{open, closed} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Dir(closed), 0o700); err != nil {
		t.Fatal(err)
	}
	kept, dropped := sandbox.SearchablePath(open+":"+closed+":/usr/bin:"+filepath.Join(root, "missing"), uid, gid)
	if kept != open+":/usr/bin" {
		t.Errorf("kept: got %q; want %q", kept, open+":/usr/bin")
	}
	if len(dropped) != 2 || dropped[0] != closed {
		t.Errorf("dropped: got %q; want %q and the missing one", dropped, closed)
	}
}

// Code keeps no capability and cannot gain one (no_new_privs), in every tier, and has no core
// dumps.
func TestNoPrivileges(t *testing.T) {
	uid, gid := nobody(t)
	for _, tier := range sandbox.Tiers {
		t.Run(string(tier), func(t *testing.T) {
			cfg := sandbox.Config{Tier: tier, UID: uid, GID: gid}
			if err := cfg.Probe(sandbox.Program{}); err != nil {
				t.Skipf("tier unavailable: %v", err)
			}
			_, out := runSh(t, cfg, "grep -E '^(CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status; ulimit -c")
			got := strings.Join(strings.Fields(out), " ")
			want := "NoNewPrivs: 1 0"
			if tier.DropsPrivileges() {
				want = "CapPrm: 0000000000000000 CapEff: 0000000000000000 CapAmb: 0000000000000000 NoNewPrivs: 1 0"
			}
			if !strings.HasSuffix(got, want) {
				t.Errorf("got %q; want it to end %q", got, want)
			}
		})
	}
}

// An unprivileged agent (process tier) still gets a PID namespace where the kernel allows user
// namespaces, so a setsid grandchild dies with the run. The test runs itself again as nobody.
func TestProcessTierPIDNamespaceUnprivileged(t *testing.T) {
	marker := "4" + strconv.Itoa(1000+os.Getpid()%9000)
	if os.Getenv("SANDBOX_TEST_UNPRIVILEGED") == "1" {
		cfg := sandbox.Config{Tier: sandbox.Process, PIDNamespace: true}
		if err := cfg.Probe(sandbox.Program{}); err != nil {
			fmt.Println("RESULT unavailable:", err)
			return
		}
		cmd, err := cfg.Command(sandbox.Program{Path: "/bin/sh", Args: []string{"sh", "-c", "setsid sleep " + os.Getenv("SANDBOX_TEST_MARKER") + " & echo $$"},
			Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
		if err != nil {
			t.Fatal(err)
		}
		// A file, not a pipe: a surviving sleeper must not keep Wait waiting for EOF.
		out, err := os.CreateTemp("", "out-*")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(out.Name())
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		b, _ := os.ReadFile(out.Name())
		fmt.Printf("RESULT ran: setup=%v exit=%d pid=%s\n", cmd.SetupError(), cmd.ExitCode(), strings.TrimSpace(string(b)))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run itself as nobody")
	}
	uid, gid := nobody(t)
	cmd := exec.Command("/proc/self/exe", "-test.run=^TestProcessTierPIDNamespaceUnprivileged$", "-test.count=1", "-test.v")
	cmd.Env = []string{"SANDBOX_TEST_UNPRIVILEGED=1", "SANDBOX_TEST_MARKER=" + marker, "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody (%v):\n%s", err, out)
	if strings.Contains(string(out), "RESULT unavailable") {
		t.Skip("no unprivileged user namespaces on this kernel")
	}
	if !strings.Contains(string(out), "RESULT ran: setup=<nil> exit=0") {
		t.Fatalf("the run did not succeed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := exec.Command("pgrep", "-f", "sleep "+marker).Output()
		if len(bytes.TrimSpace(b)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			t.Fatalf("the setsid sleeper survived: pids %s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The address-space limit also binds the exec stage, a Go process with a large address space:
// nothing may allocate between setting it and execve, or the Go runtime dies of "out of memory"
// (the program then never starts). A tight limit makes any such allocation fatal at once.
func TestMemoryLimitLeavesExecStageAlive(t *testing.T) {
	uid, gid := nobody(t)
	for _, tier := range sandbox.Tiers {
		t.Run(string(tier), func(t *testing.T) {
			cfg := sandbox.Config{Tier: tier, UID: uid, GID: gid, Limits: sandbox.Limits{MemoryBytes: 64 << 20}}
			if err := cfg.Probe(sandbox.Program{}); err != nil && !strings.Contains(err.Error(), "status") {
				t.Skipf("tier unavailable: %v", err)
			}
			// A 100 KiB argument (the plan travels in one variable, at most 128 KiB): building
			// execve's argv then needs a fresh large span.
			args := []string{"true", strings.Repeat("x", 100<<10)}
			for range 5 {
				if err := cfg.Probe(sandbox.Program{Path: "/bin/true", Args: args}); err != nil {
					t.Fatalf("/bin/true under a 64 MiB address-space limit: %v", err)
				}
			}
		})
	}
}

// When the run user is at its process limit (other runs), the run fails with a message saying so.
func TestProcessLimitReached(t *testing.T) {
	uid, gid := nobody(t)
	cfg := sandbox.Config{Tier: sandbox.User, UID: uid, GID: gid}
	if err := cfg.Probe(sandbox.Program{}); err != nil {
		t.Skipf("user tier unavailable: %v", err)
	}
	other, err := cfg.Command(sandbox.Program{Path: "/bin/sleep", Args: []string{"sleep", "60"}, Env: []string{"PATH=/bin"}, Dir: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-other.Process.Pid, syscall.SIGKILL)
		_ = other.Wait()
	}()
	cfg.Limits.Processes = 1
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cfg.Probe(sandbox.Program{Path: "/bin/true", Args: []string{"true"}})
		if err != nil && strings.Contains(err.Error(), "already has its process limit") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %v; want the process limit named", err)
		}
		time.Sleep(20 * time.Millisecond) // until the sleeper runs as the run user
	}
}

// runSh runs a shell script in the sandbox cfg describes, with readOnly bound read-only, and
// returns the finished command and its combined output; a sandbox that could not be set up fails
// the test.
func runSh(t *testing.T, cfg sandbox.Config, script string, readOnly ...string) (*sandbox.Cmd, string) {
	t.Helper()
	cmd, err := cfg.Command(sandbox.Program{Path: "/bin/sh", Args: []string{"sh", "-c", script},
		Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/", ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := cmd.SetupError(); err != nil {
		t.Fatal(err)
	}
	return cmd, out.String()
}
