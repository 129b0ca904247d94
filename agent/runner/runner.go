// Package runner runs user code in an environment's interpreter, isolated from the agent: a fresh
// working directory, an environment holding nothing of the agent's, the sandbox tier the operator
// chose (agent/sandbox: limits, run user, namespaces), everything it started killed on timeout,
// and capped output.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Spec says what to run.
type Spec struct {
	// VenvDir is the environment's .venv; its bin/python runs the code.
	VenvDir string
	// Code is written to main.py and run as `python main.py`.
	Code string
	// Timeout bounds the run (it must be positive); the whole process group is killed when it
	// expires.
	Timeout time.Duration
	// MaxOutput caps each of stdout and stderr in bytes.
	MaxOutput int64
	// Sandbox isolates the run. The zero value is the process tier without resource limits
	// (core dumps still off); the agent always sets its configured tier.
	Sandbox sandbox.Config
}

// Result is what the code did. ExitCode is -1 when the process was killed by a signal.
type Result struct {
	Stdout, Stderr                   []byte
	StdoutTruncated, StderrTruncated bool
	ExitCode                         int
	Duration                         time.Duration
	TimedOut                         bool
	// ExitReason says how the run ended: ExitedNormally, ExitTimeout, ExitMemory or ExitSignal.
	ExitReason string
}

// Exit reasons, as the RunResponse's exit_reason carries them.
const (
	// ExitedNormally: the program exited by itself, with ExitCode.
	ExitedNormally = "exited"
	// ExitTimeout: the timeout killed the run.
	ExitTimeout = "timeout"
	// ExitMemory: the run reached its whole-run memory limit, and the kernel killed a process of
	// it (the program itself, or a child it may have outlived).
	ExitMemory = "memory"
	// ExitSignal: a signal ended the program (its own doing, a per-process rlimit, a crash).
	ExitSignal = "signal"
)

// exitReason ranks what ended the run: the timeout first (it is what stopped the run, whatever
// it was doing), then memory, then the program's own end.
func exitReason(timedOut bool, cmd *sandbox.Cmd) string {
	switch {
	case timedOut:
		return ExitTimeout
	case cmd.MemoryKilled():
		return ExitMemory
	case cmd.ExitCode() == -1:
		return ExitSignal
	}
	return ExitedNormally
}

// drainGrace bounds how long output pipes are read after the process group was killed: a process
// that left the group (setsid) could otherwise hold them open forever.
const drainGrace = 2 * time.Second

// Run runs spec.Code. A timeout is a result (TimedOut), not an error; cancellation of ctx kills
// the code and returns ctx's error. A missing interpreter is errcode.EnvNotReady.
func Run(ctx context.Context, spec Spec) (Result, error) {
	python := filepath.Join(spec.VenvDir, "bin", "python")
	if _, err := os.Stat(python); err != nil {
		return Result{}, errcode.Wrap(errcode.EnvNotReady, err,
			"the environment has no usable .venv/bin/python on this host; POST .../sync to build it")
	}
	work, err := os.MkdirTemp("", "envfabric-run-*")
	if err != nil {
		return Result{}, fmt.Errorf("make work dir: %w", err)
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "main.py"), []byte(spec.Code), 0o600); err != nil {
		return Result{}, fmt.Errorf("write main.py: %w", err)
	}
	sb := spec.Sandbox
	if sb.Tier.DropsPrivileges() {
		// The work directory is the only place the run user may write (besides a private /tmp).
		for _, p := range []string{work, filepath.Join(work, "main.py")} {
			if err := os.Chown(p, sb.UID, sb.GID); err != nil {
				return Result{}, fmt.Errorf("hand the work dir to the run user: %w", err)
			}
		}
	}

	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return Result{}, fmt.Errorf("pipe: %w", err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutR.Close()
		stdoutW.Close()
		return Result{}, fmt.Errorf("pipe: %w", err)
	}
	defer stdoutR.Close()
	defer stderrR.Close()

	env := Env(spec.VenvDir, work)
	cmd, err := sb.Command(sandbox.Program{
		Path:     python,
		Args:     []string{python, "main.py"},
		Env:      env,
		Dir:      work,
		ReadOnly: readOnlyDirs(spec.VenvDir, sb),
		Writable: []string{work},
	})
	if err != nil {
		stdoutW.Close()
		stderrW.Close()
		return Result{}, err
	}
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = stdoutW
	cmd.Stderr = stderrW

	start := time.Now()
	err = cmd.Start()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		return Result{}, err
	}
	// The sandbox leads its own session and group; with a PID namespace it is also its init,
	// whose death takes every process in the namespace with it.
	pgid := cmd.Process.Pid

	stdout, stderr := &capped{max: spec.MaxOutput}, &capped{max: spec.MaxOutput}
	var drained sync.WaitGroup
	drained.Go(func() { _, _ = io.Copy(stdout, stdoutR) })
	drained.Go(func() { _, _ = io.Copy(stderr, stderrR) })

	runCtx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	exited := make(chan struct{})
	var killed sync.WaitGroup
	var timedOut bool
	killed.Go(func() {
		select {
		case <-runCtx.Done():
			timedOut = true
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		case <-exited:
		}
	})
	waitErr := cmd.Wait()
	close(exited)
	killed.Wait()
	// Whatever the code left running in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)

	done := make(chan struct{})
	go func() { drained.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainGrace):
		stdoutR.Close()
		stderrR.Close()
		<-done
	}

	res := Result{
		Stdout:          stdout.buf,
		Stderr:          stderr.buf,
		StdoutTruncated: stdout.truncated,
		StderrTruncated: stderr.truncated,
		ExitCode:        cmd.ExitCode(),
		Duration:        time.Since(start),
	}
	if err := cmd.SetupError(); err != nil && !timedOut && ctx.Err() == nil {
		if errors.Is(err, sandbox.ErrNotExecutable) {
			return res, errcode.Wrap(errcode.EnvNotReady, err,
				"the environment's interpreter cannot be executed by the sandbox's run user: "+err.Error())
		}
		return res, fmt.Errorf("run sandbox: %w", err)
	}
	var xe *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &xe) {
		return res, fmt.Errorf("wait for python: %w", waitErr)
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("run cancelled: %w", ctx.Err())
	}
	res.TimedOut = timedOut
	res.ExitReason = exitReason(timedOut, cmd)
	return res, nil
}

// readOnlyDirs is what the namespace tier mounts back read-only: the project directory (the
// .venv and its pyproject.toml and uv.lock), and the base interpreter's prefix when it lives in a
// hidden directory (a Python installed on the shared storage), found from pyvenv.cfg's home.
func readOnlyDirs(venv string, sb sandbox.Config) []string {
	dirs := []string{filepath.Dir(venv)}
	b, err := os.ReadFile(filepath.Join(venv, "pyvenv.cfg"))
	if err != nil {
		return dirs
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) != "home" {
			continue
		}
		if prefix := filepath.Dir(filepath.Clean(strings.TrimSpace(v))); filepath.IsAbs(prefix) && sb.Hidden(prefix) {
			dirs = append(dirs, prefix)
		}
	}
	return dirs
}

// capped keeps the first max bytes written and discards, but accepts, the rest.
type capped struct {
	max       int64
	buf       []byte
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := c.max - int64(len(c.buf))
	switch {
	case room <= 0:
		c.truncated = c.truncated || len(p) > 0
	case int64(len(p)) > room:
		c.buf = append(c.buf, p[:room]...)
		c.truncated = true
	default:
		c.buf = append(c.buf, p...)
	}
	return len(p), nil
}
