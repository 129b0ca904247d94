package envs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// RunRequest is POST .../run.
type RunRequest struct {
	Code    string
	Timeout time.Duration // 0: the default
	// Cold asks for a fresh interpreter even where the agent has a warm one for the build
	// ("warm": false in the API).
	Cold bool
}

// RunResponse is the outcome of a run.
type RunResponse struct {
	WorkflowID string
	NodeID     string
	VersionID  string
	Stdout     []byte // exactly what the code wrote; the API says how it is encoded
	Stderr     []byte
	ExitCode   int
	ExitReason string // exited, timeout, memory or signal
	// Revision is the environment's revision the code ran against: the one current when the run
	// started, whose build it used to its end (a change committed meanwhile is for the next run).
	Revision int64
	// Woke: the build had been removed (hibernation, disk budget) and was materialised again
	// before the code ran.
	Woke bool
	// Warm: the run was forked from its build's warm interpreter on the agent.
	Warm            bool
	DurationMS      int64
	TimedOut        bool
	StdoutTruncated bool
	StderrTruncated bool
	OperationID     int64
}

// MaxCodeBytes bounds the code of one run.
const MaxCodeBytes = 1 << 20

// Run runs code with the environment's interpreter, on the build current when it starts. Runs
// are never refused because of a change: a change builds beside the current build and only its
// commit moves the environment to the new one, for the next run. Only a delete excludes runs.
func (s *Service) Run(ctx context.Context, c Caller, key envid.Key, req RunRequest) (RunResponse, error) {
	var res RunResponse
	switch {
	case strings.TrimSpace(req.Code) == "":
		return res, errcode.New(errcode.InvalidRequest, "code: must not be empty")
	case len(req.Code) > MaxCodeBytes:
		return res, errcode.New(errcode.RequestTooLarge, fmt.Sprintf("code: larger than %d bytes", MaxCodeBytes))
	case req.Timeout < 0:
		return res, errcode.New(errcode.InvalidRequest, "timeout: must be positive")
	case req.Timeout > s.opt.MaxTimeout:
		return res, errcode.New(errcode.InvalidRequest, fmt.Sprintf("timeout: at most %g seconds", s.opt.MaxTimeout.Seconds()))
	case req.Timeout == 0:
		req.Timeout = s.opt.DefaultTimeout
	}
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	if err := ready(env); err != nil {
		return res, err
	}
	// A run outlives its caller like every admitted operation, bounded by its own timeout and,
	// should it have to wake its build, one uv operation.
	o := op{key: key, kind: "run", mode: store.LeaseRun, caller: c, need: &Need{PythonPath: env.PythonPath}, bound: req.Timeout + s.uvTimeout() + time.Minute,
		params: map[string]any{"code_sha256": codeDigest(req.Code), "code_bytes": len(req.Code), "timeout_seconds": req.Timeout.Seconds(), "cold": req.Cold}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		cur, err := s.store.GetEnv(ctx, key)
		if err != nil {
			return nil, dbErr("reading the environment", err)
		}
		if err := ready(cur); err != nil {
			return nil, err
		}
		// An environment of the layout before builds runs its own .venv, which a change of that
		// layout rewrote in place: after a failure that was not put back (ERROR) it may hold
		// packages no revision has, until a sync moves it to a build.
		if cur.BuildID == "" && cur.State == store.StateError {
			return nil, errcode.New(errcode.EnvNotReady, fmt.Sprintf(
				"environment %s is being repaired after an interrupted change (state %s); retry in a few seconds, or sync it", key, cur.State))
		}
		spec := RunSpec{Key: key, BuildID: cur.BuildID, Code: req.Code, Timeout: req.Timeout, MaxOutput: s.opt.MaxOutputBytes, Preload: cur.Preload, Cold: req.Cold}
		out, err := s.runOn(ctx, r, spec, cur.PythonPath)
		woke := false
		if errcode.Of(err) == errcode.BuildMissing && cur.BuildID != "" {
			// Hibernated or removed: materialise it again from the revision's lock, then once more.
			b, werr := s.wake(ctx, r, cur)
			if werr != nil {
				return map[string]any{"revision": cur.Revision, "build_id": cur.BuildID, "woke": false}, werr
			}
			woke, spec.BuildID = true, b.ID
			out, err = s.runOn(ctx, r, spec, cur.PythonPath)
		}
		if terr := s.store.Touch(context.WithoutCancel(ctx), key, s.now()); terr != nil {
			s.log.Warn("recording the use of an environment", "env", key.String(), "err", terr)
		}
		if err != nil {
			return map[string]any{"revision": cur.Revision, "build_id": spec.BuildID, "woke": woke}, err
		}
		res = RunResponse{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID,
			Stdout: out.Stdout, Stderr: out.Stderr, ExitCode: out.ExitCode, ExitReason: out.ExitReason, Revision: cur.Revision,
			DurationMS: out.Duration.Milliseconds(), Woke: woke, Warm: out.Warm,
			TimedOut: out.TimedOut, StdoutTruncated: out.StdoutTruncated, StderrTruncated: out.StderrTruncated, OperationID: r.id}
		result := map[string]any{"exit_code": out.ExitCode, "exit_reason": out.ExitReason, "revision": cur.Revision,
			"duration_ms": res.DurationMS, "timed_out": out.TimedOut, "build_id": spec.BuildID, "woke": woke, "warm": out.Warm,
			"stdout_bytes": len(out.Stdout), "stderr_bytes": len(out.Stderr)}
		if out.TimedOut {
			return result, &RunTimeoutError{Timeout: req.Timeout, Stdout: out.Stdout, Stderr: out.Stderr, Duration: out.Duration}
		}
		return result, nil
	})
	return res, err
}

// runOn runs spec through r's agent; the agent enforces the timeout, the RPC gets a little
// longer to report it. A run its agent never received (connection refused) goes once to another
// agent with the environment's interpreter (runAgain).
func (s *Service) runOn(ctx context.Context, r *running, spec RunSpec, pythonPath string) (RunResult, error) {
	rctx, cancel := context.WithTimeout(ctx, spec.Timeout+30*time.Second)
	defer cancel()
	run := func(a Agent) (RunResult, error) { return a.Run(rctx, spec) }
	out, err := run(r.agent)
	if err != nil {
		out, err = s.runAgain(rctx, r, Need{PythonPath: pythonPath}, err, run)
	}
	return out, err
}

// wake materialises env's current build again from its revision's lock (it was removed:
// hibernation, the disk budget or cleanup) and records it READY, which moves the environments
// whose current build it is from HIBERNATED back to ACTIVE. Concurrent wakes of one build are
// safe: the agents materialise it once under a lock on the shared storage.
func (s *Service) wake(ctx context.Context, r *running, env store.Env) (Build, error) {
	rev, err := s.store.GetRevision(ctx, env.Key, env.Revision)
	if err != nil {
		return Build{}, dbErr("reading the revision to wake its build", err)
	}
	files := Files{PyprojectTOML: rev.PyprojectTOML, UvLock: rev.UvLock}
	b, err := s.materialise(ctx, r, files, env.PythonPath, false)
	if err != nil {
		return b, err
	}
	if b.ID != env.BuildID {
		s.log.Warn("a woken build has another identity than the recorded one (the interpreter or install settings changed); a sync records it",
			"env", env.Key.String(), "recorded", env.BuildID, "built", b.ID)
	}
	s.log.Info("woke a build", "env", env.Key.String(), "build", b.ID, "created", b.Created)
	return b, nil
}
