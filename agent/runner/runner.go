// Package runner runs user code in an environment's interpreter, isolated from the agent: a fresh
// working directory, an environment holding nothing of the agent's, its own process group killed
// as a whole on timeout, and capped output.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

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
}

// Result is what the code did. ExitCode is -1 when the process was killed by a signal.
type Result struct {
	Stdout, Stderr                   []byte
	StdoutTruncated, StderrTruncated bool
	ExitCode                         int
	Duration                         time.Duration
	TimedOut                         bool
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

	cmd := exec.Command(python, "main.py")
	cmd.Dir = work
	cmd.Env = []string{
		"PATH=" + filepath.Join(spec.VenvDir, "bin") + ":/usr/local/bin:/usr/bin:/bin",
		"VIRTUAL_ENV=" + spec.VenvDir,
		"HOME=" + work,
		"TMPDIR=" + work,
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"PYTHONNOUSERSITE=1",
	}
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = stdoutW
	cmd.Stderr = stderrW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	start := time.Now()
	err = cmd.Start()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		return Result{}, fmt.Errorf("start python: %w", err)
	}
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
		ExitCode:        cmd.ProcessState.ExitCode(),
		Duration:        time.Since(start),
	}
	var xe *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &xe) {
		return res, fmt.Errorf("wait for python: %w", waitErr)
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("run cancelled: %w", ctx.Err())
	}
	res.TimedOut = timedOut
	return res, nil
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
