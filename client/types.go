package client

import (
	"encoding/json"
	"time"
)

// The API's answers, with the field names of controlplane/api/responses.go as JSON. They are
// defined again here, not imported: the API package pulls in the control plane's domain and
// storage, which a client has no business linking.

// Raw is the answer's JSON exactly as the server sent it, embedded in every top-level result.
type Raw struct{ raw json.RawMessage }

// JSON is the answer as the server sent it.
func (r Raw) JSON() json.RawMessage { return r.raw }

func (r *Raw) setRaw(b []byte) { r.raw = append(json.RawMessage(nil), b...) }

type rawSetter interface{ setRaw([]byte) }

// HostConstraint is one host platform constraint applied to a request (host_constraints_applied).
type HostConstraint struct {
	Requested string `json:"requested"`
	Applied   string `json:"applied"`
}

// CreatedEnv answers POST /envs.
type CreatedEnv struct {
	Raw
	WorkflowID        string           `json:"workflow_id"`
	NodeID            string           `json:"node_id"`
	VersionID         string           `json:"version_id"`
	EnvPath           string           `json:"env_path"`
	PythonVersion     string           `json:"python_version"`
	PythonFullVersion string           `json:"python_full_version"`
	Status            string           `json:"status"`
	PyprojectTOML     string           `json:"pyproject_toml"`
	Packages          []string         `json:"packages"`
	HostConstraints   []HostConstraint `json:"host_constraints_applied"`
	PackagesInstalled int              `json:"packages_installed"`
	Revision          int64            `json:"revision"`
	OperationID       int64            `json:"operation_id"`
	BuildID           string           `json:"build_id"` // the build the environment runs on (shared by identical locks)
}

// DepsResult answers GET deps and every dependency change (add, remove, update); the changes add
// Status, Packages and OperationID.
type DepsResult struct {
	Raw
	WorkflowID      string            `json:"workflow_id"`
	NodeID          string            `json:"node_id"`
	VersionID       string            `json:"version_id"`
	Status          string            `json:"status,omitempty"`
	Packages        []string          `json:"packages,omitempty"`
	HostConstraints []HostConstraint  `json:"host_constraints_applied,omitempty"`
	Dependencies    []string          `json:"dependencies"`
	LockedVersions  map[string]string `json:"locked_versions"`
	Revision        int64             `json:"revision"`
	OperationID     int64             `json:"operation_id,omitempty"`
	BuildID         string            `json:"build_id,omitempty"`
}

// RollbackResult answers POST rollback: the deps of the new current revision, the revision whose
// files and build it took, and whether that build had to be materialised again.
type RollbackResult struct {
	DepsResult
	RolledBackTo int64 `json:"rolled_back_to"`
	Rebuilt      bool  `json:"rebuilt"`
}

// DryRunResult answers a change sent with "dry_run": true (AddDryRun, RemoveDryRun,
// UpdateDryRun): the dependencies and locked versions the change would commit, Revision the
// current one (nothing was committed), and every locked package it would change. Status and
// BuildID stay empty: nothing was done. OperationID is the audit row of the preview.
type DryRunResult struct {
	DepsResult
	DryRun  bool            `json:"dry_run"`
	Changes []PackageChange `json:"changes"`
}

// PackageChange is one locked package a change would add (From nil), remove (To nil) or move
// from one version to another; transitive packages included.
type PackageChange struct {
	Name string  `json:"name"`
	From *string `json:"from"`
	To   *string `json:"to"`
}

// SyncResult answers POST sync.
type SyncResult struct {
	Raw
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

// ExportResult answers GET export: the project files of the environment's current revision.
type ExportResult struct {
	Raw
	WorkflowID    string `json:"workflow_id"`
	NodeID        string `json:"node_id"`
	VersionID     string `json:"version_id"`
	PyprojectTOML string `json:"pyproject_toml"`
	UvLock        string `json:"uv_lock"`
	Revision      int64  `json:"revision"`
}

// The encodings of a run's output on the wire.
const (
	EncodingUTF8   = "utf-8"  // valid UTF-8, as it is
	EncodingBase64 = "base64" // any other bytes, standard base64
)

// RunResult answers POST run. Stdout and Stderr are the exact bytes the code wrote, decoded
// from the wire's encoding (StdoutEncoding, StderrEncoding say which it was). A non-zero ExitCode
// is the code's answer, not an error.
type RunResult struct {
	Raw
	WorkflowID      string
	NodeID          string
	VersionID       string
	Stdout          []byte
	Stderr          []byte
	StdoutEncoding  string
	StderrEncoding  string
	ExitCode        int    // -1 when a signal ended the code
	ExitReason      string // exited, timeout, memory or signal
	Revision        int64  // the revision the code ran against
	Woke            bool   // the environment was hibernated: its build was materialised again first
	Warm            bool   // forked from the build's warm interpreter on the agent, not started cold
	DurationMS      int64
	TimedOut        bool
	StdoutTruncated bool
	StderrTruncated bool
	OperationID     int64
}

// runWire is RunResult as the API sends it.
type runWire struct {
	WorkflowID      string `json:"workflow_id"`
	NodeID          string `json:"node_id"`
	VersionID       string `json:"version_id"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutEncoding  string `json:"stdout_encoding"`
	StderrEncoding  string `json:"stderr_encoding"`
	ExitCode        int    `json:"exit_code"`
	ExitReason      string `json:"exit_reason"`
	Revision        int64  `json:"revision"`
	Woke            bool   `json:"woke,omitempty"`
	Warm            bool   `json:"warm"`
	DurationMS      int64  `json:"duration_ms"`
	TimedOut        bool   `json:"timed_out"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	OperationID     int64  `json:"operation_id"`
}

// UnmarshalJSON reads the API's run answer, decoding each output stream per its encoding.
func (r *RunResult) UnmarshalJSON(b []byte) error {
	var w runWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	stdout, err := decodeOutput(w.Stdout, w.StdoutEncoding)
	if err != nil {
		return err
	}
	stderr, err := decodeOutput(w.Stderr, w.StderrEncoding)
	if err != nil {
		return err
	}
	raw := r.Raw
	*r = RunResult{Raw: raw, WorkflowID: w.WorkflowID, NodeID: w.NodeID, VersionID: w.VersionID,
		Stdout: stdout, Stderr: stderr, StdoutEncoding: w.StdoutEncoding, StderrEncoding: w.StderrEncoding,
		ExitCode: w.ExitCode, ExitReason: w.ExitReason, Revision: w.Revision, Woke: w.Woke, Warm: w.Warm, DurationMS: w.DurationMS,
		TimedOut: w.TimedOut, StdoutTruncated: w.StdoutTruncated, StderrTruncated: w.StderrTruncated,
		OperationID: w.OperationID}
	return nil
}

// PreloadResult answers PUT preload: the environment's new preload list.
type PreloadResult struct {
	Raw
	WorkflowID  string   `json:"workflow_id"`
	NodeID      string   `json:"node_id"`
	VersionID   string   `json:"version_id"`
	Preload     []string `json:"preload"`
	OperationID int64    `json:"operation_id"`
}

// DeleteResult answers DELETE /envs/{wf}/{node}.
type DeleteResult struct {
	Raw
	WorkflowID  string `json:"workflow_id"`
	NodeID      string `json:"node_id"`
	VersionID   string `json:"version_id"`
	Status      string `json:"status"`
	BytesFreed  int64  `json:"bytes_freed"`
	OperationID int64  `json:"operation_id"`
}

// EnvView is an environment as the API shows it (GET /envs items, and the base of Status).
type EnvView struct {
	WorkflowID    string `json:"workflow_id"`
	NodeID        string `json:"node_id"`
	VersionID     string `json:"version_id"`
	State         string `json:"state"`
	PythonVersion string `json:"python_version"`
	PythonPath    string `json:"python_path"`
	EnvPath       string `json:"env_path"`
	Revision      int64  `json:"revision"`
	// BuildID is the current revision's build ("" for an environment made before builds, until
	// its next change); DiskRevision the revision its project directory was last switched to.
	BuildID      string    `json:"build_id"`
	DiskRevision int64     `json:"disk_revision"`
	LastError    string    `json:"last_error,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	LastUsedAt   time.Time `json:"last_used_at"`
	// Preload is the environment's preload list (SetPreload).
	Preload []string `json:"preload"`
}

// Status answers GET /envs/{wf}/{node}.
type Status struct {
	Raw
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
	State             string          `json:"state"` // READY, REMOVED (hibernated) or DAMAGED
	PackagesInstalled int             `json:"packages"`
	SharedWith        int             `json:"shared_with"` // the other environments whose current build it is
	Verified          bool            `json:"verified"`    // every file of every package's RECORD was checked (false: the build is not on disk)
	Intact            bool            `json:"intact"`      // verified and nothing missing or of the wrong size
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
	BuildID            string `json:"build_id"` // the build the project directory's .venv points at
}

// ListResult answers GET /envs: one page; NextCursor continues it ("" on the last page).
type ListResult struct {
	Raw
	Environments []EnvView `json:"environments"`
	NextCursor   string    `json:"next_cursor,omitempty"`
}

// Operation is one audit row of an environment.
type Operation struct {
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

// History answers GET operations: audit rows, newest first; NextBefore continues it (0 at the end).
type History struct {
	Raw
	WorkflowID string      `json:"workflow_id"`
	NodeID     string      `json:"node_id"`
	VersionID  string      `json:"version_id"`
	Operations []Operation `json:"operations"`
	NextBefore int64       `json:"next_before,omitempty"`
}

// CleanupEntry is one environment a cleanup removed, or skipped and why.
type CleanupEntry struct {
	WorkflowID string    `json:"workflow_id"`
	NodeID     string    `json:"node_id"`
	VersionID  string    `json:"version_id"`
	LastUsedAt time.Time `json:"last_used_at"`
	BytesFreed int64     `json:"bytes_freed,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// CleanupResult answers POST /envs/cleanup.
type CleanupResult struct {
	Raw
	IdleHours    float64        `json:"idle_hours"`
	DryRun       bool           `json:"dry_run"`
	Removed      []CleanupEntry `json:"removed"`
	Skipped      []CleanupEntry `json:"skipped"`
	BytesFreed   int64          `json:"bytes_freed"` // with a dry run, what the removals would free
	UsageReports int            `json:"usage_reports"`
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

// Agents answers GET /agents: one shape in both modes; the fleet fields are empty on a single host.
type Agents struct {
	Raw
	Mode   string  `json:"mode"` // "single-host" or "fleet"
	Agents []Agent `json:"agents"`

	// A fleet's.
	FleetID       string            `json:"fleet_id,omitempty"`
	ControlPlane  string            `json:"control_plane,omitempty"`
	GossipAddr    string            `json:"gossip_addr,omitempty"`
	ControlPlanes []string          `json:"control_planes,omitempty"`
	Refused       map[string]string `json:"refused,omitempty"`
}

// Agent is one agent in GET /agents.
type Agent struct {
	ID           string        `json:"agent_id"`
	URL          string        `json:"url"`
	State        string        `json:"state"` // alive, suspect, or (single host) unreachable
	Sandbox      string        `json:"sandbox,omitempty"`
	Version      string        `json:"version"`
	Interpreters []Interpreter `json:"interpreters"`

	// From gossip (a fleet).
	GossipAddr string `json:"gossip_addr,omitempty"`
	Load       int    `json:"load,omitempty"`
	FleetID    string `json:"fleet_id,omitempty"`

	// The single host's probe of its agent.
	Reachable    *bool  `json:"reachable,omitempty"`
	Error        string `json:"error,omitempty"`
	UVVersion    string `json:"uv_version,omitempty"`
	EnvsBasePath string `json:"envs_base_path,omitempty"`
	UVCacheDir   string `json:"uv_cache_dir,omitempty"`
	LinkMode     string `json:"link_mode,omitempty"`
}

// Interpreter is one Python an agent offers.
type Interpreter struct {
	Version string `json:"version"`
	Path    string `json:"path"`
}

// Health answers /healthz.
type Health struct {
	Raw
	Status string `json:"status"`
}

// Readiness answers /readyz: Ready is false when a check failed (the server's 503), with every
// check's outcome ("ok" or why not) in Checks.
type Readiness struct {
	Raw
	Ready  bool              `json:"-"`
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}
