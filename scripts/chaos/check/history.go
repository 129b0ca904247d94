// Package check decides, from a recorded history and what the system shows once it is quiet,
// whether Environment Fabric kept its promises under faults: every acknowledged mutation is
// reflected and none that failed is, the database, the files and .venv agree, no lease outlives
// its TTL, no audit row stays open, no environment is stuck, and no answer is an undocumented
// error. It is pure: the chaos harness (scripts/chaos) gathers the input, Check judges it, and
// the tests feed it small synthetic histories.
package check

import (
	"encoding/json"
	"time"
)

// Operation kinds a client sends. The mutating ones are audited under the same names.
const (
	KindCreate = "create"
	KindAdd    = "add"
	KindRemove = "remove"
	KindUpdate = "update"
	KindSync   = "sync"
	KindRun    = "run"
	KindDelete = "delete"
	// KindRollback makes an earlier revision's files (and build) current again, as a new revision.
	KindRollback = "rollback"
	KindDeps     = "deps" // GET deps: a read, never audited
)

// Audited reports whether operations of kind write an audit row.
func Audited(kind string) bool {
	switch kind {
	case KindCreate, KindAdd, KindRemove, KindUpdate, KindSync, KindRun, KindDelete, KindRollback:
		return true
	}
	return false
}

// Outcome is what a client can conclude from an answer.
type Outcome string

const (
	// OK: a 2xx answer; the operation is acknowledged.
	OK Outcome = "ok"
	// Fail: an error answer; the operation definitely did not take effect.
	Fail Outcome = "fail"
	// Unknown: no answer (timeout, connection refused or reset); it may or may not have happened.
	Unknown Outcome = "unknown"
)

// Op is one request of the history and its answer.
type Op struct {
	Index     int       `json:"index"`
	Client    int       `json:"client"`
	RequestID string    `json:"request_id"`
	CP        string    `json:"control_plane"`
	Kind      string    `json:"kind"`
	Env       string    `json:"env"` // "workflow/node"
	Packages  []string  `json:"packages,omitempty"`
	Target    int64     `json:"target_revision,omitempty"` // a rollback's
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	// Status is the HTTP status, 0 when there was no answer (then TransportErr says why).
	Status       int    `json:"status"`
	TransportErr string `json:"transport_error,omitempty"`
	Body         string `json:"body,omitempty"`

	// Decoded from Body (Decode).
	Code        string   `json:"code,omitempty"` // error code of an error answer
	Revision    int64    `json:"revision,omitempty"`
	OperationID int64    `json:"operation_id,omitempty"`
	Deps        []string `json:"dependencies,omitempty"`
	HasDeps     bool     `json:"has_dependencies,omitempty"`
	Stdout      string   `json:"stdout,omitempty"`
	ExitCode    int      `json:"exit_code,omitempty"`
}

// Outcome classifies the answer.
func (o Op) Outcome() Outcome {
	switch {
	case o.Status == 0:
		return Unknown
	case o.Status >= 200 && o.Status < 300:
		return OK
	case o.Code == "":
		// An error status without the API's error body did not come from the API's error edge
		// (a proxy, a crash mid-answer): it says nothing certain about the operation.
		return Unknown
	default:
		return Fail
	}
}

// Decode fills the decoded fields from Body. A body that is not the expected JSON leaves them
// empty; the checker reports what that means.
func (o *Op) Decode() {
	var b struct {
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
		Revision     int64     `json:"revision"`
		OperationID  int64     `json:"operation_id"`
		Dependencies *[]string `json:"dependencies"`
		Stdout       string    `json:"stdout"`
		ExitCode     int       `json:"exit_code"`
	}
	if json.Unmarshal([]byte(o.Body), &b) != nil {
		return
	}
	if b.Error != nil {
		o.Code = b.Error.Code
		return
	}
	o.Revision, o.OperationID, o.Stdout, o.ExitCode = b.Revision, b.OperationID, b.Stdout, b.ExitCode
	if b.Dependencies != nil {
		o.Deps, o.HasDeps = *b.Dependencies, true
	}
}

// AuditRow is one env_operations row as GET /envs/{wf}/{node}/operations shows it.
type AuditRow struct {
	ID           int64          `json:"id"`
	Env          string         `json:"env"`
	Operation    string         `json:"operation"`
	Status       string         `json:"status"`
	ErrorCode    string         `json:"error_code,omitempty"`
	ErrorMessage string         `json:"error_message,omitempty"`
	RequestID    string         `json:"request_id"`
	Agent        string         `json:"agent"`
	Params       map[string]any `json:"params"`
	Result       map[string]any `json:"result,omitempty"`
	StartedAt    time.Time      `json:"started_at"`
	FinishedAt   *time.Time     `json:"finished_at,omitempty"`
}

// Audit statuses.
const (
	AuditRunning   = "running"
	AuditSucceeded = "succeeded"
	AuditFailed    = "failed"
	AuditRejected  = "rejected"
)

// revision is the revision an audit row's result records, if any.
func (a AuditRow) revision() (int64, bool) {
	v, ok := a.Result["revision"].(float64)
	return int64(v), ok
}

// rollbackTarget is the revision a rollback's parameters name.
func (a AuditRow) rollbackTarget() (int64, bool) {
	v, ok := a.Params["revision"].(float64)
	return int64(v), ok
}

// appliedPackages is what the operation handed to uv.
func (a AuditRow) appliedPackages() []string {
	list, _ := a.Params["applied_packages"].([]any)
	out := make([]string, 0, len(list))
	for _, v := range list {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// EnvFinal is what one environment looks like once the system is quiet.
type EnvFinal struct {
	Env string `json:"env"`

	// GET deps.
	DepsStatus   int               `json:"deps_status"`
	DepsCode     string            `json:"deps_code,omitempty"`
	Revision     int64             `json:"revision"`
	Dependencies []string          `json:"dependencies"`
	Locked       map[string]string `json:"locked_versions"`

	// GET export (the database's files).
	ExportStatus    int    `json:"export_status"`
	ExportPyproject string `json:"export_pyproject_toml,omitempty"`
	ExportLock      string `json:"export_uv_lock,omitempty"`

	// GET /envs/{wf}/{node}: the agent's view of the disk.
	StatusCode int    `json:"status_code"`
	FilesMatch *bool  `json:"files_match_revision,omitempty"`
	VenvInSync *bool  `json:"venv_in_sync,omitempty"`
	DiskError  string `json:"disk_error,omitempty"`

	// Read directly from the shared data root.
	DirExists     bool              `json:"dir_exists"`
	DiskPyproject *string           `json:"disk_pyproject_toml,omitempty"` // nil: absent
	DiskLock      *string           `json:"disk_uv_lock,omitempty"`
	Installed     map[string]string `json:"installed"` // .venv dist-info, packages of the universe only

	// From the database directly.
	DBState string `json:"db_state,omitempty"` // "" when there is no row

	// The audit trail, any order.
	Audit []AuditRow `json:"audit"`
}

// Lease is one env_leases row.
type Lease struct {
	ID          string    `json:"id"`
	Env         string    `json:"env"`
	Holder      string    `json:"holder"`
	Operation   string    `json:"operation"`
	OperationID int64     `json:"operation_id"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// Input is everything Check judges.
type Input struct {
	History []Op
	Envs    []EnvFinal
	// Leases are every env_leases row, read at Now (the database's clock).
	Leases []Lease
	Now    time.Time
	// OpenRows are every env_operations row still "running", of any environment.
	OpenRows []AuditRow
	// Universe says which package names the harness publishes (normalized); the run and .venv
	// checks look at these only.
	Universe map[string]bool
	// HealErrors are faults the harness could not undo (a program that would not start again).
	HealErrors []string
	// Faults are the nemesis's, for evidence only: a violation names the faults under way while
	// the requests it cites ran.
	Faults []Fault
}

// Fault is one fault the nemesis injected, from injection to undo.
type Fault struct {
	Kind, Target string
	Start, End   time.Time
}

// Violation is one broken promise with the evidence for it.
type Violation struct {
	Invariant string   `json:"invariant"`
	Env       string   `json:"env,omitempty"`
	Message   string   `json:"message"`
	Evidence  []string `json:"evidence,omitempty"`
}

// Invariant names, in the order the issue lists them.
const (
	InvAcknowledged = "acknowledged" // a: acknowledged mutations reflected, failed ones not
	InvDisk         = "disk"         // b: database, files and .venv agree
	InvLease        = "lease"        // c: no live lease after quiet
	InvAuditOpen    = "audit-open"   // d: no running audit row after quiet
	InvStuck        = "stuck"        // e: no transitional state after quiet
	InvErrorBody    = "error-answer" // f: no undocumented error answer
	InvRunObserved  = "run"          // a run sees exactly the committed revision it answered
	InvHeal         = "heal"         // the fleet came back after the faults
)
