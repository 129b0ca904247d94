package envs

import (
	"errors"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// The failures whose facts a caller needs are types, reached with errors.As; only the REST
// adapter turns them into an error body. Each implements errcode.Coded, so errcode.Of finds its
// code.

// LockedError is ENV_LOCKED: another operation holds the environment.
type LockedError struct {
	Key    envid.Key
	Holder store.Lease // the live lease in the way
	Err    error
}

func (e *LockedError) Error() string           { return string(e.ErrorCode()) + ": " + e.ErrorMessage() }
func (e *LockedError) Unwrap() error           { return e.Err }
func (e *LockedError) ErrorCode() errcode.Code { return errcode.EnvLocked }
func (e *LockedError) ErrorMessage() string {
	return fmt.Sprintf("environment %s is busy: %s (operation %d) holds it", e.Key, e.Holder.Operation, e.Holder.OperationID)
}

// AgentError is a failure an agent reported, or an agent that stopped answering.
type AgentError struct {
	Code    errcode.Code
	Message string
	// Agent is the agent that failed.
	Agent string
	// UVOutput is uv's output, trimmed, when a uv command failed.
	UVOutput string
	// Detail is the agent's whole account of the failure (uv's command line, its paths), for
	// the logs and the audit; API callers see Message and UVOutput only.
	Detail string
	Err    error
}

func (e *AgentError) Error() string { return string(e.Code) + ": " + e.Message }

// AuditMessage is err's text for the audit and the logs: its message and, for an agent's failure,
// the agent's whole account (Detail), which API answers and recorded states leave out.
func AuditMessage(err error) string {
	var ae *AgentError
	if errors.As(err, &ae) && ae.Detail != "" {
		return err.Error() + " [agent: " + ae.Detail + "]"
	}
	return err.Error()
}
func (e *AgentError) Unwrap() error           { return e.Err }
func (e *AgentError) ErrorCode() errcode.Code { return e.Code }
func (e *AgentError) ErrorMessage() string    { return e.Message }

// UncommittedError is DB_AUDIT_ERROR after a change could not be committed: the commit failed,
// the database was unreachable, the base was no longer current, or the lease was lost. The change
// is never acknowledged, and nothing of it was switched: the environment keeps its current build.
type UncommittedError struct {
	Key envid.Key
	// Base is the revision the change started from (0 for a create).
	Base int64
	// LeaseLost: this control plane no longer held the environment, so it settled nothing.
	LeaseLost bool
	// Restored: the environment is recorded at rest on its current revision (a create's record
	// is gone).
	Restored bool
	Err      error
}

func (e *UncommittedError) Error() string           { return string(e.ErrorCode()) + ": " + e.ErrorMessage() }
func (e *UncommittedError) Unwrap() error           { return e.Err }
func (e *UncommittedError) ErrorCode() errcode.Code { return errcode.DBAuditError }
func (e *UncommittedError) ErrorMessage() string {
	switch {
	case e.LeaseLost:
		return fmt.Sprintf("audit database: the change to %s was not recorded: this control plane lost its lease (%v); the change was not published and the environment keeps its current build", e.Key, e.Err)
	case e.Base == 0 && e.Restored:
		return fmt.Sprintf("audit database: the new environment %s could not be recorded (%v); nothing of it was published", e.Key, e.Err)
	case e.Base == 0:
		return fmt.Sprintf("audit database: the new environment %s could not be recorded (%v); the repair pass removes its record", e.Key, e.Err)
	}
	return fmt.Sprintf("audit database: the change to %s could not be recorded (%v); the environment stays at revision %d on its current build", e.Key, e.Err, e.Base)
}

// RunTimeoutError is EXECUTION_TIMEOUT: user code ran past its timeout and was killed.
type RunTimeoutError struct {
	Timeout  time.Duration
	Stdout   []byte // what the code wrote before it was killed
	Stderr   []byte
	Duration time.Duration
}

func (e *RunTimeoutError) Error() string           { return string(e.ErrorCode()) + ": " + e.ErrorMessage() }
func (e *RunTimeoutError) ErrorCode() errcode.Code { return errcode.ExecutionTimeout }
func (e *RunTimeoutError) ErrorMessage() string {
	return fmt.Sprintf("code ran past its timeout of %g seconds and was killed", e.Timeout.Seconds())
}

// NoAgentError is NO_AGENT_AVAILABLE from a fleet: no live agent meets Need.
type NoAgentError struct {
	Need    Need
	Message string
}

func (e *NoAgentError) Error() string           { return string(e.ErrorCode()) + ": " + e.Message }
func (e *NoAgentError) ErrorCode() errcode.Code { return errcode.NoAgentAvailable }
func (e *NoAgentError) ErrorMessage() string    { return e.Message }
