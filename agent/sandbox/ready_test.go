package sandbox

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitReady waits until g has a ready stage, as the first runs after FindCgroups find it.
func waitReady(t *testing.T, g *Cgroups) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.pool.mu.Lock()
		n := len(g.pool.ready)
		g.pool.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no ready stage after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Runs through ready stages are each in a fresh cgroup of their own with the whole-run limits in
// force, in the namespaces of their tier, with what they print read as usual; the cgroups go after
// the runs, and Close leaves neither a stage nor a cgroup behind.
func TestReadyStages(t *testing.T) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	limits := RunLimits{MemoryBytes: 96 << 20, Processes: 17}
	g, err := FindCgroups(limits)
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	defer g.Close()
	for _, tier := range Tiers {
		t.Run(string(tier), func(t *testing.T) {
			cfg := Config{Tier: tier, UID: uid, GID: gid, RunLimits: limits, Cgroups: g, Hide: []string{t.TempDir()}}
			if err := cfg.Probe(Program{}); err != nil {
				t.Skipf("tier unavailable: %v", err)
			}
			seen := map[string]bool{}
			for i := range 3 {
				waitReady(t, g)
				out, err := os.CreateTemp(t.TempDir(), "out")
				if err != nil {
					t.Fatal(err)
				}
				script := `grep -E '^[0-9]+:(memory|pids):' /proc/self/cgroup; echo pid $$; sleep 30 & setsid sleep 30 & exit 7`
				cmd, err := cfg.Command(Program{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
				if err != nil {
					t.Fatal(err)
				}
				cmd.Stdout, cmd.Stderr = out, out
				g.pool.mu.Lock()
				waiting := map[*runCgroup]bool{}
				for _, r := range g.pool.ready {
					waiting[r.rc] = true
				}
				g.pool.mu.Unlock()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				rc := cmd.cgroup
				if rc == nil || !waiting[rc] {
					t.Fatalf("run %d did not go to a ready stage waiting in its cgroup", i)
				}
				b, err := os.ReadFile(filepath.Join(rc.pidsDir(), "pids.max"))
				if err != nil || strings.TrimSpace(string(b)) != "17" {
					t.Errorf("pids.max: got %q (%v); want 17", b, err)
				}
				_ = cmd.Wait()
				if err := cmd.SetupError(); err != nil {
					t.Fatal(err)
				}
				if code := cmd.ExitCode(); code != 7 {
					t.Errorf("exit code: got %d; want 7", code)
				}
				b, _ = os.ReadFile(out.Name())
				text := string(b)
				name := filepath.Base(rc.dirs[0])
				if strings.Count(text, name) != 2 {
					t.Errorf("run %d: got cgroups\n%s\nwant memory and pids in %s", i, text, name)
				}
				if seen[name] {
					t.Errorf("cgroup %s served two runs", name)
				}
				seen[name] = true
				if tier == Namespace && !strings.Contains(text, "pid 2\n") {
					t.Errorf("got %q; want the program to be pid 2 of its own PID namespace", text)
				}
				// The program's children, the setsid one too, die with a PID namespace's run;
				// without one, the cgroup's removal kills them.
				deadline := time.Now().Add(10 * time.Second)
				for _, d := range rc.dirs {
					for {
						if _, err := os.Stat(d); os.IsNotExist(err) {
							break
						}
						if time.Now().After(deadline) {
							b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
							t.Fatalf("cgroup %s still there after the run (processes %q)", d, b)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}
		})
	}
	g.pool.mu.Lock()
	var ready []*readyStage
	ready = append(ready, g.pool.ready...)
	g.pool.mu.Unlock()
	g.Close()
	for _, r := range ready {
		if r.cmd.ProcessState == nil {
			t.Errorf("ready stage %d not reaped after Close", r.cmd.Process.Pid)
		}
		for _, d := range r.rc.dirs {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("cgroup %s still there after Close", d)
			}
		}
	}
	if len(ready) == 0 {
		t.Error("no ready stage waited before Close")
	}
}
