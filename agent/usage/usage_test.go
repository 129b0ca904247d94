package usage

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/envid"
)

// makeVenv builds a real virtual environment at key's place under base, with the system Python.
func makeVenv(t *testing.T, base string, key envid.Key) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	venv := filepath.Join(key.Dir(base), ".venv")
	if out, err := exec.Command(py, "-m", "venv", "--without-pip", venv).CombinedOutput(); err != nil {
		t.Fatalf("python -m venv: %v\n%s", err, out)
	}
	// Creation reads nothing back through the new interpreter, but make the start state explicit:
	// atime == mtime, nothing used yet.
	cfg := filepath.Join(venv, "pyvenv.cfg")
	fi, _ := os.Stat(cfg)
	os.Chtimes(cfg, fi.ModTime(), fi.ModTime())
	return venv
}

func TestInterpreterUseOutsideTheFabric(t *testing.T) {
	base := t.TempDir()
	used := envid.Key{WorkflowID: "wf", NodeID: "used", VersionID: "v1"}
	idle := envid.Key{WorkflowID: "wf", NodeID: "idle", VersionID: "v1"}
	venv := makeVenv(t, base, used)
	makeVenv(t, base, idle)
	both := []envid.Key{used, idle}

	tr := New(base, slog.New(slog.DiscardHandler))
	if uses, err := tr.CheckStorage(t.Context(), both); err != nil || len(uses) != 0 {
		t.Fatalf("before any run: %v, %v; want no use", uses, err)
	}

	before := time.Now().Add(-time.Second)
	// What a workflow executor does on the host: start the environment's interpreter directly.
	if out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "pass").CombinedOutput(); err != nil {
		t.Fatalf("running the env's python: %v\n%s", err, out)
	}
	uses, err := tr.CheckStorage(t.Context(), both)
	if err != nil {
		t.Fatal(err)
	}
	if len(uses) != 1 || uses[0].Key != used || uses[0].Source != SourceInterpreter || uses[0].At.Before(before) {
		t.Fatalf("after a direct run: %+v; want one interpreter use of %s after %s", uses, used, before)
	}
	if known, _ := tr.Since(time.Time{}); len(known) != 1 || known[0] != uses[0] {
		t.Errorf("the tracker knows %+v; want the use it reported, %+v", known, uses[0])
	}

	// Armed again: a look with no new start reports nothing.
	if again, _ := tr.CheckStorage(t.Context(), both); len(again) != 0 {
		t.Errorf("a look without a new start reported %+v", again)
	}
	// A second start is seen again (the file was re-armed).
	time.Sleep(20 * time.Millisecond)
	exec.Command(filepath.Join(venv, "bin", "python"), "-c", "pass").Run()
	if again, _ := tr.CheckStorage(t.Context(), both); len(again) != 1 || !again[0].At.After(uses[0].At) {
		t.Errorf("a second direct start was not seen: %+v", again)
	}
}

// TestStorageCallsFollowCandidates: the shared storage is asked about the environments named and
// nothing else: a host's periodic scan makes no call against it however many environments it
// holds, and a look at k candidates makes at most two per candidate (stat, and utimes to arm).
func TestStorageCallsFollowCandidates(t *testing.T) {
	base := t.TempDir()
	var keys []envid.Key
	for i := range 30 {
		k := envid.Key{WorkflowID: "wf", NodeID: fmt.Sprintf("n%02d", i), VersionID: "v1"}
		if err := os.MkdirAll(filepath.Join(k.Dir(base), ".venv"), 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(k.Dir(base), ".venv", "pyvenv.cfg")
		if err := os.WriteFile(cfg, []byte("home = /usr/bin\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		if i < 2 {
			os.Chtimes(cfg, time.Now(), old) // started since it was armed
		} else {
			os.Chtimes(cfg, old, old)
		}
		keys = append(keys, k)
	}
	tr := New(base, slog.New(slog.DiscardHandler))
	for range 3 {
		tr.Scan()
	}
	if n := tr.StorageCalls(); n != 0 {
		t.Errorf("three scans of the host made %d calls against the shared storage; want 0", n)
	}
	candidates := []envid.Key{keys[0], keys[1], keys[7], keys[20]}
	uses, err := tr.CheckStorage(t.Context(), candidates)
	if err != nil {
		t.Fatal(err)
	}
	if len(uses) != 2 {
		t.Errorf("uses %+v; want the two started ones", uses)
	}
	// 2 used (stat + arm) and 2 not (stat) of 30 environments.
	if n := tr.StorageCalls(); n != 6 {
		t.Errorf("a look at %d candidates of %d environments made %d calls; want 6", len(candidates), len(keys), n)
	}
}

func TestLiveProcess(t *testing.T) {
	base := t.TempDir()
	key := envid.Key{WorkflowID: "wf", NodeID: "job", VersionID: "v2"}
	venv := makeVenv(t, base, key)
	cmd := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "import time; time.sleep(60)")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	tr := New(base, slog.New(slog.DiscardHandler))
	// Arm first, so that only the process signal can report this use.
	cfg := filepath.Join(venv, "pyvenv.cfg")
	fi, _ := os.Stat(cfg)
	time.Sleep(100 * time.Millisecond) // the interpreter has read pyvenv.cfg by now or soon
	tr.CheckStorage(t.Context(), []envid.Key{key})
	os.Chtimes(cfg, fi.ModTime(), fi.ModTime())

	start := time.Now()
	tr.scanProcesses(start)
	if got := tr.Last(key); !got.Equal(start) {
		t.Errorf("last use %v; want the scan time %v from the live process", got, start)
	}
}

func TestKeyOf(t *testing.T) {
	tr := New("/nas/envs", slog.New(slog.DiscardHandler))
	tests := []struct {
		path string
		ok   bool
	}{
		{"/nas/envs/wf/n/v1/.venv/bin/python", true},
		{"/nas/envs/wf/n/v1/.venv/bin/python3.11", true},
		{"/nas/envs/wf/n/v1/main.py", false},
		{"/nas/envs/../etc/wf/n/v1/.venv/bin/python", false},
		{"/other/wf/n/v1/.venv/bin/python", false},
		{"/nas/envs/.trash-1/n/v1/.venv/bin/python", false},
		{"/nas/envs/.builds/0123456789abcdef0123456789abcdef/.venv/bin/python", false},
		{"/nas/envs/.staging/1-x/.venv/bin/python", false},
	}
	for _, tt := range tests {
		if _, ok := tr.keyOf(tt.path, "/nas/envs/"); ok != tt.ok {
			t.Errorf("keyOf(%q) ok = %v; want %v", tt.path, ok, tt.ok)
		}
	}
}

func TestMeasureCache(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	env := filepath.Join(dir, "env")
	os.MkdirAll(cache, 0o755)
	os.MkdirAll(env, 0o755)
	os.WriteFile(filepath.Join(cache, "shared.so"), make([]byte, 10000), 0o644)
	os.WriteFile(filepath.Join(cache, "alone.py"), make([]byte, 300), 0o644)
	for _, name := range []string{"a.so", "b.so"} {
		if err := os.Link(filepath.Join(cache, "shared.so"), filepath.Join(env, name)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := MeasureCache(t.Context(), cache)
	if err != nil {
		t.Fatal(err)
	}
	if s.Files != 2 || s.SharedBytes != 10000 || s.SavedBytes != 20000 || s.Bytes < 10300 {
		t.Errorf("got %+v; want 2 files, 10000 shared, 20000 saved, at least 10300 on disk", s)
	}
}
