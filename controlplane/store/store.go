// Package store keeps the control plane's truth: environments, their project-file revisions, the
// leases that lock them and the env_operations audit trail. Two implementations satisfy Store:
// PostgreSQL through pgx (store/postgres) when DATABASE_URL is set, and embedded SQLite in pure Go
// (store/sqlite) when it is not. Both are one implementation (store/sqlstore: every query and
// transaction, written once) over a small dialect each. One test suite (store/storetest) runs
// against both.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/shared/envid"
)

// Errors callers branch on. Implementations wrap them with what was being done.
var (
	ErrNotFound  = errors.New("not found")
	ErrExists    = errors.New("already exists")
	ErrLocked    = errors.New("locked by another operation")
	ErrLeaseLost = errors.New("lease lost")
	// ErrStaleBase: a commit's base revision is no longer the environment's current one.
	ErrStaleBase = errors.New("base revision is no longer current")
	// ErrUnknownBuild: a commit names a build that was never recorded (RecordBuild).
	ErrUnknownBuild = errors.New("build not recorded")
)

// Environment states (DESIGN.md §3 lifecycle).
const (
	StateCreating   = "CREATING"
	StateActive     = "ACTIVE"
	StateInstalling = "INSTALLING"
	StateSyncing    = "SYNCING"
	StateRunning    = "RUNNING"
	StateIdle       = "IDLE"
	StateDeleting   = "DELETING"
	StateError      = "ERROR"
	// StateHibernated: the environment's current build was removed (unused for HIBERNATE_AFTER,
	// or beyond DISK_BUDGET_BYTES); its project files and revisions stay, and its next run or
	// sync materialises the build again from the recorded lock.
	StateHibernated = "HIBERNATED"
)

// Build states (builds table). A build is an installed environment materialised once for an
// identity (lock content, interpreter, install settings) and never modified after it is complete.
const (
	BuildReady   = "READY"   // complete on the shared storage
	BuildRemoved = "REMOVED" // removed (hibernation, disk budget or cleanup); can be materialised again
	BuildDamaged = "DAMAGED" // its files no longer match its packages' RECORD; a sync replaces it
)

// LeaseMode says what a lease excludes. Runs never wait for a change: a run uses the build that
// was current when it started, and a change builds beside it and switches a pointer.
type LeaseMode string

const (
	// LeaseRun (runs) excludes only LeaseDelete.
	LeaseRun LeaseMode = "run"
	// LeaseChange (create, add, remove, update, sync, rollback, repair) excludes LeaseChange and
	// LeaseDelete: changes of one environment are serialised, runs go on.
	LeaseChange LeaseMode = "change"
	// LeaseDelete (delete, cleanup of the environment) excludes every other lease.
	LeaseDelete LeaseMode = "delete"
)

// LeaseModes are every mode, for the stores, which turn Conflicts into the set of held modes a
// request must not meet (the one rule, not a second copy of it in SQL).
var LeaseModes = []LeaseMode{LeaseRun, LeaseChange, LeaseDelete}

// Valid reports whether m is one of LeaseModes.
func (m LeaseMode) Valid() bool {
	for _, v := range LeaseModes {
		if m == v {
			return true
		}
	}
	return false
}

// ConflictingModes are the modes of the live leases that stand in the way of a request of mode m.
func (m LeaseMode) ConflictingModes() []LeaseMode {
	var out []LeaseMode
	for _, held := range LeaseModes {
		if m.Conflicts(held) {
			out = append(out, held)
		}
	}
	return out
}

// Conflicts reports whether a lease of mode m may not be granted while one of mode held is live.
func (m LeaseMode) Conflicts(held LeaseMode) bool {
	switch {
	case m == LeaseDelete || held == LeaseDelete:
		return true
	case m == LeaseChange && held == LeaseChange:
		return true
	}
	return false
}

// Operation statuses in env_operations.
const (
	OpRunning   = "running"   // intent written, side effect may be under way
	OpSucceeded = "succeeded" // done
	OpFailed    = "failed"    // the side effect failed; the environment is at its last good revision
	OpRejected  = "rejected"  // refused before any side effect (for example ENV_LOCKED)
)

// ErrorCodeInterrupted is the error code AbandonOperations gives an operation whose holder stopped
// before recording its outcome.
const ErrorCodeInterrupted = "INTERRUPTED"

// InterruptedMessage is the error message AbandonOperations records.
const InterruptedMessage = "the outcome of this operation was never recorded: its control plane stopped, lost its lease or could not reach the database before recording it"

// RecoveredMessage is the error message AbandonOperations gives an operation whose outcome was
// never recorded but whose revision was committed: the revision is the record that it succeeded.
const RecoveredMessage = "its revision was committed; the outcome was recorded by the sweep after its control plane could not"

// Env is one environment as the control plane records it.
type Env struct {
	Key           envid.Key
	State         string
	PythonVersion string // as requested, e.g. "3.11"
	PythonPath    string // the interpreter the .venv is bound to
	EnvPath       string
	Revision      int64 // current revision number; 0 while CREATING
	// BuildID is the current revision's build ("" for an environment of the layout before
	// builds, whose .venv is its own until its next change).
	BuildID string
	// DiskRevision is the revision last switched onto the project directory (Switch): when it
	// is behind Revision, the maintenance pass switches the directory again. Runs through the API
	// do not depend on it (they run the build by id). A commit that keeps the files but changes
	// the build moves it below Revision (the directory's build link is stale until the next
	// MarkOnDisk); a commit without a build (the layout before builds, installed in place) sets it
	// to the new Revision.
	DiskRevision int64
	LastError    string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	LastUsedAt   time.Time
	// Preload is the environment's preload list (SetPreload): the modules a warm interpreter of
	// its build imports before serving, on top of the agent's own choice. Empty is none.
	Preload []string
}

// Digest names a project file's content in the contents table and in Build.LockDigest: the
// SHA-256 of its bytes in lower-case hex (migration 0005 computes the same in SQL).
func Digest(body string) string {
	sum := sha256.Sum256([]byte(body))
	return hex.EncodeToString(sum[:])
}

// Revision is one recorded version of an environment's project files. The store keeps each
// distinct file once (contents, by Digest); a revision carries the texts joined on read.
type Revision struct {
	Key           envid.Key
	Number        int64
	PyprojectTOML string
	UvLock        string
	OperationID   int64
	// BuildID is the build the revision was installed as ("" before builds). Several revisions
	// (and environments) may share one.
	BuildID   string
	CreatedAt time.Time
}

// Build is one row of the builds table.
type Build struct {
	ID                string // 32 hex digits of the SHA-256 of the identity
	PythonPath        string
	PythonFullVersion string
	// LockDigest is the SHA-256 (hex) of the uv.lock it installs.
	LockDigest        string
	State             string // BuildReady, BuildRemoved, BuildDamaged
	PackagesInstalled int
	Bytes             int64 // held only by the build (files hardlinked from the cache not counted)
	CreatedAt         time.Time
	LastUsedAt        time.Time // a run of an environment whose current build it is
	// CurrentEnvs is how many environments' current revision references it (read-only: computed
	// by ListBuilds and GetBuild).
	CurrentEnvs int
}

// Names of the cleanup passes whose cursor is kept (Store.CleanupCursor).
const (
	CursorEnvs   = "envs"
	CursorBuilds = "builds"
)

// CleanupCursor is the last item a cleanup pass dealt with, in the order it reads: by LastUsedAt,
// then Key (environments) or BuildID (builds). The zero value is the start.
type CleanupCursor struct {
	LastUsedAt time.Time
	Key        envid.Key
	BuildID    string
}

// IsZero reports the start of a pass.
func (c CleanupCursor) IsZero() bool { return c == CleanupCursor{} }

// BuildFilter selects builds for ListBuilds; ordered by last_used_at, then id, oldest first.
type BuildFilter struct {
	// After pages on (LastUsedAt, BuildID) > After's (zero: from the first).
	After CleanupCursor
	State string // empty: any
	// OnDisk: not REMOVED (a removed build's row stays, for its history and a wake).
	OnDisk bool
	// Unreferenced: only builds no environment's current revision references.
	Unreferenced bool
	// UnusedBefore: only builds whose LastUsedAt is before it (zero: any).
	UnusedBefore time.Time
	Limit        int
}

// Operation is one row of env_operations: written as intent before the side effect, completed with
// its outcome after.
type Operation struct {
	ID           int64
	Key          envid.Key
	Kind         string // create, delete, add, update, remove, sync, run, cleanup
	Status       string // OpRunning, OpSucceeded, OpFailed, OpRejected
	ErrorCode    string
	ErrorMessage string
	Actor        string
	RequestID    string
	Agent        string
	Params       json.RawMessage // a JSON object; never the code of a run, only its hash and size
	Result       json.RawMessage // a JSON object with what the operation produced, or null
	StartedAt    time.Time
	FinishedAt   time.Time // zero while running
	DurationMS   int64
}

// Outcome completes an Operation.
type Outcome struct {
	Status       string
	ErrorCode    string
	ErrorMessage string
	Agent        string
	Result       json.RawMessage
	FinishedAt   time.Time
	DurationMS   int64
}

// LeaseRequest asks for a lease on one environment.
type LeaseRequest struct {
	Key         envid.Key
	Mode        LeaseMode
	Holder      string // which control plane instance
	Operation   string // operation kind, shown to a refused caller
	OperationID int64
	TTL         time.Duration
	Now         time.Time
}

// Lease is a held lock on an environment, valid until ExpiresAt unless renewed.
type Lease struct {
	ID          string
	Key         envid.Key
	Mode        LeaseMode
	Holder      string
	Operation   string
	OperationID int64
	AcquiredAt  time.Time
	ExpiresAt   time.Time
}

// LockedError is returned (wrapping ErrLocked) when a lease is refused; Held is the live lease
// that stands in the way.
type LockedError struct {
	Held Lease
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("environment %s is locked by %s (operation %d) until %s",
		e.Held.Key, e.Held.Operation, e.Held.OperationID, e.Held.ExpiresAt.UTC().Format(time.RFC3339))
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// StaleBaseError is returned (wrapping ErrStaleBase) when CommitRevision finds that the
// environment moved past the revision the change started from: publishing it would write an older
// base over a newer acknowledged revision.
type StaleBaseError struct {
	Key     envid.Key
	Base    int64 // the revision the change started from
	Current int64 // the environment's current revision
}

func (e *StaleBaseError) Error() string {
	return fmt.Sprintf("environment %s is at revision %d, not at revision %d the change started from", e.Key, e.Current, e.Base)
}

func (e *StaleBaseError) Unwrap() error { return ErrStaleBase }

// ListFilter selects environments; results are ordered by (workflow_id, node_id, version_id).
type ListFilter struct {
	WorkflowID string    // empty: all
	After      envid.Key // keyset cursor: entries strictly after this key; zero value: from the start
	Limit      int
}

// Commit records the result of a successful mutation.
type Commit struct {
	Key     envid.Key
	LeaseID string // fencing: the commit fails with ErrLeaseLost unless this lease is still live
	// Base is the revision the change started from, read under the lease (0 for a create): the
	// commit is a compare-and-set on it and fails with a *StaleBaseError when the environment's
	// current revision is another.
	Base int64
	Now  time.Time
	// Files of the new revision. When both equal the current revision's, no revision is added
	// (the current revision's build becomes BuildID when that differs: a sync that replaced a
	// damaged build, or an interpreter upgraded in place).
	PyprojectTOML string
	UvLock        string
	// BuildID is the build the revision is installed as; it must have been recorded
	// (RecordBuild), else the commit fails with ErrUnknownBuild. Should the build be recorded
	// BuildRemoved by the time of the commit (hibernated meanwhile), an ACTIVE or IDLE State is
	// recorded as StateHibernated, so that the next run wakes it. Empty: the layout before builds
	// (installed in place), whose directory is then at the new revision (DiskRevision).
	BuildID     string
	OperationID int64
	State       string // the state the environment is left in, normally StateActive
	// Set on create; ignored when empty.
	PythonVersion string
	PythonPath    string
	EnvPath       string
}

// Store is the control plane's database. Every method honours ctx. Times are stored with
// millisecond precision or better and returned in UTC.
type Store interface {
	PackageIndex // packages.go

	// Ping checks the connection (SELECT 1).
	Ping(ctx context.Context) error
	Close() error

	// BeginOperation writes the intent row (Status OpRunning unless op.Status is set) and returns its id.
	BeginOperation(ctx context.Context, op Operation) (int64, error)
	// FinishOperation writes the outcome of an operation.
	FinishOperation(ctx context.Context, id int64, out Outcome) error
	// ListOperations returns key's operations newest first; beforeID > 0 pages on (id < beforeID).
	ListOperations(ctx context.Context, key envid.Key, beforeID int64, limit int) ([]Operation, error)
	// GetOperation returns one operation by id.
	GetOperation(ctx context.Context, id int64) (Operation, error)
	// ListOperationsOfKind returns the operations of one kind ("cleanup", ...) on every
	// environment, newest first; beforeID > 0 pages on (id < beforeID). For the operator console's
	// fleet-wide views.
	ListOperationsOfKind(ctx context.Context, kind string, beforeID int64, limit int) ([]Operation, error)
	// AbandonOperations closes key's operations that are still OpRunning but whose holder is gone:
	// no live lease (expires_at > now) carries their id. They get Status OpFailed, ErrorCode
	// "INTERRUPTED", an ErrorMessage saying the holder stopped before recording an outcome, and
	// FinishedAt = now (DurationMS = now - StartedAt); or, when a revision carries their id (the
	// commit landed), Status OpSucceeded, ErrorMessage RecoveredMessage and Result
	// {"revision": N}, as the holder would have recorded it. except is never touched (the
	// caller's own operation). Returns how many rows were closed.
	AbandonOperations(ctx context.Context, key envid.Key, except int64, now time.Time) (int, error)

	// AcquireLease grants a lease or returns a *LockedError. Expired leases are ignored (and may be
	// deleted). Atomic across every control plane sharing the database.
	AcquireLease(ctx context.Context, req LeaseRequest) (Lease, error)
	// RenewLease extends a live lease to now+ttl; ErrLeaseLost when it expired or was taken.
	RenewLease(ctx context.Context, id string, now time.Time, ttl time.Duration) error
	// ReleaseLease drops a lease; releasing a missing lease is not an error.
	ReleaseLease(ctx context.Context, id string) error
	// ListLeases returns the live leases on key.
	ListLeases(ctx context.Context, key envid.Key, now time.Time) ([]Lease, error)

	// CreateEnv inserts env (normally StateCreating, revision 0). ErrExists when the key exists,
	// unless the existing row is a CREATING left behind by a holder that died (no live lease on the
	// key), which is replaced.
	CreateEnv(ctx context.Context, env Env, now time.Time) error
	// GetEnv returns one environment or ErrNotFound.
	GetEnv(ctx context.Context, key envid.Key) (Env, error)
	// ListEnvs pages through environments.
	ListEnvs(ctx context.Context, f ListFilter) ([]Env, error)
	// SetState changes an environment's state and last error (empty clears it).
	SetState(ctx context.Context, key envid.Key, state, lastError string, now time.Time) error
	// Touch records a use of the environment at t (only moves last_used_at forward), and of its
	// current build (Build.LastUsedAt, which hibernation goes by).
	Touch(ctx context.Context, key envid.Key, t time.Time) error
	// SetPreload replaces the environment's preload list (nil or empty clears it).
	// ErrNotFound if the environment does not exist.
	SetPreload(ctx context.Context, key envid.Key, modules []string) error
	// CommitRevision stores a successful mutation's files and state in one transaction, fenced by
	// the lease (ErrLeaseLost when c.LeaseID is no longer live) and compare-and-set on c.Base
	// (*StaleBaseError when the current revision is another). Returns the current revision number.
	CommitRevision(ctx context.Context, c Commit) (int64, error)
	// GetRevision returns revision number n of key; n == 0 means the current one.
	GetRevision(ctx context.Context, key envid.Key, n int64) (Revision, error)
	// DeleteEnv removes the environment and its revisions, fenced by leaseID, and the contents no
	// other revision references. Operations and builds stay (cleanup removes unreferenced builds).
	DeleteEnv(ctx context.Context, key envid.Key, leaseID string) error
	// IdleEnvs returns environments whose last use is before cutoff, oldest first.
	IdleEnvs(ctx context.Context, cutoff time.Time, limit int) ([]Env, error)
	// IdleEnvsAfter is IdleEnvs's next page: the environments after `after` in (LastUsedAt, Key)
	// order (the zero cursor: from the start), read from one index however many there are.
	IdleEnvsAfter(ctx context.Context, cutoff time.Time, after CleanupCursor, limit int) ([]Env, error)
	// CleanupCursor returns where the pass named name (CursorEnvs, CursorBuilds) stands, or the
	// zero cursor when no pass is under way.
	CleanupCursor(ctx context.Context, name string) (CleanupCursor, error)
	// SaveCleanupCursor records where the pass named name stands; the zero cursor clears it (the
	// pass is over).
	SaveCleanupCursor(ctx context.Context, name string, c CleanupCursor, now time.Time) error
	// CountEnvs returns how many environments are in each recorded state.
	CountEnvs(ctx context.Context) (map[string]int, error)
	// CountLeases returns how many leases are live fleet-wide at now; changesOnly counts only
	// the leases of changes and deletes (not runs).
	CountLeases(ctx context.Context, now time.Time, changesOnly bool) (int, error)

	// RecordBuild inserts or updates a build (by ID). Recording a build BuildReady moves the
	// environments whose current build it is from StateHibernated to StateActive. LastUsedAt
	// becomes the later of the recorded one and b.LastUsedAt (now when zero): a build just
	// materialised is not the least recently used. CreatedAt is kept on update unless set.
	RecordBuild(ctx context.Context, b Build, now time.Time) error
	// GetBuild returns one build (with CurrentEnvs) or ErrNotFound.
	GetBuild(ctx context.Context, id string) (Build, error)
	// CountBuilds returns how many builds are recorded in each state.
	CountBuilds(ctx context.Context) (map[string]int, error)
	// ListBuilds returns builds matching f (with CurrentEnvs).
	ListBuilds(ctx context.Context, f BuildFilter) ([]Build, error)
	// SetBuildState changes a build's state in one transaction with its environments: BuildRemoved
	// moves the environments whose current build it is to StateHibernated (from ACTIVE or IDLE),
	// BuildReady moves them back to StateActive. ErrNotFound when the build is not recorded.
	SetBuildState(ctx context.Context, id, state string, now time.Time) error
	// MarkOnDisk records that key's project directory was switched to revision (only moves
	// DiskRevision forward, never past Revision). ErrNotFound when key is not recorded.
	MarkOnDisk(ctx context.Context, key envid.Key, revision int64, now time.Time) error
	// EnvsBehindDisk returns environments whose DiskRevision is behind Revision, with no live
	// change or delete lease at now, last updated before updatedBefore; least recently updated first.
	EnvsBehindDisk(ctx context.Context, updatedBefore, now time.Time, limit int) ([]Env, error)

	// AdoptSetting records value under name unless a value is recorded already, and returns the
	// recorded one: the first control plane to adopt wins, every later one reads its choice.
	AdoptSetting(ctx context.Context, name, value string, now time.Time) (string, error)
	// Setting returns the value recorded under name, or "" when there is none.
	Setting(ctx context.Context, name string) (string, error)
	// AcquireLeadership takes or renews the named role for holder until now+ttl. It returns false
	// while another holder's term has not expired.
	AcquireLeadership(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)
	// ResignLeadership gives the role up if holder has it.
	ResignLeadership(ctx context.Context, name, holder string) error

	// AbandonStaleOperations closes, fleet-wide, the operations still OpRunning that started
	// before startedBefore and that no live lease (expires_at > now) carries: their holder is gone.
	// They are closed as AbandonOperations closes them. startedBefore gives a grace period to an
	// intent row written a moment before its lease. Returns how many rows were closed.
	AbandonStaleOperations(ctx context.Context, startedBefore, now time.Time) (int, error)
	// EnvsToRepair returns environments left behind by an operation that did not finish: in a
	// transitional state (CREATING, INSTALLING, SYNCING, DELETING) or in ERROR, with no live lease
	// on their key at now, last updated before updatedBefore; least recently updated first.
	EnvsToRepair(ctx context.Context, updatedBefore, now time.Time, limit int) ([]Env, error)
}

// SettingFleetID names the fleet id setting: the identity of the shared storage, adopted from the
// first agent that joins, after which agents on other storage are refused.
const SettingFleetID = "fleet_id"

// Prober is implemented by both stores, for readiness: a real write rather than SELECT 1, which a
// database that cannot take a write (its disk full, its server read-only) still answers.
type Prober interface {
	// ProbeWrite upserts the probe row named name (holder and now recorded in it).
	ProbeWrite(ctx context.Context, name, holder string, now time.Time) error
}

// RepairStates are the states EnvsToRepair looks for: every transitional state, and ERROR.
var RepairStates = []string{StateCreating, StateInstalling, StateSyncing, StateDeleting, StateError}
