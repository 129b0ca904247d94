package sandbox

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// The stage program (stage/envfabric-sandbox.c) is what the agent starts for every run: it sets
// up the sandbox from the plan and becomes the program. It is found, in this order, at
// Config.Stage, next to the running executable (make build puts bin/envfabric-sandbox beside
// bin/agent), and, in test binaries only, built once from the source embedded here into a
// directory of the temporary directory named for the source's hash.
const StageName = "envfabric-sandbox"

// The stage program's argv[0]: the agent starts it as a ready stage (ready.go); under the
// probe's name it exits 0 (the default program of Probe).
const (
	readyArg0  = "envfabric-sandbox-ready"
	probeStage = "envfabric-sandbox-probe"
	statusFD   = 3
)

//go:embed stage/envfabric-sandbox.c
var stageSource []byte

// stageCFlags are the flags the stage is compiled with, as stage/build.sh does (which make build
// and the harnesses use): static linking, where the C library allows it, spares every run the
// dynamic loader.
var stageCFlags = []string{"-O2", "-Wall", "-Wextra"}

// ErrNoStage is wrapped when the stage program cannot be found.
var ErrNoStage = errors.New("sandbox stage program not found")

// buildStage compiles the stage program with cc (empty: $CC, or cc) into dir/envfabric-sandbox and
// returns its path.
func buildStage(ctx context.Context, cc, dir string) (string, error) {
	if cc == "" {
		cc = os.Getenv("CC")
	}
	if cc == "" {
		cc = "cc"
	}
	src, err := os.CreateTemp(dir, ".envfabric-sandbox-*.c")
	if err != nil {
		return "", fmt.Errorf("build the sandbox stage: %w", err)
	}
	defer os.Remove(src.Name())
	_, err = src.Write(stageSource)
	if cerr := src.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("build the sandbox stage: %w", err)
	}
	out := filepath.Join(dir, StageName)
	tmp := out + ".tmp" + fmt.Sprint(os.Getpid())
	args := append(append([]string{}, stageCFlags...), "-o", tmp, src.Name())
	if exec.CommandContext(ctx, cc, append(args, "-static")...).Run() != nil {
		if b, err := exec.CommandContext(ctx, cc, args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("build the sandbox stage: %s %v: %w\n%s", cc, args, err, b)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build the sandbox stage: %w", err)
	}
	return out, nil
}

var testStage struct {
	once sync.Once
	path string
	err  error
}

// stageProgram is the stage program's path.
func (c Config) stageProgram() (string, error) {
	if c.Stage != "" {
		if err := executable(c.Stage); err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoStage, err)
		}
		return c.Stage, nil
	}
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), StageName)
		if executable(p) == nil {
			return p, nil
		}
		if !testing.Testing() {
			return "", fmt.Errorf("%w: want %s next to %s (make build makes bin/%s; install it beside the agent)", ErrNoStage, p, self, StageName)
		}
	} else if !testing.Testing() {
		return "", fmt.Errorf("%w: %w", ErrNoStage, err)
	}
	testStage.once.Do(func() { testStage.path, testStage.err = buildTestStage() })
	return testStage.path, testStage.err
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// buildTestStage builds the stage for a test binary once per source version, in a directory of
// the temporary directory that only its owner (this user or root) can write: the stage runs as
// root.
func buildTestStage() (string, error) {
	sum := sha256.Sum256(append(append([]byte{}, stageSource...), fmt.Sprint(stageCFlags)...))
	dir := filepath.Join(os.TempDir(), "envfabric-sandbox-"+hex.EncodeToString(sum[:8]))
	p := filepath.Join(dir, StageName)
	if trusted(dir) && trusted(p) {
		return p, nil
	}
	tmp, err := os.MkdirTemp(os.TempDir(), ".envfabric-sandbox-build-*")
	if err != nil {
		return "", fmt.Errorf("%w: build it for the tests: %w", ErrNoStage, err)
	}
	defer os.RemoveAll(tmp)
	if _, err := buildStage(context.Background(), "", tmp); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoStage, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoStage, err)
	}
	// Another test binary may have won the race: then its copy is used.
	if err := os.Rename(tmp, dir); err != nil && !trusted(dir) {
		return "", fmt.Errorf("%w: %s: %w", ErrNoStage, dir, err)
	}
	if !trusted(p) {
		return "", fmt.Errorf("%w: %s is not owned by this user or root, or writable by others", ErrNoStage, p)
	}
	return p, nil
}

// trusted reports whether p exists, belongs to this user or root, and no one else may write it.
func trusted(p string) bool {
	fi, err := os.Lstat(p)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && (st.Uid == 0 || int(st.Uid) == os.Geteuid()) && fi.Mode().Perm()&0o022 == 0 && fi.Mode()&os.ModeSymlink == 0
}
