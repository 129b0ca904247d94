package api

import (
	"encoding/base64"
	"time"
	"unicode/utf8"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/hostdeps"
)

// The REST responses: the TRD's field names as JSON. envs returns domain values with the same
// fields and no wire names; each flat one converts to its response type directly (Go ignores
// struct tags in conversions), so a field added on one side and not the other fails to compile.

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
	Revision          int64              `json:"revision"` // the revision the create committed
	OperationID       int64              `json:"operation_id"`
	BuildID           string             `json:"build_id"`
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
	// Shown by the wrappers below, only where they apply.
	DryRun       bool                 `json:"-"`
	Changes      []envs.PackageChange `json:"-"`
	RolledBackTo int64                `json:"-"`
	Rebuilt      bool                 `json:"-"`
	BuildID      string               `json:"build_id,omitempty"`
}

// DryRunResult answers a change with "dry_run": true: the deps the change would leave, the
// revision it would start from (unchanged), and the difference of the locks.
type DryRunResult struct {
	DepsResult
	DryRun  bool            `json:"dry_run"`
	Changes []PackageChange `json:"changes"`
}

// PackageChange is one locked package a change adds (from null), removes (to null) or moves.
type PackageChange struct {
	Name string  `json:"name"`
	From *string `json:"from"`
	To   *string `json:"to"`
}

func dryRunOf(r envs.DepsResult) DryRunResult {
	out := DryRunResult{DepsResult: DepsResult(r), DryRun: true, Changes: make([]PackageChange, 0, len(r.Changes))}
	for _, c := range r.Changes {
		out.Changes = append(out.Changes, PackageChange(c))
	}
	return out
}

// RollbackResult answers POST .../rollback: the deps shape of the new current revision, which
// revision's files and build it took, and whether that build had to be materialised again.
type RollbackResult struct {
	DepsResult
	RolledBackTo int64 `json:"rolled_back_to"`
	Rebuilt      bool  `json:"rebuilt"`
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
	BuildID           string `json:"build_id"`
	Repaired          bool   `json:"repaired"` // the build was damaged and was replaced
	Rebuilt           bool   `json:"rebuilt"`  // the build was materialised by this sync
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

// RunResponse is the outcome of a run.
type RunResponse struct {
	WorkflowID      string `json:"workflow_id"`
	NodeID          string `json:"node_id"`
	VersionID       string `json:"version_id"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutEncoding  string `json:"stdout_encoding"` // see Output
	StderrEncoding  string `json:"stderr_encoding"`
	ExitCode        int    `json:"exit_code"`
	ExitReason      string `json:"exit_reason"`
	Revision        int64  `json:"revision"`
	Woke            bool   `json:"woke,omitempty"` // the build was hibernated and was materialised again first
	Warm            bool   `json:"warm"`           // forked from the build's warm interpreter (docs/sandbox.md)
	DurationMS      int64  `json:"duration_ms"`
	TimedOut        bool   `json:"timed_out"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	OperationID     int64  `json:"operation_id"`
}

// PreloadResult answers PUT /envs/{wf}/{node}/preload.
type PreloadResult struct {
	WorkflowID  string   `json:"workflow_id"`
	NodeID      string   `json:"node_id"`
	VersionID   string   `json:"version_id"`
	Preload     []string `json:"preload"`
	OperationID int64    `json:"operation_id"`
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
	BuildID       string    `json:"build_id"`
	DiskRevision  int64     `json:"disk_revision"`
	LastError     string    `json:"last_error,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastUsedAt    time.Time `json:"last_used_at"`
	Preload       []string  `json:"preload"` // the modules its warm interpreter imports before any run
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
	Build      *Build    `json:"build,omitempty"`
}

// Build is an environment's current build in its status, with what verifying it found.
type Build struct {
	ID                string          `json:"id"`
	State             string          `json:"state"`
	PackagesInstalled int             `json:"packages"`
	SharedWith        int             `json:"shared_with"`
	Verified          bool            `json:"verified"`
	Intact            bool            `json:"intact"`
	Damaged           []PackageDamage `json:"damaged"`
	FilesChecked      int64           `json:"files_checked"`
}

// PackageDamage is one installed package whose files do not match its RECORD.
type PackageDamage struct {
	Name           string   `json:"name"`
	Version        string   `json:"version"`
	Missing        []string `json:"missing"`
	WrongSize      []string `json:"wrong_size"`
	MissingCount   int      `json:"missing_count"`
	WrongSizeCount int      `json:"wrong_size_count"`
}

// ListResult is GET /envs.
type ListResult struct {
	Environments []EnvView `json:"environments"`
	NextCursor   string    `json:"next_cursor,omitempty"`
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
	// BuildsRemoved are the builds no environment's current revision referenced; BuildsSkipped
	// those a run held.
	BuildsRemoved []BuildEntry `json:"builds_removed"`
	BuildsSkipped []BuildEntry `json:"builds_skipped"`
}

// BuildEntry is one build a cleanup considered.
type BuildEntry struct {
	BuildID     string    `json:"build_id"`
	CurrentEnvs int       `json:"current_envs"`
	LastUsedAt  time.Time `json:"last_used_at"`
	BytesFreed  int64     `json:"bytes_freed"`
	Reason      string    `json:"reason,omitempty"`
}

// PruneResult is a cache prune.
type PruneResult struct {
	Pruned      bool   `json:"pruned"`
	Reason      string `json:"reason,omitempty"`
	Agent       string `json:"agent,omitempty"`
	BytesBefore int64  `json:"bytes_before"`
	BytesAfter  int64  `json:"bytes_after"`
}

// Disk is an agent's view of an environment on the shared storage.
type Disk struct {
	Exists             bool             `json:"exists"`
	HasPyproject       bool             `json:"pyproject_toml"`
	HasLock            bool             `json:"uv_lock"`
	HasVenv            bool             `json:"venv"`
	FilesMatch         bool             `json:"files_match_revision"`
	VenvInSync         bool             `json:"venv_in_sync"`
	InterpreterPresent bool             `json:"interpreter_present"`
	PackagesInstalled  int              `json:"packages_installed"`
	EnvPath            string           `json:"env_path"`
	BuildID            string           `json:"build_id"` // the build the .venv points at ("" before builds)
	Check              *envs.BuildCheck `json:"-"`
}

func statusOf(s envs.Status) Status {
	out := Status{EnvView: EnvView(s.EnvView), Exists: s.Exists, Operations: s.Operations, DiskError: s.DiskError,
		InStep: s.InStep, CheckedAt: s.CheckedAt}
	if s.Disk != nil {
		d := Disk(*s.Disk)
		out.Disk = &d
	}
	if b := s.Build; b != nil {
		out.Build = &Build{ID: b.ID, State: b.State, PackagesInstalled: b.PackagesInstalled, SharedWith: b.SharedWith,
			Verified: b.Verified, Intact: b.Intact, FilesChecked: b.FilesChecked, Damaged: make([]PackageDamage, 0, len(b.Damaged))}
		for _, p := range b.Damaged {
			out.Build.Damaged = append(out.Build.Damaged, PackageDamage{Name: p.Name, Version: p.Version, Missing: nonNil(p.Missing),
				WrongSize: nonNil(p.WrongSize), MissingCount: p.MissingCount, WrongSizeCount: p.WrongSizeCount})
		}
	}
	return out
}

func listOf(l envs.ListResult) ListResult {
	out := ListResult{Environments: make([]EnvView, 0, len(l.Environments)), NextCursor: l.NextCursor}
	for _, e := range l.Environments {
		out.Environments = append(out.Environments, EnvView(e))
	}
	return out
}

func historyOf(h envs.History) History {
	out := History{WorkflowID: h.WorkflowID, NodeID: h.NodeID, VersionID: h.VersionID,
		Operations: make([]OperationView, 0, len(h.Operations)), NextBefore: h.NextBefore}
	for _, o := range h.Operations {
		out.Operations = append(out.Operations, OperationView(o))
	}
	return out
}

func cleanupOf(c envs.CleanupResult) CleanupResult {
	out := CleanupResult{IdleHours: c.IdleHours, DryRun: c.DryRun, Removed: make([]CleanupEntry, 0, len(c.Removed)),
		Skipped: make([]CleanupEntry, 0, len(c.Skipped)), BytesFreed: c.BytesFreed, UsageReports: c.UsageReports}
	for _, e := range c.Removed {
		out.Removed = append(out.Removed, CleanupEntry(e))
	}
	for _, e := range c.Skipped {
		out.Skipped = append(out.Skipped, CleanupEntry(e))
	}
	out.BuildsRemoved, out.BuildsSkipped = make([]BuildEntry, 0, len(c.BuildsRemoved)), make([]BuildEntry, 0, len(c.BuildsSkipped))
	for _, b := range c.BuildsRemoved {
		out.BuildsRemoved = append(out.BuildsRemoved, BuildEntry(b))
	}
	for _, b := range c.BuildsSkipped {
		out.BuildsSkipped = append(out.BuildsSkipped, BuildEntry(b))
	}
	return out
}

// The encodings of a run's output in an answer.
const (
	EncodingUTF8   = "utf-8"  // the bytes are valid UTF-8 and stand as they are
	EncodingBase64 = "base64" // they are not: standard base64 of the exact bytes, nothing lost
)

// Output is how a run's output stream goes into JSON: as text when it is valid UTF-8, otherwise
// base64 with a flag, so binary output comes back byte for byte instead of losing every invalid
// byte to U+FFFD.
func Output(b []byte) (text, encoding string) {
	if utf8.Valid(b) {
		return string(b), EncodingUTF8
	}
	return base64.StdEncoding.EncodeToString(b), EncodingBase64
}

func runResponse(r envs.RunResponse) RunResponse {
	out := RunResponse{WorkflowID: r.WorkflowID, NodeID: r.NodeID, VersionID: r.VersionID,
		ExitCode: r.ExitCode, ExitReason: r.ExitReason, Revision: r.Revision, Woke: r.Woke, Warm: r.Warm, DurationMS: r.DurationMS, TimedOut: r.TimedOut,
		StdoutTruncated: r.StdoutTruncated, StderrTruncated: r.StderrTruncated, OperationID: r.OperationID}
	out.Stdout, out.StdoutEncoding = Output(r.Stdout)
	out.Stderr, out.StderrEncoding = Output(r.Stderr)
	return out
}

// AgentsResponse is GET /agents: the same shape in both modes, the single host's a subset of the
// fleet's (no fleet fields, no gossip fields per agent).
type AgentsResponse struct {
	Mode   string       `json:"mode"` // "single-host" or "fleet"
	Agents []AgentEntry `json:"agents"`
	*FleetFields
}

// FleetFields are GET /agents' fields of a fleet.
type FleetFields struct {
	FleetID       string            `json:"fleet_id"`
	ControlPlane  string            `json:"control_plane"`
	GossipAddr    string            `json:"gossip_addr"`
	ControlPlanes []string          `json:"control_planes"`
	Refused       map[string]string `json:"refused"`
}

// AgentEntry is one agent in GET /agents.
type AgentEntry struct {
	ID           string        `json:"agent_id"`
	URL          string        `json:"url"`
	State        string        `json:"state"` // alive, suspect, or (single host) unreachable
	Sandbox      string        `json:"sandbox,omitempty"`
	Version      string        `json:"version"`
	Interpreters []Interpreter `json:"interpreters"`
	*GossipFields
	*ProbeFields
}

// Interpreter is one Python an agent offers.
type Interpreter struct {
	Version string `json:"version"`
	Path    string `json:"path"`
}

// GossipFields are what a fleet gossips about an agent.
type GossipFields struct {
	GossipAddr string `json:"gossip_addr"`
	Load       int    `json:"load"`
	FleetID    string `json:"fleet_id"`
}

// ProbeFields are the single host's answer of its agent, asked for this response.
type ProbeFields struct {
	Reachable    bool   `json:"reachable"`
	Error        string `json:"error,omitempty"`
	UVVersion    string `json:"uv_version,omitempty"`
	EnvsBasePath string `json:"envs_base_path,omitempty"`
	UVCacheDir   string `json:"uv_cache_dir,omitempty"`
	LinkMode     string `json:"link_mode,omitempty"`
}

func agentsOf(v envs.AgentsView) AgentsResponse {
	out := AgentsResponse{Mode: v.Mode, Agents: make([]AgentEntry, 0, len(v.Agents))}
	if m := v.Fleet; m != nil {
		out.FleetFields = &FleetFields{FleetID: m.FleetID, ControlPlane: m.ControlPlane, GossipAddr: m.GossipAddr,
			ControlPlanes: nonNil(m.ControlPlanes), Refused: m.Refused}
		if out.Refused == nil {
			out.Refused = map[string]string{}
		}
	}
	for _, a := range v.Agents {
		e := AgentEntry{ID: a.ID, URL: a.URL, State: a.State, Sandbox: a.Sandbox, Version: a.Version,
			Interpreters: make([]Interpreter, 0, len(a.Interpreters))}
		for _, p := range a.Interpreters {
			e.Interpreters = append(e.Interpreters, Interpreter(p))
		}
		if g := a.Gossip; g != nil {
			e.GossipFields = &GossipFields{GossipAddr: g.Addr, Load: g.Load, FleetID: g.FleetID}
		}
		if p := a.Probe; p != nil {
			e.ProbeFields = &ProbeFields{Reachable: p.Reachable, Error: p.Error, UVVersion: p.Storage.UVVersion,
				EnvsBasePath: p.Storage.EnvsBasePath, UVCacheDir: p.Storage.UVCacheDir, LinkMode: p.Storage.LinkMode}
		}
		out.Agents = append(out.Agents, e)
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
