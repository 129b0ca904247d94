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
	// Revision is the environment's revision the code ran against: no change can commit while a
	// run holds its shared lease.
	Revision        int64
	DurationMS      int64
	TimedOut        bool
	StdoutTruncated bool
	StderrTruncated bool
	OperationID     int64
}

// MaxCodeBytes bounds the code of one run.
const MaxCodeBytes = 1 << 20

// Run runs code with the environment's interpreter. Runs share the environment with other runs
// but never with a mutation.
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
	// A run outlives its caller like every admitted operation, bounded by its own timeout.
	o := op{key: key, kind: "run", exclusive: false, caller: c, need: &Need{PythonPath: env.PythonPath}, bound: req.Timeout + time.Minute, params: map[string]any{
		"code_sha256": codeDigest(req.Code), "code_bytes": len(req.Code), "timeout_seconds": req.Timeout.Seconds(),
	}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		// The agent enforces the timeout; the RPC gets a little longer to report it.
		rctx, cancel := context.WithTimeout(ctx, req.Timeout+30*time.Second)
		defer cancel()
		// Read under the shared lease, which no change can commit through.
		cur, err := s.store.GetEnv(ctx, key)
		if err != nil {
			return nil, dbErr("reading the environment", err)
		}
		// A change still marked as under way while we hold a run's lease was interrupted (its
		// holder lost its lease), and ERROR is a failure that was not put back: either way the
		// .venv may hold packages no revision has, until the repair pass syncs it. Code must not
		// run on what the database never recorded.
		if transitional(cur.State) || cur.State == store.StateError {
			return nil, errcode.New(errcode.EnvNotReady, fmt.Sprintf(
				"environment %s is being repaired after an interrupted change (state %s); retry in a few seconds", key, cur.State))
		}
		run := func(a Agent) (RunResult, error) { return a.Run(rctx, key, req.Code, req.Timeout, s.opt.MaxOutputBytes) }
		out, err := run(r.agent)
		if err != nil {
			out, err = s.runAgain(rctx, r, Need{PythonPath: env.PythonPath}, err, run)
		}
		if terr := s.store.Touch(context.WithoutCancel(ctx), key, s.now()); terr != nil {
			s.log.Warn("recording the use of an environment", "env", key.String(), "err", terr)
		}
		if err != nil {
			return nil, err
		}
		res = RunResponse{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID,
			Stdout: out.Stdout, Stderr: out.Stderr, ExitCode: out.ExitCode, ExitReason: out.ExitReason, Revision: cur.Revision,
			DurationMS: out.Duration.Milliseconds(),
			TimedOut:   out.TimedOut, StdoutTruncated: out.StdoutTruncated, StderrTruncated: out.StderrTruncated, OperationID: r.id}
		result := map[string]any{"exit_code": out.ExitCode, "exit_reason": out.ExitReason, "revision": cur.Revision,
			"duration_ms": res.DurationMS, "timed_out": out.TimedOut,
			"stdout_bytes": len(out.Stdout), "stderr_bytes": len(out.Stderr)}
		if out.TimedOut {
			return result, &RunTimeoutError{Timeout: req.Timeout, Stdout: out.Stdout, Stderr: out.Stderr, Duration: out.Duration}
		}
		return result, nil
	})
	return res, err
}
