package sandbox_test

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
		t.Logf("sandbox tier %s: available", tier)
		if strongest == "" {
			strongest = tier
		}
	}
	t.Logf("STRONGEST SANDBOX TIER ON THIS MACHINE: %s", strongest)
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
	cmd, err := cfg.Command(sandbox.Program{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/", ReadOnly: []string{env}})
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
	t.Logf("exit %d output:\n%s", cmd.ExitCode(), out.String())
	lines := strings.Split(out.String(), "\n")
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
			cmd, err := cfg.Command(sandbox.Program{Path: "/bin/sh", Args: []string{"sh", "-c", "grep -E '^(CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status; ulimit -c"},
				Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
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
			got := strings.Join(strings.Fields(out.String()), " ")
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
