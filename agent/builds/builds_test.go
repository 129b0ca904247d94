package builds

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/agent/uv"
)

// TestIdentity: every part of the identity changes the id; equal identities give equal ids.
func TestIdentity(t *testing.T) {
	base := Identity{Lock: "version = 1\n", PythonPath: "/usr/bin/python3.11", PythonFullVersion: "3.11.7",
		Settings: uv.InstallSettings{LinkMode: "hardlink"}}
	if !ValidID(base.ID()) || base.ID() != base.ID() {
		t.Fatalf("id %q: want 32 stable hex digits", base.ID())
	}
	variants := map[string]func(*Identity){
		"lock":             func(i *Identity) { i.Lock += " " },
		"python path":      func(i *Identity) { i.PythonPath = "/opt/python3.11" },
		"python version":   func(i *Identity) { i.PythonFullVersion = "3.11.8" },
		"link mode":        func(i *Identity) { i.Settings.LinkMode = "copy" },
		"wheels only":      func(i *Identity) { i.Settings.NoBuild = true },
		"compile bytecode": func(i *Identity) { i.Settings.CompileBytecode = "1" },
		// Length prefixes: moving a byte from one field to the next is another identity.
		"field boundary": func(i *Identity) { i.Lock, i.PythonPath = "version = 1\n/", "usr/bin/python3.11" },
	}
	seen := map[string]string{base.ID(): "base"}
	for name, change := range variants {
		v := base
		change(&v)
		if prev, dup := seen[v.ID()]; dup {
			t.Errorf("%s: same id as %s", name, prev)
		}
		seen[v.ID()] = name
	}
	for _, bad := range []string{"", "../../etc", strings.Repeat("A", 32), strings.Repeat("0", 31), strings.Repeat("0", 33)} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

// fakeBuild lays out a complete build by hand: one distribution whose RECORD lists a module, a
// script in bin/ (../../../bin/tool), a file without size (written after install) and itself.
func fakeBuild(t *testing.T, s *Store, id string) (sitePackages string) {
	t.Helper()
	sp := filepath.Join(s.Venv(id), "lib", "python3.11", "site-packages")
	files := map[string]string{
		filepath.Join(sp, "pkg", "__init__.py"):  "x = 1\n",
		filepath.Join(s.Venv(id), "bin", "tool"): "#!/bin/sh\n",
		filepath.Join(sp, "pkg-1.0.dist-info", "RECORD"): "pkg/__init__.py,sha256=abc,6\n" +
			"\"../../../bin/tool\",sha256=def,10\n" +
			"pkg/__pycache__/__init__.cpython-311.pyc,,\n" +
			"pkg-1.0.dist-info/RECORD,,\n",
		filepath.Join(s.Venv(id), "pyvenv.cfg"): "home = /usr/bin\n",
	}
	for p, body := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := json.Marshal(Marker{ID: id, Packages: []Package{{Name: "pkg", Version: "1.0"}}, CompletedUnixMs: 1})
	if err := os.WriteFile(filepath.Join(s.Dir(id), MarkerFile), m, 0o644); err != nil {
		t.Fatal(err)
	}
	return sp
}

func TestVerifyRecord(t *testing.T) {
	s := New(t.TempDir(), nil, slog.New(slog.DiscardHandler))
	id := strings.Repeat("ab", 16)
	sp := fakeBuild(t, s, id)
	c, err := s.Verify(t.Context(), id)
	if err != nil || !c.Complete || !c.Intact || c.FilesChecked != 2 || c.BytesChecked != 16 {
		t.Fatalf("intact build: %+v, %v; want 2 files of 16 bytes checked, intact", c, err)
	}
	if err := os.Remove(filepath.Join(s.Venv(id), "bin", "tool")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sp, "pkg", "__init__.py"), []byte("x = 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = s.Verify(t.Context(), id)
	if err != nil || c.Intact || len(c.Damaged) != 1 {
		t.Fatalf("damaged build: %+v, %v", c, err)
	}
	d := c.Damaged[0]
	if d.Name != "pkg" || d.Version != "1.0" || strings.Join(d.Missing, ",") != "../../../bin/tool" || strings.Join(d.WrongSize, ",") != "pkg/__init__.py" {
		t.Errorf("damage: %+v", d)
	}
	// A whole distribution gone (its dist-info too) is damage of the one the marker lists.
	if err := os.RemoveAll(filepath.Join(sp, "pkg-1.0.dist-info")); err != nil {
		t.Fatal(err)
	}
	if c, _ = s.Verify(t.Context(), id); c.Intact || len(c.Damaged) != 1 || c.Damaged[0].Name != "pkg" {
		t.Errorf("distribution gone: %+v", c)
	}
	// A half build is reported incomplete, not intact.
	if err := os.Remove(filepath.Join(s.Dir(id), MarkerFile)); err != nil {
		t.Fatal(err)
	}
	if c, _ = s.Verify(t.Context(), id); c.Complete || c.Intact {
		t.Errorf("half build: %+v", c)
	}
}

// TestLink: an environment's .venv points at its build through relative links, switches by
// replacing the build link, and is rebuilt whole when the build's pyvenv.cfg differs.
func TestLink(t *testing.T) {
	base := t.TempDir()
	s := New(base, nil, slog.New(slog.DiscardHandler))
	a, b := strings.Repeat("a", 32), strings.Repeat("b", 32)
	fakeBuild(t, s, a)
	fakeBuild(t, s, b)
	envDir := filepath.Join(base, "wf", "node", "v1")
	if err := os.MkdirAll(envDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Link(envDir, a); err != nil || !changed {
		t.Fatalf("first link: %v, %v", changed, err)
	}
	if target, _ := os.Readlink(filepath.Join(envDir, ".venv", "build")); target != "../../../../.builds/"+a+"/.venv" {
		t.Errorf("build link: %q", target)
	}
	if id, ok := LinkedBuild(envDir); !ok || id != a {
		t.Errorf("linked build: %q %v", id, ok)
	}
	if _, err := os.Stat(filepath.Join(envDir, ".venv", "bin", "tool")); err != nil {
		t.Errorf("bin through the link: %v", err)
	}
	cfg := filepath.Join(envDir, ".venv", "pyvenv.cfg")
	before, _ := os.Stat(cfg)
	if changed, err := s.Link(envDir, a); err != nil || changed {
		t.Errorf("same link again: %v, %v; want unchanged", changed, err)
	}
	if changed, err := s.Link(envDir, b); err != nil || !changed {
		t.Fatalf("switch: %v, %v", changed, err)
	}
	if id, _ := LinkedBuild(envDir); id != b {
		t.Errorf("after the switch: %q", id)
	}
	if after, _ := os.Stat(cfg); !os.SameFile(before, after) {
		t.Errorf("the switch replaced pyvenv.cfg; want the environment's own file kept (its access time tells its use)")
	}
	// Another interpreter: the whole .venv is exchanged.
	if err := os.WriteFile(filepath.Join(s.Venv(a), "pyvenv.cfg"), []byte("home = /opt/bin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Link(envDir, a); err != nil || !changed {
		t.Fatalf("switch to another interpreter: %v, %v", changed, err)
	}
	if got, _ := os.ReadFile(cfg); string(got) != "home = /opt/bin\n" {
		t.Errorf("pyvenv.cfg: %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(envDir, ".venv.tmp-*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	c := strings.Repeat("c", 32)
	if _, err := s.Link(envDir, c); err == nil {
		t.Errorf("link to a build that does not exist: no error")
	}
}
