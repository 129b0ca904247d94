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

// EnvView is an environment as the API shows it.
type EnvView struct {
	WorkflowID    string
	NodeID        string
	VersionID     string
	State         string
	PythonVersion string
	PythonPath    string
	EnvPath       string
	Revision      int64
	// BuildID is the current revision's build ("" for the layout before builds); DiskRevision
	// the revision the project directory was last switched to.
	BuildID      string
	DiskRevision int64
	LastError    string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	LastUsedAt   time.Time
	// Preload is the environment's preload list (SetPreload); never nil.
	Preload []string
}

func (s *Service) view(e store.Env) EnvView {
	state := e.State
	if state == store.StateActive && s.opt.IdleAfter > 0 && s.now().Sub(e.LastUsedAt) > s.opt.IdleAfter {
		state = store.StateIdle
	}
	return EnvView{WorkflowID: e.Key.WorkflowID, NodeID: e.Key.NodeID, VersionID: e.Key.VersionID, State: state,
		PythonVersion: e.PythonVersion, PythonPath: e.PythonPath, EnvPath: e.EnvPath, Revision: e.Revision,
		BuildID: e.BuildID, DiskRevision: e.DiskRevision, LastError: e.LastError, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, LastUsedAt: e.LastUsedAt,
		Preload: append([]string{}, e.Preload...)}
}

// Status is GET /envs/{wf}/{node}.
type Status struct {
	EnvView
	Exists     bool
	Operations []string
	Disk       *Disk
	DiskError  string
	InStep     bool
	CheckedAt  time.Time
	// Build is the current build and what verifying it found (nil for the layout before builds).
	Build *BuildStatus
}

// BuildStatus is the current build of an environment in its status.
type BuildStatus struct {
	ID                string
	State             string // READY, REMOVED (hibernated) or DAMAGED
	PackagesInstalled int
	// SharedWith is how many other environments run on it.
	SharedWith int
	// Verified: the agent checked every file every package's RECORD lists (presence and size);
	// Intact is the outcome and Damaged the packages that failed.
	Verified     bool
	Intact       bool
	Damaged      []PackageDamage
	FilesChecked int64
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
	changing := false
	for _, l := range leases {
		st.Operations = append(st.Operations, l.Operation)
		changing = changing || l.Mode != store.LeaseRun
		if l.Mode == store.LeaseRun && (st.State == store.StateActive || st.State == store.StateIdle) {
			st.State = store.StateRunning
		}
	}
	if !changing && transitional(env.State) && env.Revision > 0 {
		// The state says a change is under way but no one holds the environment: its holder died
		// and its lease expired before its commit. Nothing of it was switched: the current build
		// keeps serving, and the maintenance pass settles the state (audited as repair).
		st.State = s.restingState(ctx, key)
		st.LastError = fmt.Sprintf("interrupted: a %s operation ended without finishing (its control plane or agent stopped); the current build keeps serving and the maintenance pass settles it", strings.ToLower(env.State))
	}
	if env.Revision == 0 {
		return st, nil
	}
	files, _, err := s.currentFiles(ctx, key)
	if err != nil {
		return st, err
	}
	if env.BuildID != "" {
		st.Build = &BuildStatus{ID: env.BuildID, Damaged: []PackageDamage{}}
		if b, err := s.store.GetBuild(ctx, env.BuildID); err == nil {
			st.Build.State, st.Build.PackagesInstalled, st.Build.SharedWith = b.State, b.PackagesInstalled, max(0, b.CurrentEnvs-1)
		}
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	agent, err := s.agents.Pick(ictx, Need{PythonPath: env.PythonPath})
	if err != nil {
		st.DiskError = err.Error()
		return st, nil
	}
	disk, err := agent.Inspect(ictx, InspectRequest{Key: key, Expected: files, PythonPath: env.PythonPath,
		Verify: env.BuildID != "", ExpectedBuildID: env.BuildID})
	if err != nil {
		st.DiskError = err.Error()
		return st, nil
	}
	st.Disk = &disk
	st.InStep = disk.HasPyproject && disk.HasLock && disk.HasVenv && disk.FilesMatch && disk.VenvInSync && disk.InterpreterPresent &&
		disk.BuildID == env.BuildID
	if c := disk.Check; c != nil && st.Build != nil {
		st.Build.Verified, st.Build.Intact, st.Build.FilesChecked = c.Complete, c.Complete && c.Intact, c.FilesChecked
		st.Build.Damaged = append(st.Build.Damaged, c.Damaged...)
		st.InStep = st.InStep && st.Build.Intact
		if c.Complete && !c.Intact && st.Build.State == store.BuildReady {
			s.recordCheck(ctx, c)
			st.Build.State = store.BuildDamaged
		}
	}
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
	Environments []EnvView
	NextCursor   string
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
	ID           int64
	Operation    string
	Status       string
	ErrorCode    string
	ErrorMessage string
	Actor        string
	RequestID    string
	Agent        string
	Params       map[string]any
	Result       map[string]any
	StartedAt    time.Time
	FinishedAt   *time.Time
	DurationMS   int64
}

func operationView(o store.Operation) OperationView {
	v := OperationView{ID: o.ID, Operation: o.Kind, Status: o.Status, ErrorCode: o.ErrorCode, ErrorMessage: o.ErrorMessage,
		Actor: o.Actor, RequestID: o.RequestID, Agent: o.Agent, StartedAt: o.StartedAt, DurationMS: o.DurationMS}
	_ = unmarshalObject(o.Params, &v.Params)
	_ = unmarshalObject(o.Result, &v.Result)
	if !o.FinishedAt.IsZero() {
		t := o.FinishedAt
		v.FinishedAt = &t
	}
	return v
}

// History is GET /envs/{wf}/{node}/operations.
type History struct {
	WorkflowID string
	NodeID     string
	VersionID  string
	Operations []OperationView
	NextBefore int64
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
		h.Operations = append(h.Operations, operationView(o))
	}
	if len(h.Operations) == 0 {
		if _, err := s.getEnv(ctx, key); err != nil {
			return h, err
		}
	}
	return h, nil
}

// ExportResult is the TRD's export response.
type ExportResult struct {
	WorkflowID    string
	NodeID        string
	VersionID     string
	PyprojectTOML string
	UvLock        string
	Revision      int64
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
