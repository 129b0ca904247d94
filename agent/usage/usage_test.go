package usage

import (
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
	os.MkdirAll(filepath.Join(base, ".trash-1-x", "n", "v1"), 0o755) // not an environment

	tr := New(base, slog.New(slog.DiscardHandler))
	if err := tr.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	if uses, _ := tr.Since(time.Time{}); len(uses) != 0 {
		t.Fatalf("before any run: %v; want no use", uses)
	}

	before := time.Now().Add(-time.Second)
	// What a workflow executor does on the host: start the environment's interpreter directly.
	if out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "pass").CombinedOutput(); err != nil {
		t.Fatalf("running the env's python: %v\n%s", err, out)
	}
	if err := tr.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	uses, scanned := tr.Since(time.Time{})
	if len(uses) != 1 || uses[0].Key != used || uses[0].Source != SourceInterpreter || uses[0].At.Before(before) {
		t.Fatalf("after a direct run: %+v; want one interpreter use of %s after %s", uses, used, before)
	}
	if scanned.IsZero() {
		t.Error("scan time not recorded")
	}
	first := uses[0].At

	// Armed again: a scan with no new start reports nothing new.
	tr.Scan(t.Context())
	if again, _ := tr.Since(first); len(again) != 0 {
		t.Errorf("a scan without a new start reported %+v", again)
	}
	// A second start is seen again (the file was re-armed).
	time.Sleep(20 * time.Millisecond)
	exec.Command(filepath.Join(venv, "bin", "python"), "-c", "pass").Run()
	tr.Scan(t.Context())
	if again, _ := tr.Since(first); len(again) != 1 {
		t.Errorf("a second direct start was not seen: %+v", again)
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
	tr.scanInterpreters(t.Context())
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
