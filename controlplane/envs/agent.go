package envs

import (
	"context"
	"time"

	"github.com/envfabric/envfabric/shared/envid"
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
	Key        envid.Key
	Kind       MutationKind
	Base       Files
	PythonPath string
	Packages   []string
	Upgrade    []string
}

// Mutated is the project after a successful mutation.
type Mutated struct {
	Files             Files
	PackagesInstalled int
}

// Disk is an agent's view of an environment on the shared storage.
type Disk struct {
	Exists             bool   `json:"exists"`
	HasPyproject       bool   `json:"pyproject_toml"`
	HasLock            bool   `json:"uv_lock"`
	HasVenv            bool   `json:"venv"`
	FilesMatch         bool   `json:"files_match_revision"`
	VenvInSync         bool   `json:"venv_in_sync"`
	InterpreterPresent bool   `json:"interpreter_present"`
	PackagesInstalled  int    `json:"packages_installed"`
	EnvPath            string `json:"env_path"`
}

// RunResult is the outcome of user code.
type RunResult struct {
	Stdout          string
	Stderr          string
	ExitCode        int
	Duration        time.Duration
	TimedOut        bool
	StdoutTruncated bool
	StderrTruncated bool
}

// Agent runs uv and user code on a host that mounts the shared storage. Errors carry an
// *errcode.Error where the caller must branch (resolution failure, unavailable agent, ...).
type Agent interface {
	Name() string
	Create(ctx context.Context, key envid.Key, python string, packages []string) (Created, error)
	Mutate(ctx context.Context, m Mutation) (Mutated, error)
	Sync(ctx context.Context, key envid.Key, files Files, pythonPath string) (installed int, err error)
	Inspect(ctx context.Context, key envid.Key, expected Files, pythonPath string) (Disk, error)
	Run(ctx context.Context, key envid.Key, code string, timeout time.Duration, maxOutput int64) (RunResult, error)
	Delete(ctx context.Context, key envid.Key) (bytesFreed int64, err error)
	Ping(ctx context.Context) error
}
