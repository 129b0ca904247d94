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

// MutationKind is the uv command a mutation runs.
type MutationKind int

// The mutations.
const (
	Add MutationKind = iota + 1
	Remove
	Update
)

// names returns the audit name and the response status of a mutation.
func (k MutationKind) names() (string, string) {
	switch k {
	case Add:
		return "add", "added"
	case Remove:
		return "remove", "removed"
	default:
		return "update", "updated"
	}
}

// Created is what an agent reports after creating a project.
type Created struct {
	Files             Files
	EnvPath           string
	PythonPath        string
	PythonFullVersion string
	PackagesInstalled int
}

// Mutation asks an agent to change a project starting from Base, the last good revision.
type Mutation struct {
	Key  envid.Key
	Kind MutationKind
	Base Files
	// BaseRevision is Base's number and OperationID the audited operation's id: with them the
	// agent refuses a holder that lost its lease and comes back with an older base.
	BaseRevision int64
	OperationID  int64
	PythonPath   string
	Packages     []string
	Upgrade      []string
}

// SyncRequest asks an agent to put revision Revision (Files) on disk and install exactly its lock.
type SyncRequest struct {
	Key         envid.Key
	Files       Files
	Revision    int64
	OperationID int64
	PythonPath  string
}

// Mutated is the project after a successful mutation.
type Mutated struct {
	Files             Files
	PackagesInstalled int
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
}

// Agent runs uv and user code on a host that mounts the shared storage. Errors carry an
// errcode.Coded (an *AgentError for what the agent reported) where the caller must branch
// (resolution failure, unavailable agent, ...).
type Agent interface {
	Name() string
	Create(ctx context.Context, key envid.Key, python string, packages []string, operationID int64) (Created, error)
	Mutate(ctx context.Context, m Mutation) (Mutated, error)
	Sync(ctx context.Context, req SyncRequest) (installed int, err error)
	Inspect(ctx context.Context, key envid.Key, expected Files, pythonPath string) (Disk, error)
	Run(ctx context.Context, key envid.Key, code string, timeout time.Duration, maxOutput int64) (RunResult, error)
	Delete(ctx context.Context, key envid.Key) (bytesFreed int64, err error)
	// DiskUsage is what deleting the environment would free (files hardlinked from the cache stay).
	DiskUsage(ctx context.Context, key envid.Key) (int64, error)
	// Usage returns the uses the agent's host saw after since (zero: every use it knows).
	Usage(ctx context.Context, since time.Time) ([]Use, error)
	// PruneCache removes unused entries from the shared uv cache.
	PruneCache(ctx context.Context) (before, after int64, err error)
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
	// exact path may touch it (elsewhere uv would delete and recreate the shared .venv).
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
