package warm_test

import (
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

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

func nsSandbox(t *testing.T) sandbox.Config {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	sb := sandbox.Config{Tier: sandbox.Namespace, UID: uid, GID: gid, Limits: sandbox.Limits{MemoryBytes: 1 << 30, Processes: 64}}
	if err := sb.Probe(sandbox.Program{}); err != nil {
		t.Skipf("namespace tier unavailable: %v", err)
	}
	return sb
}

func TestSmoke(t *testing.T) {
	v := venv(t)
	sb := nsSandbox(t)
	p := warm.New(warm.Config{Sandbox: sb, MemoryBytes: 1 << 30, WaitFree: time.Second, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	defer p.Close()
	b := warm.Build{ID: "b1", Venv: v, Preload: []string{"json"}}
	if err := p.Prestart(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	codes := []string{`import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print(libc.mq_open(b"/q1", os.O_CREAT | os.O_RDWR, 0o666, None), os.listdir("/dev/mqueue"))`, `import os; print(os.listdir("/dev/mqueue"))`, "pass"}
	for i := 0; i < 3; i++ {
		start := time.Now()
		res, ok, err := p.Run(t.Context(), b, runner.Spec{VenvDir: v, Code: codes[i], Timeout: 10 * time.Second, MaxOutput: 1 << 20, Sandbox: sb})
		t.Logf("%v ok=%v err=%v %+v stdout=%q stderr=%q", time.Since(start), ok, err, res, res.Stdout, res.Stderr)
	}
}
