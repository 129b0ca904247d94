package envs

import (
	"context"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Files is one revision of an environment's project files.
type Files struct {
	PyprojectTOML string
	UvLock        string
}

// MutationKind is the uv command a change resolves with (in a staging copy, never in place).
type MutationKind int

// The kinds of resolution.
const (
	Add MutationKind = iota + 1
	Remove
	Update
	// CreateLock is the resolution of a new environment: a fresh pyproject.toml, then uv add.
	CreateLock
)

// names returns the audit name and the response status of a mutation.
func (k MutationKind) names() (string, string) {
	switch k {
	case Add:
		return "add", "added"
	case Remove:
		return "remove", "removed"
	case CreateLock:
		return "create", "created"
	default:
		return "update", "updated"
	}
}

// LockRequest asks an agent for a resolution in a private staging copy: nothing of the
// environment or of any build is written.
type LockRequest struct {
	Key  envid.Key
	Kind MutationKind
	// Base is the revision the change starts from (empty for CreateLock).
	Base Files
	// PythonPath is the interpreter an existing environment is bound to; PythonVersion the
	// version a create resolves for.
	PythonPath    string
	PythonVersion string
	Packages      []string
	Upgrade       []string
	OperationID   int64
}

// Locked is the outcome of a resolution: the new revision's files.
type Locked struct {
	Files             Files
	PythonPath        string
	PythonFullVersion string
}

// BuildRequest asks an agent to make sure the build of Files for PythonPath exists complete.
type BuildRequest struct {
	Files       Files
	PythonPath  string
	OperationID int64
	// ReplaceDamaged sets a damaged build of the same identity aside and materialises it afresh.
	ReplaceDamaged bool
}

// Build is an installed environment materialised once for an identity (lock content,
// interpreter, install settings) on the shared storage, never modified once complete.
type Build struct {
	ID                string
	VenvPath          string // <ENVS_BASE_PATH>/.builds/<id>/.venv
	PythonPath        string
	PythonFullVersion string
	PackagesInstalled int
	ExclusiveBytes    int64
	// Created: this call materialised it (false: it existed complete already).
	Created     bool
	CompletedAt time.Time
	LastUsedAt  time.Time
}

// SwitchRequest points an environment's project directory at a committed revision and its build.
type SwitchRequest struct {
	Key         envid.Key
	Files       Files
	BuildID     string
	Revision    int64
	OperationID int64
}

// InspectRequest asks what an agent sees of an environment on the shared storage.
type InspectRequest struct {
	Key        envid.Key
	Expected   Files
	PythonPath string
	// Verify checks the build (ExpectedBuildID, else the one the .venv points at) against every
	// installed package's RECORD.
	Verify          bool
	ExpectedBuildID string
}

// Disk is an agent's view of an environment on the shared storage.
type Disk struct {
	Exists             bool
	HasPyproject       bool
	HasLock            bool
	HasVenv            bool
	FilesMatch         bool
	VenvInSync         bool
	InterpreterPresent bool
	PackagesInstalled  int
	EnvPath            string
	// BuildID is the build the .venv points at ("" for the layout before builds).
	BuildID string
	// Check is the verification of the build, when asked for.
	Check *BuildCheck
}

// BuildCheck is a build verified against its packages' RECORD files (presence and size).
type BuildCheck struct {
	BuildID      string
	Complete     bool
	Intact       bool
	Damaged      []PackageDamage
	FilesChecked int64
	BytesChecked int64
}

// PackageDamage is one installed distribution whose files do not match its RECORD.
type PackageDamage struct {
	Name           string
	Version        string
	Missing        []string // at most 20, relative to site-packages
	WrongSize      []string
	MissingCount   int
	WrongSizeCount int
}

// RunSpec is one run of user code.
type RunSpec struct {
	Key envid.Key
	// BuildID is the build to run with ("" runs the environment's own .venv, the layout before
	// builds). A build that is not complete fails with BUILD_MISSING.
	BuildID   string
	Code      string
	Timeout   time.Duration
	MaxOutput int64
	// Preload is the environment's preload list, for the build's warm interpreter.
	Preload []string
	// Cold: a fresh interpreter, not one forked from a warm interpreter.
	Cold bool
}

// RunResult is the outcome of user code.
type RunResult struct {
	// Stdout and Stderr are the bytes the code wrote, exactly (not necessarily UTF-8).
	Stdout   []byte
	Stderr   []byte
	ExitCode int
	// ExitReason says how the run ended: exited, timeout, memory (the run's memory bound) or signal.
	ExitReason      string
	Duration        time.Duration
	TimedOut        bool
	StdoutTruncated bool
	StderrTruncated bool
	// Warm: the agent forked the run from the build's warm interpreter (the answer is the same
	// as a cold run's; this says which path served it).
	Warm bool
}

// RemovedBuild is the outcome of RemoveBuild.
type RemovedBuild struct {
	Existed bool
	// InUse: a run holds the build; nothing was removed.
	InUse      bool
	BytesFreed int64
}

// Agent runs uv and user code on a host that mounts the shared storage. Errors carry an
// errcode.Coded (an *AgentError for what the agent reported) where the caller must branch
// (resolution failure, unavailable agent, a missing build, ...).
type Agent interface {
	Name() string
	// Lock resolves a change in a staging copy; Build materialises the build of the result
	// beside every other; Switch points the project directory at a committed revision.
	Lock(ctx context.Context, req LockRequest) (Locked, error)
	Build(ctx context.Context, req BuildRequest) (Build, error)
	Switch(ctx context.Context, req SwitchRequest) (changed bool, err error)
	Inspect(ctx context.Context, req InspectRequest) (Disk, error)
	Run(ctx context.Context, spec RunSpec) (RunResult, error)
	Delete(ctx context.Context, key envid.Key) (bytesFreed int64, err error)
	// DiskUsage is what deleting the environment would free (files hardlinked from the cache stay).
	DiskUsage(ctx context.Context, key envid.Key) (int64, error)
	// Usage returns the uses the agent's host saw after since (zero: every use it knows): runs
	// through it and its live processes. With storageCheck it also reads the shared storage's use
	// signal of those environments (one agent's look serves the fleet) and reports those used.
	Usage(ctx context.Context, since time.Time, storageCheck []envid.Key) ([]Use, error)
	// PruneCache removes unused entries from the shared uv cache.
	PruneCache(ctx context.Context) (before, after int64, err error)
	// ListBuilds lists every build directory on the shared storage, complete or not.
	ListBuilds(ctx context.Context) ([]Build, error)
	// RemoveBuild removes a build no run holds.
	RemoveBuild(ctx context.Context, id string) (RemovedBuild, error)
	Ping(ctx context.Context) error
}

// Use is the last use of an environment an agent saw.
type Use struct {
	Key    envid.Key
	At     time.Time
	Source string
}

// Need says what an agent must offer to take an operation.
type Need struct {
	// PythonPath is the interpreter an existing environment is bound to: only an agent with that
	// exact path may build or run it.
	PythonPath string
	// PythonVersion is the version a create asks for.
	PythonVersion string
	// Avoid names an agent not to pick (it just failed).
	Avoid string
}

// Agents are the agents as the lifecycle sees it: a fleet's, found by gossip, or a single host's.
type Agents interface {
	// Pick chooses a live agent that meets need, the least loaded first. None: an
	// *errcode.Error with NO_AGENT_AVAILABLE.
	Pick(ctx context.Context, need Need) (Agent, error)
	// All returns every live agent.
	All(ctx context.Context) []Agent
	// Gone reports whether the named agent is confirmed gone (it left, was declared dead, or
	// refuses connections), so that its unfinished work can be taken over safely.
	Gone(ctx context.Context, name string) bool
}

// One is a single host: one agent at a fixed address (AGENT_URL), no gossip, no fleet.
func One(a Agent) *Single { return &Single{a} }

// Single is the agents of a single host (One).
type Single struct{ a Agent }

var (
	_ Agents = (*Single)(nil)
	_ Viewer = (*Single)(nil)
)

// Pick implements Agents.
func (s *Single) Pick(_ context.Context, need Need) (Agent, error) {
	if need.Avoid == s.a.Name() {
		return nil, errcode.New(errcode.NoAgentAvailable, fmt.Sprintf("no agent other than %s is configured", s.a.Name()))
	}
	return s.a, nil
}

// All implements Agents.
func (s *Single) All(context.Context) []Agent { return []Agent{s.a} }

// Gone implements Agents.
func (s *Single) Gone(ctx context.Context, name string) bool {
	if name != s.a.Name() {
		return true
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.a.Ping(pctx) != nil
}
