package runner_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/envfabric/envfabric/agent/runner"
)

// BenchmarkRunTierDirect is the yardstick of BenchmarkRunTier: the same environment's python
// running the same main.py (`pass`) in a fresh work directory, started directly by the agent
// with the same environment variables and its output read, without any sandbox.
func BenchmarkRunTierDirect(b *testing.B) {
	d := benchData(b)
	venv := filepath.Join(d.env, ".venv")
	python := filepath.Join(venv, "bin", "python")
	for b.Loop() {
		work, err := os.MkdirTemp("", "envfabric-run-*")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, "main.py"), []byte("pass"), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(python, "main.py")
		cmd.Dir = work
		cmd.Env = runner.Env(venv, work)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("python: %v %s", err, out)
		}
		os.RemoveAll(work)
	}
}
