// Package fabricbin builds the fabric's two programs, and the command-line client, from the
// repository, for the harnesses that run them as real processes: the end-to-end tests, the chaos
// harness and the benchmarks.
package fabricbin

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// Binaries are the built programs.
type Binaries struct {
	ControlPlane string
	Agent        string
	Envfabric    string // the command-line client
}

// Build builds the programs of the repository at root into dir, in one go build.
func Build(ctx context.Context, root, dir string) (Binaries, error) {
	b := Binaries{ControlPlane: filepath.Join(dir, "controlplane"), Agent: filepath.Join(dir, "agent"),
		Envfabric: filepath.Join(dir, "envfabric")}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./controlplane/cmd/controlplane", "./agent/cmd/agent",
		"./client/cmd/envfabric")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return b, fmt.Errorf("go build: %w\n%s", err, out)
	}
	// The agent finds its run sandbox's stage program next to itself.
	cmd = exec.CommandContext(ctx, "bash", "agent/sandbox/stage/build.sh", filepath.Join(dir, "envfabric-sandbox"))
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return b, fmt.Errorf("build the sandbox stage: %w\n%s", err, out)
	}
	return b, nil
}
