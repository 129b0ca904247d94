// Package rpc implements the agent's Connect service: it turns control-plane calls into uv
// commands and runs on one host's view of the shared storage, keeping every environment at its
// last good revision when a command fails.
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

	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/usage"
	"github.com/envfabric/envfabric/agent/uv"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// Config is what the service needs to know about its host.
type Config struct {
	AgentID string
	Version string
	// EnvsBasePath holds every project directory (envid.Key.Dir).
	EnvsBasePath string
	UVCacheDir   string
	LinkMode     string
	// DefaultPython is used when CreateProject names no version.
	DefaultPython string
	// RunMaxOutputBytes caps each output stream of a run when the request gives no cap.
	RunMaxOutputBytes int64
	// RunTimeout bounds a run when the request gives no timeout (default 30s).
	RunTimeout time.Duration
	// RestoreTimeout bounds putting a project back after a failed mutation (default 5m).
	RestoreTimeout time.Duration
	// Usage, when set, is told of every run and answers Usage calls.
	Usage *usage.Tracker
	// OnRun, when set, is told the duration and whether the code timed out, for the metrics.
	OnRun func(d time.Duration, timedOut bool)
	// Sandbox isolates every run (agent/sandbox); the zero value is the process tier.
	Sandbox sandbox.Config
}

// Server implements agentv1connect.AgentServiceHandler. The control plane serialises calls on
// one environment; calls on different environments run concurrently. Calls that write a project
// also lock it, in this process (envLocks) and on the shared storage (filelock.go), so that a
// restore after a cancelled call, or a paused agent that resumes, finishes before the next write.
type Server struct {
	cfg    Config
	uv     *uv.Executor
	logger *slog.Logger
	locks  envLocks
}

var _ agentv1connect.AgentServiceHandler = (*Server)(nil)

// New returns the service.
func New(cfg Config, ex *uv.Executor, logger *slog.Logger) *Server {
	if cfg.RunTimeout <= 0 {
		cfg.RunTimeout = 30 * time.Second
	}
	if cfg.RestoreTimeout <= 0 {
		cfg.RestoreTimeout = 5 * time.Minute
	}
	return &Server{cfg: cfg, uv: ex, logger: logger}
}

// CreateProject writes a fresh pyproject.toml and lets uv lock and install it.
func (s *Server) CreateProject(ctx context.Context, req *connect.Request[agentv1.CreateProjectRequest]) (*connect.Response[agentv1.CreateProjectResponse], error) {
	start := time.Now()
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "create", err, false)
	}
	lock, err := s.lockProject(ctx, key)
	if err != nil {
		return nil, s.fail(ctx, "create", err, false)
	}
	defer lock.release()
	defer s.operated(key) // uv read the environment; that is not a workflow using it
	// A create starts a new life of the environment: what an older one recorded does not count.
	if err := lock.record(0, 0); err != nil {
		return nil, s.fail(ctx, "create", err, false)
	}
	if err := checkPackages(req.Msg.GetPackages()); err != nil {
		return nil, s.fail(ctx, "create", err, false)
	}
	version := req.Msg.GetPythonVersion()
	if version == "" {
		version = s.cfg.DefaultPython
	}
	python, full, err := s.uv.FindPython(ctx, version)
	if err != nil {
		return nil, s.fail(ctx, "create", err, false)
	}
	dir := key.Dir(s.cfg.EnvsBasePath)
	if _, err := os.Lstat(dir); err == nil {
		s.logger.WarnContext(ctx, "removing leftover project directory", "env", key.String(), "dir", dir)
		if err := os.RemoveAll(dir); err != nil {
			return nil, s.fail(ctx, "create", fmt.Errorf("remove leftover %s: %w", dir, err), false)
		}
	}
	out, err := s.create(ctx, key, dir, python, full, req.Msg.GetPackages())
	if err != nil {
		s.removeProject(key)
		return nil, s.fail(ctx, "create", err, false)
	}
	files, err := readFiles(dir)
	if err != nil {
		s.removeProject(key)
		return nil, s.fail(ctx, "create", err, false)
	}
	// The project on disk is what revision 1 will be once the control plane commits it.
	if err := lock.record(1, req.Msg.GetOperationId()); err != nil {
		s.removeProject(key)
		return nil, s.fail(ctx, "create", err, false)
	}
	s.logger.InfoContext(ctx, "created", "env", key.String(), "python", python, "duration", time.Since(start))
	return connect.NewResponse(&agentv1.CreateProjectResponse{
		Files:             files,
		EnvPath:           dir,
		PythonPath:        python,
		PythonFullVersion: full,
		PackagesInstalled: packagesInstalled(dir),
		UvOutput:          out,
		DurationMs:        time.Since(start).Milliseconds(),
	}), nil
}

func (s *Server) create(ctx context.Context, key envid.Key, dir, python, full string, pkgs []string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	py, err := newPyproject(key.ProjectName(), full)
	if err != nil {
		return "", err
	}
	if err := writeAtomic(filepath.Join(dir, pyprojectFile), py); err != nil {
		return "", err
	}
	p := uv.Project{Dir: dir, Python: python}
	if len(pkgs) > 0 {
		return s.uv.Add(ctx, p, pkgs, nil)
	}
	return s.uv.Sync(ctx, p, false)
}

// removeProject deletes a project directory and its emptied parents, surviving cancellation.
func (s *Server) removeProject(key envid.Key) {
	dir := key.Dir(s.cfg.EnvsBasePath)
	if err := os.RemoveAll(dir); err != nil {
		s.logger.Error("remove failed project", "env", key.String(), "err", err)
	}
	s.removeEmptyParents(key)
}

// removeEmptyParents removes the node and workflow directories of key when they are empty.
func (s *Server) removeEmptyParents(key envid.Key) {
	node := filepath.Dir(key.Dir(s.cfg.EnvsBasePath))
	if os.Remove(node) == nil {
		_ = os.Remove(filepath.Dir(node))
	}
}

// Mutate runs uv add or uv remove on the base revision; on failure the base goes back on disk.
func (s *Server) Mutate(ctx context.Context, req *connect.Request[agentv1.MutateRequest]) (*connect.Response[agentv1.MutateResponse], error) {
	start := time.Now()
	m := req.Msg
	op := "mutate " + m.GetKind().String()
	key, err := envKey(m.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	lock, err := s.lockProject(ctx, key)
	if err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	defer lock.release()
	defer s.operated(key) // uv read the environment; that is not a workflow using it
	if err := lock.admit(key, m.GetBaseRevision(), m.GetOperationId()); err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	if err := checkRevision(m.GetBase(), "base"); err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	if err := checkMutation(m); err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	dir, err := s.existingDir(key)
	if err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	if err := checkInterpreter(m.GetPythonPath()); err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	if wrote, err := writeFiles(dir, m.GetBase()); err != nil {
		return nil, s.fail(ctx, op, err, false)
	} else if wrote {
		// The disk held a change that was never committed (its holder lost its lease). uv add
		// syncs the .venv inexactly and would keep what that change installed, so the .venv
		// goes back to the base exactly first.
		s.logger.WarnContext(ctx, "project files differed from base; base written", "env", key.String())
		if out, err := s.uv.Sync(ctx, uv.Project{Dir: dir, Python: m.GetPythonPath()}, true); err != nil {
			s.logger.ErrorContext(ctx, "syncing .venv to the base", "env", key.String(), "err", err, "uv_output", out)
			return nil, s.fail(ctx, op, err, false)
		}
	}
	if err := lock.record(m.GetBaseRevision(), m.GetOperationId()); err != nil {
		return nil, s.fail(ctx, op, err, false)
	}
	// An environment made before project names were reserved may carry a name that a dependency
	// needs; the mutation relocks the project anyway, so it moves to the safe name here and the
	// new revision records it. A failure puts the base back, old name included.
	if renamed, changed, err := pyproject.SetName(m.GetBase().GetPyprojectToml(), key.ProjectName()); err != nil {
		return nil, s.fail(ctx, op, errcode.Wrap(errcode.InvalidRequest, err, "base pyproject.toml"), false)
	} else if changed {
		if err := writeAtomic(filepath.Join(dir, pyprojectFile), []byte(renamed)); err != nil {
			return nil, s.fail(ctx, op, err, false)
		}
		s.logger.InfoContext(ctx, "project renamed to its reserved name", "env", key.String(), "name", key.ProjectName())
	}

	p := uv.Project{Dir: dir, Python: m.GetPythonPath()}
	var out string
	switch m.GetKind() {
	case agentv1.MutationKind_MUTATION_KIND_ADD:
		out, err = s.uv.Add(ctx, p, m.GetPackages(), nil)
	case agentv1.MutationKind_MUTATION_KIND_UPDATE:
		out, err = s.uv.Add(ctx, p, m.GetPackages(), m.GetUpgradePackages())
	case agentv1.MutationKind_MUTATION_KIND_REMOVE:
		out, err = s.uv.Remove(ctx, p, m.GetPackages())
	}
	if err != nil {
		s.restore(ctx, key, p, m.GetBase(), err)
		return nil, s.fail(ctx, op, err, true)
	}
	files, err := readFiles(dir)
	if err != nil {
		s.restore(ctx, key, p, m.GetBase(), err)
		return nil, s.fail(ctx, op, err, true)
	}
	if files.GetPyprojectToml() != m.GetBase().GetPyprojectToml() || files.GetUvLock() != m.GetBase().GetUvLock() {
		// The disk is now what base_revision+1 will be if the control plane commits it: an older
		// operation must no longer write base_revision here; this one may still put it back.
		if err := lock.record(m.GetBaseRevision()+1, m.GetOperationId()); err != nil {
			s.restore(ctx, key, p, m.GetBase(), err)
			return nil, s.fail(ctx, op, err, true)
		}
	}
	s.logger.InfoContext(ctx, "mutated", "env", key.String(), "kind", m.GetKind().String(), "packages", m.GetPackages(), "duration", time.Since(start))
	return connect.NewResponse(&agentv1.MutateResponse{
		Files:             files,
		PackagesInstalled: packagesInstalled(dir),
		UvOutput:          out,
		DurationMs:        time.Since(start).Milliseconds(),
	}), nil
}

// restore puts base back byte for byte and, unless uv installed nothing, syncs .venv to its lock.
// It runs to completion even when ctx is cancelled.
func (s *Server) restore(ctx context.Context, key envid.Key, p uv.Project, base *agentv1.ProjectFiles, cause error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RestoreTimeout)
	defer cancel()
	if _, err := writeFiles(p.Dir, base); err != nil {
		s.logger.ErrorContext(rctx, "restore project files", "env", key.String(), "err", err)
		return
	}
	switch errcode.Of(cause) {
	case errcode.PackageResolutionFailed, errcode.InvalidPackages:
		return
	}
	if out, err := s.uv.Sync(rctx, p, true); err != nil {
		s.logger.ErrorContext(rctx, "restore .venv to the base lock", "env", key.String(), "err", err, "uv_output", out)
		return
	}
	s.logger.InfoContext(rctx, "restored after failed mutation", "env", key.String())
}

// checkMutation refuses a mutation before uv runs. For removal every name must be a dependency in
// base: uv remove rewrites pyproject.toml before it fails.
func checkMutation(m *agentv1.MutateRequest) error {
	if len(m.GetPackages()) == 0 {
		return errcode.New(errcode.InvalidRequest, "no packages given")
	}
	switch m.GetKind() {
	case agentv1.MutationKind_MUTATION_KIND_ADD:
		return checkPackages(m.GetPackages())
	case agentv1.MutationKind_MUTATION_KIND_UPDATE:
		return errors.Join(checkPackages(m.GetPackages()), checkNames(m.GetUpgradePackages()))
	case agentv1.MutationKind_MUTATION_KIND_REMOVE:
		if err := checkNames(m.GetPackages()); err != nil {
			return err
		}
		base, err := pyproject.Parse(m.GetBase().GetPyprojectToml())
		if err != nil {
			return errcode.Wrap(errcode.InvalidRequest, err, "")
		}
		deps := base.DependencyIndex()
		for _, n := range m.GetPackages() {
			if _, ok := deps[pyproject.Normalize(n)]; !ok {
				return errcode.New(errcode.DependencyNotFound, fmt.Sprintf("%s is not a dependency of this environment", n))
			}
		}
		return nil
	}
	return errcode.New(errcode.InvalidRequest, "unknown mutation kind "+m.GetKind().String())
}

// Sync writes the given revision where the disk differs and installs exactly its lock.
func (s *Server) Sync(ctx context.Context, req *connect.Request[agentv1.SyncRequest]) (*connect.Response[agentv1.SyncResponse], error) {
	start := time.Now()
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	lock, err := s.lockProject(ctx, key)
	if err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	defer lock.release()
	defer s.operated(key) // uv read the environment; that is not a workflow using it
	if err := lock.admit(key, req.Msg.GetRevision(), req.Msg.GetOperationId()); err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	if err := checkRevision(req.Msg.GetFiles(), "files"); err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	if err := checkInterpreter(req.Msg.GetPythonPath()); err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	dir := key.Dir(s.cfg.EnvsBasePath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	restored, err := writeFiles(dir, req.Msg.GetFiles())
	if err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	if err := lock.record(req.Msg.GetRevision(), req.Msg.GetOperationId()); err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	out, err := s.uv.Sync(ctx, uv.Project{Dir: dir, Python: req.Msg.GetPythonPath()}, true)
	if err != nil {
		return nil, s.fail(ctx, "sync", err, false)
	}
	s.logger.InfoContext(ctx, "synced", "env", key.String(), "files_restored", restored, "duration", time.Since(start))
	return connect.NewResponse(&agentv1.SyncResponse{
		PackagesInstalled: packagesInstalled(dir),
		FilesRestored:     restored,
		UvOutput:          out,
		DurationMs:        time.Since(start).Milliseconds(),
	}), nil
}

// Inspect reports what is on disk, without changing anything.
func (s *Server) Inspect(ctx context.Context, req *connect.Request[agentv1.InspectRequest]) (*connect.Response[agentv1.InspectResponse], error) {
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "inspect", err, false)
	}
	dir := key.Dir(s.cfg.EnvsBasePath)
	resp := &agentv1.InspectResponse{EnvPath: dir}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return connect.NewResponse(resp), nil
	}
	resp.Exists = true
	resp.HasPyproject = exists(filepath.Join(dir, pyprojectFile))
	resp.HasLock = exists(filepath.Join(dir, lockFile))
	resp.HasVenv = exists(filepath.Join(dir, venvDir, "pyvenv.cfg"))
	if exp := req.Msg.GetExpected(); exp != nil {
		resp.FilesMatch = fileEquals(filepath.Join(dir, pyprojectFile), exp.GetPyprojectToml()) &&
			fileEquals(filepath.Join(dir, lockFile), exp.GetUvLock())
	}
	python := req.Msg.GetPythonPath()
	resp.InterpreterPresent = python != "" && exists(python)
	if resp.HasVenv && resp.HasLock && resp.HasPyproject && resp.InterpreterPresent {
		inSync, err := s.uv.InSync(ctx, uv.Project{Dir: dir, Python: python})
		if err != nil {
			s.logger.WarnContext(ctx, "uv sync --dry-run failed", "env", key.String(), "err", err)
		}
		resp.VenvInSync = inSync
		s.operated(key)
	}
	resp.PackagesInstalled = packagesInstalled(dir)
	last := lastUsed(dir)
	if s.cfg.Usage != nil {
		if t := s.cfg.Usage.Last(key); t.After(last) {
			last = t
		}
	}
	if !last.IsZero() {
		resp.LastUsedUnixMs = last.UnixMilli()
	}
	if req.Msg.GetMeasureDisk() {
		resp.ExclusiveBytes = uniquelyOwnedBytes(dir)
	}
	return connect.NewResponse(resp), nil
}

// Run runs user code with the environment's interpreter. A timeout is a response (timed_out),
// not an error.
func (s *Server) Run(ctx context.Context, req *connect.Request[agentv1.RunRequest]) (*connect.Response[agentv1.RunResponse], error) {
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "run", err, false)
	}
	dir, err := s.existingDir(key)
	if err != nil {
		return nil, s.fail(ctx, "run", err, false)
	}
	timeout := time.Duration(req.Msg.GetTimeoutMs()) * time.Millisecond
	if timeout <= 0 {
		timeout = s.cfg.RunTimeout
	}
	maxOut := req.Msg.GetMaxOutputBytes()
	if maxOut <= 0 {
		maxOut = s.cfg.RunMaxOutputBytes
	}
	if err := markUsed(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.logger.WarnContext(ctx, "mark environment used", "env", key.String(), "err", err)
	}
	if s.cfg.Usage != nil {
		s.cfg.Usage.Used(key, time.Now(), usage.SourceAPI)
	}
	res, err := runner.Run(ctx, runner.Spec{
		VenvDir:   filepath.Join(dir, venvDir),
		Code:      req.Msg.GetCode(),
		Timeout:   timeout,
		MaxOutput: maxOut,
		Sandbox:   s.cfg.Sandbox,
	})
	if err != nil {
		return nil, s.fail(ctx, "run", err, false)
	}
	if s.cfg.OnRun != nil {
		s.cfg.OnRun(res.Duration, res.TimedOut)
	}
	s.logger.InfoContext(ctx, "ran", "env", key.String(), "exit_code", res.ExitCode, "exit_reason", res.ExitReason, "timed_out", res.TimedOut, "duration", res.Duration)
	return connect.NewResponse(&agentv1.RunResponse{
		Stdout:          res.Stdout,
		Stderr:          res.Stderr,
		ExitCode:        int32(res.ExitCode),
		DurationMs:      res.Duration.Milliseconds(),
		TimedOut:        res.TimedOut,
		StdoutTruncated: res.StdoutTruncated,
		StderrTruncated: res.StderrTruncated,
		ExitReason:      res.ExitReason,
	}), nil
}

// DeleteProject moves the project out of sight in one rename, then deletes it.
func (s *Server) DeleteProject(ctx context.Context, req *connect.Request[agentv1.DeleteProjectRequest]) (*connect.Response[agentv1.DeleteProjectResponse], error) {
	key, err := envKey(req.Msg.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "delete", err, false)
	}
	lock, err := s.lockProject(ctx, key)
	if err != nil {
		return nil, s.fail(ctx, "delete", err, false)
	}
	defer lock.releaseRemoving()
	dir := key.Dir(s.cfg.EnvsBasePath)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		s.removeEmptyParents(key)
		return connect.NewResponse(&agentv1.DeleteProjectResponse{Existed: false}), nil
	}
	trash := filepath.Join(s.cfg.EnvsBasePath, fmt.Sprintf(".trash-%d-%s", time.Now().UnixNano(), key.ProjectName()))
	if err := os.Rename(dir, trash); err != nil {
		return nil, s.fail(ctx, "delete", err, false)
	}
	s.removeEmptyParents(key)
	freed := uniquelyOwnedBytes(trash)
	if err := os.RemoveAll(trash); err != nil {
		return nil, s.fail(ctx, "delete", fmt.Errorf("remove %s: %w", trash, err), false)
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
		return nil, s.fail(ctx, "info", err, false)
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
		if err := s.cfg.Usage.Scan(ctx); err != nil {
			return nil, s.fail(ctx, "usage", err, false)
		}
	}
	uses, scanned := s.cfg.Usage.Since(since)
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
		return nil, s.fail(ctx, "prune cache", err, false)
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
