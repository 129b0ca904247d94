// Package rpc implements the agent's Connect service: it turns control-plane calls into uv
// commands, builds (agent/builds) and runs, on one host's view of the shared storage. Nothing an
// environment runs on is modified in place: a change resolves in a staging copy (Lock),
// materialises its build beside the current one (Build) and, once the control plane committed
// it, points the environment at it (Switch).
package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/builds"
	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/usage"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/agent/warm"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Config is what the service needs to know about its host.
type Config struct {
	AgentID string
	Version string
	// EnvsBasePath holds every project directory (envid.Key.Dir), the builds (.builds) and the
	// staging copies (.staging).
	EnvsBasePath string
	UVCacheDir   string
	LinkMode     string
	// DefaultPython is used when a create names no version.
	DefaultPython string
	// RunMaxOutputBytes caps each output stream of a run when the request gives no cap.
	RunMaxOutputBytes int64
	// RunTimeout bounds a run when the request gives no timeout (default 30s).
	RunTimeout time.Duration
	// Usage, when set, is told of every run and answers Usage calls.
	Usage *usage.Tracker
	// OnRun, when set, is told the duration and whether the code timed out, for the metrics.
	OnRun func(d time.Duration, timedOut bool)
	// OnBuild, when set, is told the outcome of every Build call ("created", "existing" or
	// "error") and its duration, for the metrics.
	OnBuild func(outcome string, d time.Duration)
	// Sandbox isolates every run (agent/sandbox); the zero value is the process tier.
	Sandbox sandbox.Config
	// Warm, when enabled, serves runs of a build from its warm interpreters (agent/warm); a run
	// it cannot serve runs cold.
	Warm *warm.Pool
}

// Server implements agentv1connect.AgentServiceHandler. The control plane serialises changes of
// one environment; calls on different environments run concurrently. Switch and delete, the
// calls that write a project directory, also lock it, in this process (envLocks) and on the
// shared storage (filelock.go), so that a paused agent that resumes cannot write over a newer
// revision.
type Server struct {
	cfg    Config
	uv     *uv.Executor
	builds *builds.Store
	logger *slog.Logger
	locks  envLocks
}

var _ agentv1connect.AgentServiceHandler = (*Server)(nil)

// New returns the service.
func New(cfg Config, ex *uv.Executor, logger *slog.Logger) *Server {
	if cfg.RunTimeout <= 0 {
		cfg.RunTimeout = 30 * time.Second
	}
	return &Server{cfg: cfg, uv: ex, builds: builds.New(cfg.EnvsBasePath, ex, logger), logger: logger}
}

// Builds is the store of builds the service uses (for the agent's sweeps).
func (s *Server) Builds() *builds.Store { return s.builds }

// removeEmptyParents removes the node and workflow directories of key when they are empty.
func (s *Server) removeEmptyParents(key envid.Key) {
	node := filepath.Dir(key.Dir(s.cfg.EnvsBasePath))
	if os.Remove(node) == nil {
		_ = os.Remove(filepath.Dir(node))
	}
}

// Inspect reports what is on disk, without changing anything.
func (s *Server) Inspect(ctx context.Context, req *connect.Request[agentv1.InspectRequest]) (*connect.Response[agentv1.InspectResponse], error) {
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "inspect", err)
	}
	dir := key.Dir(s.cfg.EnvsBasePath)
	resp := &agentv1.InspectResponse{EnvPath: dir}
	checkID := req.Msg.GetExpectedBuildId()
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		if err := s.inspectDir(ctx, key, dir, req.Msg, resp); err != nil {
			return nil, s.fail(ctx, "inspect", err)
		}
		if checkID == "" {
			checkID = resp.BuildId
		}
	}
	if req.Msg.GetVerify() && checkID != "" {
		check, err := s.builds.Verify(ctx, checkID)
		if err != nil {
			return nil, s.fail(ctx, "inspect", err)
		}
		resp.BuildCheck = buildCheck(check)
	}
	return connect.NewResponse(resp), nil
}

func (s *Server) inspectDir(ctx context.Context, key envid.Key, dir string, req *agentv1.InspectRequest, resp *agentv1.InspectResponse) error {
	resp.Exists = true
	resp.HasPyproject = exists(filepath.Join(dir, pyprojectFile))
	resp.HasLock = exists(filepath.Join(dir, lockFile))
	// bin/python through the build link: false when the build is gone (hibernated).
	resp.HasVenv = exists(filepath.Join(dir, venvDir, "pyvenv.cfg")) && exists(filepath.Join(dir, venvDir, "bin", "python"))
	id, linked := builds.LinkedBuild(dir)
	resp.BuildId = id
	if exp := req.GetExpected(); exp != nil {
		resp.FilesMatch = fileEquals(filepath.Join(dir, pyprojectFile), exp.GetPyprojectToml()) &&
			fileEquals(filepath.Join(dir, lockFile), exp.GetUvLock())
	}
	python := req.GetPythonPath()
	resp.InterpreterPresent = python != "" && exists(python)
	if resp.HasVenv && resp.HasLock && resp.HasPyproject && resp.InterpreterPresent {
		if linked {
			// The build is what is installed; it is in sync when it is complete, holds the
			// environment's lock, and uv finds nothing to change in it.
			lock, _ := os.ReadFile(filepath.Join(dir, lockFile))
			if s.builds.RequireComplete(id) == nil && fileEquals(filepath.Join(s.builds.Dir(id), lockFile), string(lock)) {
				inSync, err := s.uv.InSync(ctx, uv.Project{Dir: s.builds.Dir(id), Python: python})
				if err != nil {
					s.logger.WarnContext(ctx, "uv sync --dry-run failed", "env", key.String(), "build", id, "err", err)
				}
				resp.VenvInSync = inSync
			}
		} else {
			inSync, err := s.uv.InSync(ctx, uv.Project{Dir: dir, Python: python})
			if err != nil {
				s.logger.WarnContext(ctx, "uv sync --dry-run failed", "env", key.String(), "err", err)
			}
			resp.VenvInSync = inSync
			s.operated(key)
		}
	}
	resp.PackagesInstalled = packagesInstalled(dir)
	last := lastUsed(dir, linked)
	if s.cfg.Usage != nil {
		if t := s.cfg.Usage.Last(key); t.After(last) {
			last = t
		}
	}
	if !last.IsZero() {
		resp.LastUsedUnixMs = last.UnixMilli()
	}
	if req.GetMeasureDisk() {
		// The walk does not follow the build link: a build shared with other environments is
		// not this environment's to free.
		resp.ExclusiveBytes = builds.ExclusiveBytes(dir)
	}
	return nil
}

// Run runs user code with the environment's interpreter. A timeout is a response (timed_out),
// not an error. With a build id the run uses that build's .venv to its end, holding its lock
// shared so that nothing removes it meanwhile; "" runs the environment's own .venv, or the build
// it links to.
func (s *Server) Run(ctx context.Context, req *connect.Request[agentv1.RunRequest]) (*connect.Response[agentv1.RunResponse], error) {
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "run", err)
	}
	dir, err := s.existingDir(key)
	if err != nil {
		return nil, s.fail(ctx, "run", err)
	}
	timeout := time.Duration(req.Msg.GetTimeoutMs()) * time.Millisecond
	if timeout <= 0 {
		timeout = s.cfg.RunTimeout
	}
	maxOut := req.Msg.GetMaxOutputBytes()
	if maxOut <= 0 {
		maxOut = s.cfg.RunMaxOutputBytes
	}
	venv := filepath.Join(dir, venvDir)
	id := req.Msg.GetBuildId()
	if id == "" {
		// The link is read once: the run stays on that build whatever switches meanwhile.
		id, _ = builds.LinkedBuild(dir)
	}
	if id != "" {
		release, err := s.builds.Hold(ctx, id)
		if err != nil {
			return nil, s.fail(ctx, "run", err)
		}
		defer release()
		venv = s.builds.Venv(id)
	}
	if err := markUsed(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.logger.WarnContext(ctx, "mark environment used", "env", key.String(), "err", err)
	}
	if s.cfg.Usage != nil {
		s.cfg.Usage.Used(key, time.Now(), usage.SourceAPI)
	}
	spec := runner.Spec{
		VenvDir:   venv,
		Code:      req.Msg.GetCode(),
		Timeout:   timeout,
		MaxOutput: maxOut,
		Sandbox:   s.cfg.Sandbox,
	}
	var res runner.Result
	warmRun := false
	// A run that asks to be cold (its own hash seed, nothing imported before it) always is.
	if id != "" && !req.Msg.GetCold() && s.cfg.Warm.Enabled() {
		res, warmRun, err = s.cfg.Warm.Run(ctx, s.warmBuild(id, req.Msg.GetPreload()), spec)
		if err != nil {
			return nil, s.fail(ctx, "run", err)
		}
	}
	if !warmRun {
		if res, err = runner.Run(ctx, spec); err != nil {
			return nil, s.fail(ctx, "run", err)
		}
	}
	if s.cfg.OnRun != nil {
		s.cfg.OnRun(res.Duration, res.TimedOut)
	}
	s.logger.InfoContext(ctx, "ran", "env", key.String(), "build", id, "warm", warmRun, "exit_code", res.ExitCode, "exit_reason", res.ExitReason, "timed_out", res.TimedOut, "duration", res.Duration)
	return connect.NewResponse(&agentv1.RunResponse{
		Stdout:          res.Stdout,
		Stderr:          res.Stderr,
		ExitCode:        int32(res.ExitCode),
		DurationMs:      res.Duration.Milliseconds(),
		TimedOut:        res.TimedOut,
		StdoutTruncated: res.StdoutTruncated,
		StderrTruncated: res.StderrTruncated,
		ExitReason:      res.ExitReason,
		Warm:            warmRun,
	}), nil
}

// warmBuild is build id as the warm pool needs it: its interpreters hold it while they live.
func (s *Server) warmBuild(id string, preload []string) warm.Build {
	return warm.Build{
		ID:      id,
		Venv:    s.builds.Venv(id),
		Preload: preload,
		Hold:    func(ctx context.Context) (func(), error) { return s.builds.Hold(ctx, id) },
	}
}

// DeleteProject moves the project directory out of sight in one rename, then deletes it. Builds
// are never deleted here: others may share them, and the control plane removes the builds no
// environment references (RemoveBuild).
func (s *Server) DeleteProject(ctx context.Context, req *connect.Request[agentv1.DeleteProjectRequest]) (*connect.Response[agentv1.DeleteProjectResponse], error) {
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "delete", err)
	}
	lock, err := s.lockProject(ctx, key)
	if err != nil {
		return nil, s.fail(ctx, "delete", err)
	}
	defer lock.releaseRemoving()
	dir := key.Dir(s.cfg.EnvsBasePath)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		s.removeEmptyParents(key)
		return connect.NewResponse(&agentv1.DeleteProjectResponse{Existed: false}), nil
	}
	trash := filepath.Join(s.cfg.EnvsBasePath, fmt.Sprintf(".trash-%d-%s", time.Now().UnixNano(), keyHash(key)))
	if err := os.Rename(dir, trash); err != nil {
		return nil, s.fail(ctx, "delete", err)
	}
	s.removeEmptyParents(key)
	freed := builds.ExclusiveBytes(trash)
	if err := os.RemoveAll(trash); err != nil {
		return nil, s.fail(ctx, "delete", fmt.Errorf("remove %s: %w", trash, err))
	}
	s.logger.InfoContext(ctx, "deleted", "env", key.String(), "bytes_freed", freed)
	return connect.NewResponse(&agentv1.DeleteProjectResponse{Existed: true, BytesFreed: freed}), nil
}

// Info describes the agent and what its host offers.
func (s *Server) Info(ctx context.Context, _ *connect.Request[agentv1.InfoRequest]) (*connect.Response[agentv1.InfoResponse], error) {
	resp := &agentv1.InfoResponse{
		AgentId:      s.cfg.AgentID,
		Version:      s.cfg.Version,
		EnvsBasePath: s.cfg.EnvsBasePath,
		UvCacheDir:   s.cfg.UVCacheDir,
		LinkMode:     s.cfg.LinkMode,
	}
	v, err := s.uv.Version(ctx)
	if err != nil {
		return nil, s.fail(ctx, "info", err)
	}
	resp.UvVersion = v
	// The same list the agent gossips: bound paths first, so a single host and a fleet agree.
	for _, p := range s.uv.Offered(ctx, s.cfg.DefaultPython) {
		resp.Interpreters = append(resp.Interpreters, &agentv1.Interpreter{Version: p.Version, Path: p.Path})
	}
	return connect.NewResponse(resp), nil
}

// existingDir is key's project directory, or ENV_NOT_FOUND.
func (s *Server) existingDir(key envid.Key) (string, error) {
	dir := key.Dir(s.cfg.EnvsBasePath)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", errcode.New(errcode.EnvNotFound, fmt.Sprintf("environment %s has no project directory on this host", key))
	}
	return dir, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// maxStorageChecks bounds one Usage request's storage_check (the control plane sends a cleanup
// batch, smaller than this).
const maxStorageChecks = 10000

// Usage reports the last use this host has seen of each environment.
func (s *Server) Usage(ctx context.Context, req *connect.Request[agentv1.UsageRequest]) (*connect.Response[agentv1.UsageResponse], error) {
	resp := &agentv1.UsageResponse{}
	if s.cfg.Usage == nil {
		return connect.NewResponse(resp), nil
	}
	var since time.Time
	if ms := req.Msg.GetSinceUnixMs(); ms > 0 {
		since = time.UnixMilli(ms)
	}
	if req.Msg.GetRescan() {
		s.cfg.Usage.Scan()
	}
	checks := req.Msg.GetStorageCheck()
	if len(checks) > maxStorageChecks {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("%d environments to check on the shared storage; at most %d a request", len(checks), maxStorageChecks))
	}
	keys := make([]envid.Key, 0, len(checks))
	for _, r := range checks {
		key, err := envid.New(r.GetWorkflowId(), r.GetNodeId(), r.GetVersionId())
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("storage_check: %w", err))
		}
		keys = append(keys, key)
	}
	checked, err := s.cfg.Usage.CheckStorage(ctx, keys)
	if err != nil {
		return nil, s.fail(ctx, "usage", err)
	}
	uses, scanned := s.cfg.Usage.Since(since)
	// A checked use older than since is still the answer to the check.
	reported := make(map[envid.Key]bool, len(uses))
	for _, u := range uses {
		reported[u.Key] = true
	}
	for _, u := range checked {
		if !reported[u.Key] {
			uses = append(uses, u)
		}
	}
	for _, u := range uses {
		resp.Envs = append(resp.Envs, &agentv1.EnvUsage{
			Env:            &agentv1.EnvRef{WorkflowId: u.Key.WorkflowID, NodeId: u.Key.NodeID, VersionId: u.Key.VersionID},
			LastUsedUnixMs: u.At.UnixMilli(), Source: u.Source,
		})
	}
	if !scanned.IsZero() {
		resp.ScannedUnixMs = scanned.UnixMilli()
	}
	return connect.NewResponse(resp), nil
}

// PruneCache removes unused entries from the uv cache.
func (s *Server) PruneCache(ctx context.Context, _ *connect.Request[agentv1.PruneCacheRequest]) (*connect.Response[agentv1.PruneCacheResponse], error) {
	before, _ := usage.MeasureCache(ctx, s.cfg.UVCacheDir)
	out, err := s.uv.PruneCache(ctx)
	if err != nil {
		return nil, s.fail(ctx, "prune cache", err)
	}
	after, _ := usage.MeasureCache(ctx, s.cfg.UVCacheDir)
	s.logger.InfoContext(ctx, "pruned the uv cache", "bytes_before", before.Bytes, "bytes_after", after.Bytes)
	return connect.NewResponse(&agentv1.PruneCacheResponse{BytesBefore: before.Bytes, BytesAfter: after.Bytes, UvOutput: out}), nil
}

// operated re-arms key's use detection after this agent's own uv command read the environment.
func (s *Server) operated(key envid.Key) {
	if s.cfg.Usage != nil {
		s.cfg.Usage.Operated(key)
	}
}
