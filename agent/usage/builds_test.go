package usage

import (
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/agent/builds"
	"github.com/envfabric/envfabric/shared/envid"
)

// TestUseOfEnvironmentsSharingABuild: two environments linked to one build are told apart: a
// start of one's .venv/bin/python is that environment's use only, and a start of the build's
// interpreter (a run through the API) is neither's.
func TestUseOfEnvironmentsSharingABuild(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	base := t.TempDir()
	id := strings.Repeat("d", 32)
	store := builds.New(base, nil, slog.New(slog.DiscardHandler))
	if out, err := exec.Command(py, "-m", "venv", "--without-pip", store.Venv(id)).CombinedOutput(); err != nil {
		t.Fatalf("python -m venv: %v\n%s", err, out)
	}
	m, _ := json.Marshal(builds.Marker{ID: id})
	if err := os.WriteFile(filepath.Join(store.Dir(id), builds.MarkerFile), m, 0o644); err != nil {
		t.Fatal(err)
	}
	used := envid.Key{WorkflowID: "wf", NodeID: "used", VersionID: "v1"}
	idle := envid.Key{WorkflowID: "wf", NodeID: "idle", VersionID: "v1"}
	for _, k := range []envid.Key{used, idle} {
		if err := os.MkdirAll(k.Dir(base), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Link(k.Dir(base), id); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(k.Dir(base), ".venv", "pyvenv.cfg")
		fi, _ := os.Stat(cfg)
		os.Chtimes(cfg, fi.ModTime(), fi.ModTime())
	}
	// Things beside the environments that hold virtual environments or look like them.
	for _, d := range []string{".staging/1-x/.venv", ".locks", ".trash-1-abc/n/v1/.venv"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
	}
	// A run through the API starts the build's interpreter itself: no environment's use.
	exec.Command(filepath.Join(store.Venv(id), "bin", "python"), "-c", "pass").Run()

	tr := New(base, slog.New(slog.DiscardHandler))
	both := []envid.Key{used, idle}
	if _, err := tr.CheckStorage(t.Context(), both); err != nil {
		t.Fatal(err)
	}
	if uses, _ := tr.Since(time.Time{}); len(uses) != 0 {
		t.Fatalf("before any start of an environment's interpreter: %+v; want none", uses)
	}
	out, err := exec.Command(filepath.Join(used.Dir(base), ".venv", "bin", "python"), "-c", "import sys; print(sys.prefix)").Output()
	if err != nil || strings.TrimSpace(string(out)) != filepath.Join(used.Dir(base), ".venv") {
		t.Fatalf("the environment's python: %q, %v; want sys.prefix its own .venv", out, err)
	}
	checked, err := tr.CheckStorage(t.Context(), both)
	if err != nil {
		t.Fatal(err)
	}
	uses, _ := tr.Since(time.Time{})
	if len(checked) != 1 || len(uses) != 1 || uses[0].Key != used || uses[0].Source != SourceInterpreter {
		t.Errorf("after starting one environment's python: checked %+v, known %+v; want one interpreter use of %s", checked, uses, used)
	}
}

// TestScriptOfAnEnvironment: a console script of an environment's bin/ runs the build's
// interpreter (its shebang) with the script's path as argv[1]: the process is that environment's
// use. A run of the build's interpreter itself (the API's) is no environment's.
func TestScriptOfAnEnvironment(t *testing.T) {
	base := "/nas/envs"
	proc := t.TempDir()
	build := base + "/.builds/" + strings.Repeat("e", 32) + "/.venv/bin/python"
	for pid, argv := range map[string][]string{
		"101": {build, base + "/wf/n/v1/.venv/bin/tool", "--flag"},
		"102": {build, "main.py"},
	} {
		os.MkdirAll(filepath.Join(proc, pid), 0o755)
		if err := os.WriteFile(filepath.Join(proc, pid, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tr := New(base, slog.New(slog.DiscardHandler))
	tr.proc = proc
	now := time.Now()
	tr.scanProcesses(now)
	uses, _ := tr.Since(time.Time{})
	want := envid.Key{WorkflowID: "wf", NodeID: "n", VersionID: "v1"}
	if len(uses) != 1 || uses[0].Key != want || uses[0].Source != SourceProcess {
		t.Errorf("uses: %+v; want one process use of %s", uses, want)
	}
}
