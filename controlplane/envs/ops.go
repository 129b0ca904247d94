package envs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/hostdeps"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// CreateRequest is POST /envs.
type CreateRequest struct {
	Key           envid.Key
	PythonVersion string
	Packages      []string
}

// CreatedEnv is the TRD's create response.
type CreatedEnv struct {
	WorkflowID        string             `json:"workflow_id"`
	NodeID            string             `json:"node_id"`
	VersionID         string             `json:"version_id"`
	EnvPath           string             `json:"env_path"`
	PythonVersion     string             `json:"python_version"`
	PythonFullVersion string             `json:"python_full_version"`
	Status            string             `json:"status"`
	PyprojectTOML     string             `json:"pyproject_toml"`
	Packages          []string           `json:"packages"`
	HostConstraints   []hostdeps.Applied `json:"host_constraints_applied"`
	PackagesInstalled int                `json:"packages_installed"`
	OperationID       int64              `json:"operation_id"`
}

// parsePackages validates request packages and applies the host's constraints.
func (s *Service) parsePackages(specs []string) ([]reqspec.Requirement, []string, []hostdeps.Applied, error) {
	reqs, err := s.opt.Packages.ParseAll(specs)
	if err != nil {
		return nil, nil, nil, errcode.Wrap(errcode.InvalidPackages, err, "")
	}
	out, applied := s.host.Apply(reqs)
	return reqs, out, applied, nil
}

// Create makes a new environment.
func (s *Service) Create(ctx context.Context, c Caller, req CreateRequest) (CreatedEnv, error) {
	var res CreatedEnv
	if err := req.Key.Validate(); err != nil {
		return res, errcode.Wrap(errcode.InvalidID, err, "")
	}
	if req.PythonVersion == "" {
		req.PythonVersion = s.opt.DefaultPython
	}
	if !pythonVersionRe.MatchString(req.PythonVersion) {
		return res, errcode.New(errcode.InvalidRequest, fmt.Sprintf("python_version %q: want a version like 3.11 or 3.11.7", req.PythonVersion))
	}
	_, specs, applied, err := s.parsePackages(req.Packages)
	if err != nil {
		return res, err
	}
	if env, err := s.store.GetEnv(ctx, req.Key); err == nil && env.State != store.StateCreating {
		return res, errcode.New(errcode.EnvAlreadyExists, fmt.Sprintf("environment %s already exists", req.Key))
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return res, dbErr("reading the environment", err)
	}
	o := op{key: req.Key, kind: "create", exclusive: true, caller: c, need: &Need{PythonVersion: req.PythonVersion}, params: map[string]any{
		"python_version": req.PythonVersion, "packages": req.Packages, "applied_packages": specs, "host_constraints_applied": applied,
	}}
	err = s.execute(ctx, o, func(ctx context.Context, r running) (any, error) {
		now := s.now()
		fresh := store.Env{Key: req.Key, State: store.StateCreating, PythonVersion: req.PythonVersion, CreatedAt: now, UpdatedAt: now, LastUsedAt: now}
		err := s.store.CreateEnv(ctx, fresh, now)
		if errors.Is(err, store.ErrExists) {
			// A CREATING row while we hold the exclusive lease is the leftover of a create whose
			// holder died: take it over.
			if old, gerr := s.store.GetEnv(ctx, req.Key); gerr == nil && old.State == store.StateCreating {
				if err = s.store.DeleteEnv(ctx, req.Key, r.lease.ID); err == nil {
					err = s.store.CreateEnv(ctx, fresh, now)
				}
			}
		}
		if errors.Is(err, store.ErrExists) {
			return nil, errcode.New(errcode.EnvAlreadyExists, fmt.Sprintf("environment %s already exists", req.Key))
		}
		if err != nil {
			return nil, dbErr("recording the new environment", err)
		}
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		created, err := r.agent.Create(uctx, req.Key, req.PythonVersion, specs)
		if err != nil {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer dcancel()
			s.clearAfterDeadAgent(dctx, r, req.Key, err)
			if derr := s.store.DeleteEnv(dctx, req.Key, r.lease.ID); derr != nil {
				s.log.Error("removing the record of a failed create", "env", req.Key.String(), "err", derr)
			}
			return nil, err
		}
		if _, err := s.store.CommitRevision(ctx, store.Commit{
			Key: req.Key, LeaseID: r.lease.ID, Now: s.now(), OperationID: r.id, State: store.StateActive,
			PyprojectTOML: created.Files.PyprojectTOML, UvLock: created.Files.UvLock,
			PythonVersion: req.PythonVersion, PythonPath: created.PythonPath, EnvPath: created.EnvPath,
		}); err != nil {
			return nil, dbErr("recording the new environment's files", err)
		}
		res = CreatedEnv{
			WorkflowID: req.Key.WorkflowID, NodeID: req.Key.NodeID, VersionID: req.Key.VersionID,
			EnvPath: created.EnvPath, PythonVersion: req.PythonVersion, PythonFullVersion: created.PythonFullVersion,
			Status: "created", PyprojectTOML: created.Files.PyprojectTOML, Packages: nonNil(specs),
			HostConstraints: nonNilApplied(applied), PackagesInstalled: created.PackagesInstalled, OperationID: r.id,
		}
		return map[string]any{"env_path": created.EnvPath, "python_path": created.PythonPath, "packages_installed": created.PackagesInstalled}, nil
	})
	return res, err
}

// DepsResult answers every dependency operation: the TRD's deps shape plus what was done.
type DepsResult struct {
	WorkflowID      string             `json:"workflow_id"`
	NodeID          string             `json:"node_id"`
	VersionID       string             `json:"version_id"`
	Status          string             `json:"status,omitempty"`
	Packages        []string           `json:"packages,omitempty"`
	HostConstraints []hostdeps.Applied `json:"host_constraints_applied,omitempty"`
	Dependencies    []string           `json:"dependencies"`
	LockedVersions  map[string]string  `json:"locked_versions"`
	Revision        int64              `json:"revision"`
	OperationID     int64              `json:"operation_id,omitempty"`
}

func depsOf(key envid.Key, files Files, revision int64) (DepsResult, error) {
	p, err := pyproject.Parse(files.PyprojectTOML)
	if err != nil {
		return DepsResult{}, errcode.Wrap(errcode.Internal, err, "")
	}
	locked, err := pyproject.LockedVersions(files.UvLock)
	if err != nil {
		return DepsResult{}, errcode.Wrap(errcode.Internal, err, "")
	}
	return DepsResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID,
		Dependencies: p.Dependencies, LockedVersions: locked, Revision: revision}, nil
}

// Deps lists an environment's dependencies with their locked versions, from the database.
func (s *Service) Deps(ctx context.Context, key envid.Key) (DepsResult, error) {
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return DepsResult{}, err
	}
	if err := ready(env); err != nil {
		return DepsResult{}, err
	}
	files, rev, err := s.currentFiles(ctx, key)
	if err != nil {
		return DepsResult{}, err
	}
	return depsOf(key, files, rev.Number)
}

// Mutate adds, removes or updates dependencies.
func (s *Service) Mutate(ctx context.Context, c Caller, key envid.Key, kind MutationKind, packages []string) (DepsResult, error) {
	var res DepsResult
	name, status := kind.names()
	if len(packages) == 0 {
		return res, errcode.New(errcode.InvalidPackages, "packages: at least one package is required")
	}
	reqs, specs, applied, err := s.parsePackages(packages)
	if err != nil {
		return res, err
	}
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	if err := ready(env); err != nil {
		return res, err
	}
	files, base, err := s.currentFiles(ctx, key)
	if err != nil {
		return res, err
	}
	py, err := pyproject.Parse(files.PyprojectTOML)
	if err != nil {
		return res, errcode.Wrap(errcode.Internal, err, "")
	}
	current := py.DependencyIndex()
	m := Mutation{Key: key, Kind: kind, Base: files, PythonPath: env.PythonPath}
	switch kind {
	case Add:
		m.Packages = specs
	case Remove, Update:
		applied = nil
		var missing []string
		for _, r := range reqs {
			have, ok := current[r.Normalized()]
			if !ok {
				missing = append(missing, r.Name)
				continue
			}
			switch {
			case kind == Remove && !r.Bare():
				return res, errcode.New(errcode.InvalidPackages, fmt.Sprintf("remove takes package names, not specifiers: %q", r.String()))
			case kind == Remove:
				m.Packages = append(m.Packages, r.Name)
			case r.Bare():
				// Upgrade to the newest version the current requirement allows.
				m.Packages = append(m.Packages, have)
				m.Upgrade = append(m.Upgrade, r.Name)
			default:
				m.Packages = append(m.Packages, r.String())
				m.Upgrade = append(m.Upgrade, r.Name)
			}
		}
		if len(missing) > 0 {
			return res, errcode.New(errcode.DependencyNotFound, fmt.Sprintf("not a dependency of %s: %s", key, strings.Join(missing, ", ")))
		}
	}
	o := op{key: key, kind: name, exclusive: true, state: store.StateInstalling, caller: c, need: &Need{PythonPath: env.PythonPath},
		params: map[string]any{"packages": packages, "applied_packages": m.Packages, "upgrade": m.Upgrade, "host_constraints_applied": applied}}
	err = s.execute(ctx, o, func(ctx context.Context, r running) (any, error) {
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		out, err := r.agent.Mutate(uctx, m)
		if err != nil {
			err = s.recoverFrom(ctx, r, key, m.Base, env.PythonPath, err)
			s.setStateAfter(ctx, key, err)
			return nil, err
		}
		n, err := s.store.CommitRevision(ctx, store.Commit{Key: key, LeaseID: r.lease.ID, Base: base.Number, Now: s.now(), OperationID: r.id,
			State: store.StateActive, PyprojectTOML: out.Files.PyprojectTOML, UvLock: out.Files.UvLock})
		if err != nil {
			return nil, dbErr("recording the new revision", err)
		}
		res, err = depsOf(key, out.Files, n)
		if err != nil {
			return nil, err
		}
		res.Status, res.Packages, res.HostConstraints, res.OperationID = status, m.Packages, applied, r.id
		return map[string]any{"revision": n, "packages_installed": out.PackagesInstalled}, nil
	})
	return res, err
}

// SyncResult is the TRD's sync response.
type SyncResult struct {
	WorkflowID        string `json:"workflow_id"`
	NodeID            string `json:"node_id"`
	VersionID         string `json:"version_id"`
	Status            string `json:"status"`
	PackagesInstalled int    `json:"packages_installed"`
	Revision          int64  `json:"revision"`
	OperationID       int64  `json:"operation_id"`
}

// Sync rebuilds the .venv from the recorded uv.lock, rewriting the project files first if the
// disk disagrees with the database.
func (s *Service) Sync(ctx context.Context, c Caller, key envid.Key) (SyncResult, error) {
	var res SyncResult
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	if err := ready(env); err != nil {
		return res, err
	}
	files, rev, err := s.currentFiles(ctx, key)
	if err != nil {
		return res, err
	}
	o := op{key: key, kind: "sync", exclusive: true, state: store.StateSyncing, caller: c, need: &Need{PythonPath: env.PythonPath},
		params: map[string]any{"revision": rev.Number}}
	err = s.execute(ctx, o, func(ctx context.Context, r running) (any, error) {
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		n, err := r.agent.Sync(uctx, key, files, env.PythonPath)
		if err != nil {
			err = s.recoverFrom(ctx, r, key, files, env.PythonPath, err)
			s.setStateAfter(ctx, key, err)
			return nil, err
		}
		if err := s.store.SetState(ctx, key, store.StateActive, "", s.now()); err != nil {
			return nil, dbErr("recording the state", err)
		}
		if err := s.store.Touch(ctx, key, s.now()); err != nil {
			return nil, dbErr("recording the use", err)
		}
		res = SyncResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Status: "synced",
			PackagesInstalled: n, Revision: rev.Number, OperationID: r.id}
		return map[string]any{"packages_installed": n}, nil
	})
	return res, err
}

// ExportResult is the TRD's export response.
type ExportResult struct {
	WorkflowID    string `json:"workflow_id"`
	NodeID        string `json:"node_id"`
	VersionID     string `json:"version_id"`
	PyprojectTOML string `json:"pyproject_toml"`
	UvLock        string `json:"uv_lock"`
	Revision      int64  `json:"revision"`
}

// Export returns the current project files, from the database.
func (s *Service) Export(ctx context.Context, key envid.Key) (ExportResult, error) {
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return ExportResult{}, err
	}
	if err := ready(env); err != nil {
		return ExportResult{}, err
	}
	files, rev, err := s.currentFiles(ctx, key)
	if err != nil {
		return ExportResult{}, err
	}
	return ExportResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID,
		PyprojectTOML: files.PyprojectTOML, UvLock: files.UvLock, Revision: rev.Number}, nil
}

// RunRequest is POST .../run.
type RunRequest struct {
	Code    string
	Timeout time.Duration // 0: the default
}

// RunResponse is the outcome of a run.
type RunResponse struct {
	WorkflowID      string `json:"workflow_id"`
	NodeID          string `json:"node_id"`
	VersionID       string `json:"version_id"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	ExitCode        int    `json:"exit_code"`
	DurationMS      int64  `json:"duration_ms"`
	TimedOut        bool   `json:"timed_out"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	OperationID     int64  `json:"operation_id"`
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
	o := op{key: key, kind: "run", exclusive: false, caller: c, need: &Need{PythonPath: env.PythonPath}, params: map[string]any{
		"code_sha256": codeDigest(req.Code), "code_bytes": len(req.Code), "timeout_seconds": req.Timeout.Seconds(),
	}}
	err = s.execute(ctx, o, func(ctx context.Context, r running) (any, error) {
		// The agent enforces the timeout; the RPC gets a little longer to report it.
		rctx, cancel := context.WithTimeout(ctx, req.Timeout+30*time.Second)
		defer cancel()
		out, err := r.agent.Run(rctx, key, req.Code, req.Timeout, s.opt.MaxOutputBytes)
		if terr := s.store.Touch(context.WithoutCancel(ctx), key, s.now()); terr != nil {
			s.log.Warn("recording the use of an environment", "env", key.String(), "err", terr)
		}
		if err != nil {
			return nil, err
		}
		res = RunResponse{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID,
			Stdout: out.Stdout, Stderr: out.Stderr, ExitCode: out.ExitCode, DurationMS: out.Duration.Milliseconds(),
			TimedOut: out.TimedOut, StdoutTruncated: out.StdoutTruncated, StderrTruncated: out.StderrTruncated, OperationID: r.id}
		result := map[string]any{"exit_code": out.ExitCode, "duration_ms": res.DurationMS, "timed_out": out.TimedOut,
			"stdout_bytes": len(out.Stdout), "stderr_bytes": len(out.Stderr)}
		if out.TimedOut {
			return result, &errcode.Error{Code: errcode.ExecutionTimeout,
				Message: fmt.Sprintf("code ran past its timeout of %g seconds and was killed", req.Timeout.Seconds()),
				Details: map[string]any{"stdout": out.Stdout, "stderr": out.Stderr, "duration_ms": res.DurationMS, "timeout": req.Timeout.Seconds()}}
		}
		return result, nil
	})
	return res, err
}

// DeleteResult answers DELETE /envs/{wf}/{node}.
type DeleteResult struct {
	WorkflowID  string `json:"workflow_id"`
	NodeID      string `json:"node_id"`
	VersionID   string `json:"version_id"`
	Status      string `json:"status"`
	BytesFreed  int64  `json:"bytes_freed"`
	OperationID int64  `json:"operation_id"`
}

// Delete removes an environment from the storage and the database (its audit history stays).
func (s *Service) Delete(ctx context.Context, c Caller, key envid.Key) (DeleteResult, error) {
	return s.remove(ctx, c, key, "delete", nil)
}

func (s *Service) remove(ctx context.Context, c Caller, key envid.Key, kind string, params map[string]any) (DeleteResult, error) {
	var res DeleteResult
	if _, err := s.getEnv(ctx, key); err != nil {
		return res, err
	}
	o := op{key: key, kind: kind, exclusive: true, state: store.StateDeleting, caller: c, need: &Need{}, params: params}
	err := s.execute(ctx, o, func(ctx context.Context, r running) (any, error) {
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		freed, err := r.agent.Delete(uctx, key)
		if err != nil {
			s.setStateAfter(ctx, key, err)
			return nil, err
		}
		if err := s.store.DeleteEnv(ctx, key, r.lease.ID); err != nil {
			return nil, dbErr("removing the environment's record", err)
		}
		res = DeleteResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Status: "deleted", BytesFreed: freed, OperationID: r.id}
		return map[string]any{"bytes_freed": freed}, nil
	})
	return res, err
}

// EnvView is an environment as the API shows it.
type EnvView struct {
	WorkflowID    string    `json:"workflow_id"`
	NodeID        string    `json:"node_id"`
	VersionID     string    `json:"version_id"`
	State         string    `json:"state"`
	PythonVersion string    `json:"python_version"`
	PythonPath    string    `json:"python_path"`
	EnvPath       string    `json:"env_path"`
	Revision      int64     `json:"revision"`
	LastError     string    `json:"last_error,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastUsedAt    time.Time `json:"last_used_at"`
}

func (s *Service) view(e store.Env) EnvView {
	state := e.State
	if state == store.StateActive && s.opt.IdleAfter > 0 && s.now().Sub(e.LastUsedAt) > s.opt.IdleAfter {
		state = store.StateIdle
	}
	return EnvView{WorkflowID: e.Key.WorkflowID, NodeID: e.Key.NodeID, VersionID: e.Key.VersionID, State: state,
		PythonVersion: e.PythonVersion, PythonPath: e.PythonPath, EnvPath: e.EnvPath, Revision: e.Revision,
		LastError: e.LastError, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, LastUsedAt: e.LastUsedAt}
}

// Status is GET /envs/{wf}/{node}.
type Status struct {
	EnvView
	Exists     bool      `json:"exists"`
	Operations []string  `json:"operations_in_progress"`
	Disk       *Disk     `json:"disk,omitempty"`
	DiskError  string    `json:"disk_error,omitempty"`
	InStep     bool      `json:"in_step"`
	CheckedAt  time.Time `json:"checked_at"`
}

// Status reports the recorded state and what the agent sees on the storage.
func (s *Service) Status(ctx context.Context, key envid.Key) (Status, error) {
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return Status{}, err
	}
	st := Status{EnvView: s.view(env), Exists: true, Operations: []string{}, CheckedAt: s.now()}
	leases, err := s.store.ListLeases(ctx, key, s.now())
	if err != nil {
		return st, dbErr("reading leases", err)
	}
	exclusive := false
	for _, l := range leases {
		st.Operations = append(st.Operations, l.Operation)
		exclusive = exclusive || l.Exclusive
		if !l.Exclusive && st.State != store.StateError {
			st.State = store.StateRunning
		}
	}
	if !exclusive && transitional(env.State) {
		// The state says an operation is under way but no one holds the environment: its holder
		// died and its lease expired. The files are at the last recorded revision at best.
		st.State = store.StateError
		st.LastError = fmt.Sprintf("interrupted: the %s operation ended without finishing (its control plane or agent stopped); the next successful operation restores the last good revision", strings.ToLower(env.State))
	}
	if env.Revision == 0 {
		return st, nil
	}
	files, _, err := s.currentFiles(ctx, key)
	if err != nil {
		return st, err
	}
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	agent, err := s.agents.Pick(ictx, Need{PythonPath: env.PythonPath})
	if err != nil {
		st.DiskError = err.Error()
		return st, nil
	}
	disk, err := agent.Inspect(ictx, key, files, env.PythonPath)
	if err != nil {
		st.DiskError = err.Error()
		return st, nil
	}
	st.Disk = &disk
	st.InStep = disk.HasPyproject && disk.HasLock && disk.HasVenv && disk.FilesMatch && disk.VenvInSync && disk.InterpreterPresent
	return st, nil
}

func transitional(state string) bool {
	switch state {
	case store.StateCreating, store.StateInstalling, store.StateSyncing, store.StateDeleting:
		return true
	}
	return false
}

// ListResult is GET /envs.
type ListResult struct {
	Environments []EnvView `json:"environments"`
	NextCursor   string    `json:"next_cursor,omitempty"`
}

// List pages through environments, optionally of one workflow.
func (s *Service) List(ctx context.Context, workflowID string, after envid.Key, limit int) (ListResult, []store.Env, error) {
	if workflowID != "" {
		if err := envid.ValidateID("workflow_id", workflowID); err != nil {
			return ListResult{}, nil, errcode.Wrap(errcode.InvalidID, err, "")
		}
	}
	envs, err := s.store.ListEnvs(ctx, store.ListFilter{WorkflowID: workflowID, After: after, Limit: limit + 1})
	if err != nil {
		return ListResult{}, nil, dbErr("listing environments", err)
	}
	more := len(envs) > limit
	if more {
		envs = envs[:limit]
	}
	res := ListResult{Environments: make([]EnvView, 0, len(envs))}
	for _, e := range envs {
		res.Environments = append(res.Environments, s.view(e))
	}
	if !more {
		envs = nil
	}
	return res, envs, nil
}

// OperationView is one audit row.
type OperationView struct {
	ID           int64          `json:"id"`
	Operation    string         `json:"operation"`
	Status       string         `json:"status"`
	ErrorCode    string         `json:"error_code,omitempty"`
	ErrorMessage string         `json:"error_message,omitempty"`
	Actor        string         `json:"actor"`
	RequestID    string         `json:"request_id"`
	Agent        string         `json:"agent"`
	Params       map[string]any `json:"params"`
	Result       map[string]any `json:"result,omitempty"`
	StartedAt    time.Time      `json:"started_at"`
	FinishedAt   *time.Time     `json:"finished_at,omitempty"`
	DurationMS   int64          `json:"duration_ms"`
}

// History is GET /envs/{wf}/{node}/operations.
type History struct {
	WorkflowID string          `json:"workflow_id"`
	NodeID     string          `json:"node_id"`
	VersionID  string          `json:"version_id"`
	Operations []OperationView `json:"operations"`
	NextBefore int64           `json:"next_before,omitempty"`
}

// Operations returns an environment's audit history, newest first. It works for deleted
// environments too: the history outlives them.
func (s *Service) Operations(ctx context.Context, key envid.Key, before int64, limit int) (History, error) {
	ops, err := s.store.ListOperations(ctx, key, before, limit+1)
	if err != nil {
		return History{}, dbErr("reading operations", err)
	}
	h := History{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Operations: []OperationView{}}
	if len(ops) > limit {
		ops = ops[:limit]
		h.NextBefore = ops[len(ops)-1].ID
	}
	for _, o := range ops {
		v := OperationView{ID: o.ID, Operation: o.Kind, Status: o.Status, ErrorCode: o.ErrorCode, ErrorMessage: o.ErrorMessage,
			Actor: o.Actor, RequestID: o.RequestID, Agent: o.Agent, StartedAt: o.StartedAt, DurationMS: o.DurationMS}
		_ = unmarshalObject(o.Params, &v.Params)
		_ = unmarshalObject(o.Result, &v.Result)
		if !o.FinishedAt.IsZero() {
			t := o.FinishedAt
			v.FinishedAt = &t
		}
		h.Operations = append(h.Operations, v)
	}
	if len(h.Operations) == 0 {
		if _, err := s.getEnv(ctx, key); err != nil {
			return h, err
		}
	}
	return h, nil
}

// CleanupRequest is POST /envs/cleanup.
type CleanupRequest struct {
	IdleFor time.Duration // negative: CLEANUP_IDLE_HOURS; 0: everything not in use now
	DryRun  bool
}

// CleanupEntry is one environment cleanup considered.
type CleanupEntry struct {
	WorkflowID string    `json:"workflow_id"`
	NodeID     string    `json:"node_id"`
	VersionID  string    `json:"version_id"`
	LastUsedAt time.Time `json:"last_used_at"`
	BytesFreed int64     `json:"bytes_freed,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// CleanupResult is the outcome of a cleanup pass.
type CleanupResult struct {
	IdleHours float64        `json:"idle_hours"`
	DryRun    bool           `json:"dry_run"`
	Removed   []CleanupEntry `json:"removed"`
	Skipped   []CleanupEntry `json:"skipped"`
	// BytesFreed is what the removals freed, or with a dry run what they would free.
	BytesFreed int64 `json:"bytes_freed"`
	// UsageReports counts the agents whose usage reports were merged before choosing.
	UsageReports int `json:"usage_reports"`
}

// Cleanup removes environments unused for longer than the idle limit; each removal is audited
// as "cleanup". Environments busy with another operation are skipped, not waited for.
func (s *Service) Cleanup(ctx context.Context, c Caller, req CleanupRequest) (CleanupResult, error) {
	if req.IdleFor < 0 {
		req.IdleFor = s.opt.CleanupIdle
	}
	res := CleanupResult{IdleHours: req.IdleFor.Hours(), DryRun: req.DryRun, Removed: []CleanupEntry{}, Skipped: []CleanupEntry{}}
	// Uses seen on the hosts, outside the API, count: an environment a workflow executor runs
	// directly is not idle.
	res.UsageReports = s.CollectUsage(ctx)
	cutoff := s.now().Add(-req.IdleFor)
	idle, err := s.store.IdleEnvs(ctx, cutoff, 1000)
	if err != nil {
		return res, dbErr("finding idle environments", err)
	}
	var measurer Agent // a dry run measures what each removal would free through one agent
	if req.DryRun && len(idle) > 0 {
		measurer, _ = s.agents.Pick(ctx, Need{})
	}
	for _, e := range idle {
		entry := CleanupEntry{WorkflowID: e.Key.WorkflowID, NodeID: e.Key.NodeID, VersionID: e.Key.VersionID, LastUsedAt: e.LastUsedAt}
		if req.DryRun {
			if measurer != nil {
				dctx, cancel := context.WithTimeout(ctx, time.Minute)
				entry.BytesFreed, _ = measurer.DiskUsage(dctx, e.Key)
				cancel()
			}
			res.BytesFreed += entry.BytesFreed
			res.Removed = append(res.Removed, entry)
			continue
		}
		d, err := s.remove(ctx, c, e.Key, "cleanup", map[string]any{"idle_hours": req.IdleFor.Hours(), "last_used_at": e.LastUsedAt})
		if err != nil {
			if errcode.Of(err) == errcode.DBAuditError {
				return res, err
			}
			entry.Reason = err.Error()
			res.Skipped = append(res.Skipped, entry)
			continue
		}
		entry.BytesFreed = d.BytesFreed
		res.BytesFreed += d.BytesFreed
		res.Removed = append(res.Removed, entry)
	}
	return res, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilApplied(a []hostdeps.Applied) []hostdeps.Applied {
	if a == nil {
		return []hostdeps.Applied{}
	}
	return a
}
