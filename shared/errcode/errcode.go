// Package errcode holds the error codes of the REST API and the HTTP status of each. The agent
// puts the same codes on its Connect errors, so one table serves both programs.
package errcode

import (
	"errors"
	"net/http"
)

// Code is a stable, documented error code.
type Code string

// The TRD's codes, exactly, then the ones added where they do not fit.
const (
	InvalidPackages         Code = "INVALID_PACKAGES"
	EnvNotFound             Code = "ENV_NOT_FOUND"
	EnvAlreadyExists        Code = "ENV_ALREADY_EXISTS"
	PackageResolutionFailed Code = "PACKAGE_RESOLUTION_FAILED"
	EnvLocked               Code = "ENV_LOCKED"
	DBAuditError            Code = "DB_AUDIT_ERROR"
	UVExecutionError        Code = "UV_EXECUTION_ERROR"
	ExecutionTimeout        Code = "EXECUTION_TIMEOUT"

	InvalidID          Code = "INVALID_ID"
	InvalidRequest     Code = "INVALID_REQUEST"
	DependencyNotFound Code = "DEPENDENCY_NOT_FOUND"
	EnvNotReady        Code = "ENV_NOT_READY"
	PythonUnavailable  Code = "PYTHON_UNAVAILABLE"
	RequestTooLarge    Code = "REQUEST_TOO_LARGE"
	NotFound           Code = "NOT_FOUND"
	MethodNotAllowed   Code = "METHOD_NOT_ALLOWED"
	AgentUnavailable   Code = "AGENT_UNAVAILABLE"
	// NoAgentAvailable: no live agent can serve the operation (none has the environment's
	// interpreter at its path, or none is in the fleet).
	NoAgentAvailable Code = "NO_AGENT_AVAILABLE"
	Internal         Code = "INTERNAL_ERROR"
	// SourceBuildDisabled: the agent installs wheels only (UV_WHEELS_ONLY) and a requested
	// package, or one it depends on, has no wheel for this platform.
	SourceBuildDisabled Code = "SOURCE_BUILD_DISABLED"
	// BuildMissing: the build a run named is not complete on the shared storage (hibernated or
	// removed); the control plane materialises it again and retries, so callers see it only when
	// that failed too.
	BuildMissing Code = "BUILD_MISSING"
	// PackageDenied: the lock a create, add or update resolved holds a package version the
	// operator's PACKAGE_POLICY denies; nothing was changed.
	PackageDenied Code = "PACKAGE_DENIED"

	// Authentication and transport strictness.
	Unauthenticated      Code = "UNAUTHENTICATED"
	Forbidden            Code = "FORBIDDEN"
	UnsupportedMediaType Code = "UNSUPPORTED_MEDIA_TYPE"
	RequestTimeout       Code = "REQUEST_TIMEOUT"
)

var status = map[Code]int{
	InvalidPackages:         http.StatusBadRequest,
	EnvNotFound:             http.StatusNotFound,
	EnvAlreadyExists:        http.StatusConflict,
	PackageResolutionFailed: http.StatusUnprocessableEntity,
	EnvLocked:               http.StatusLocked,
	DBAuditError:            http.StatusInternalServerError,
	UVExecutionError:        http.StatusInternalServerError,
	ExecutionTimeout:        http.StatusGatewayTimeout,

	InvalidID:          http.StatusBadRequest,
	InvalidRequest:     http.StatusBadRequest,
	DependencyNotFound: http.StatusNotFound,
	EnvNotReady:        http.StatusConflict,
	PythonUnavailable:  http.StatusUnprocessableEntity,
	RequestTooLarge:    http.StatusRequestEntityTooLarge,
	NotFound:           http.StatusNotFound,
	MethodNotAllowed:   http.StatusMethodNotAllowed,
	AgentUnavailable:   http.StatusServiceUnavailable,
	NoAgentAvailable:   http.StatusServiceUnavailable,
	Internal:           http.StatusInternalServerError,

	Unauthenticated:      http.StatusUnauthorized,
	Forbidden:            http.StatusForbidden,
	UnsupportedMediaType: http.StatusUnsupportedMediaType,
	RequestTimeout:       http.StatusRequestTimeout,
	SourceBuildDisabled:  http.StatusUnprocessableEntity,
	BuildMissing:         http.StatusServiceUnavailable,
	// 422 like PACKAGE_RESOLUTION_FAILED: the request is well formed, but what it resolves to
	// cannot be accepted, and it will not be until the request or the policy changes. Not 403:
	// who asks does not matter (FORBIDDEN is about the caller's role).
	PackageDenied: http.StatusUnprocessableEntity,
}

// All lists every code, for documentation and tests.
func All() []Code {
	out := make([]Code, 0, len(status))
	for c := range status {
		out = append(out, c)
	}
	return out
}

// HTTPStatus is the status a code is answered with; unknown codes are 500.
func (c Code) HTTPStatus() int {
	if s, ok := status[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Known reports whether c is one of the documented codes.
func (c Code) Known() bool {
	_, ok := status[c]
	return ok
}

// Coded is an error that carries a code and the message to answer with. *Error is the plain
// one; domain packages define their own types for failures that carry more facts (who holds a
// lock, whether the environment was restored), which callers reach with errors.As and only the
// REST adapter renders into the error body.
type Coded interface {
	error
	ErrorCode() Code
	ErrorMessage() string
}

// Error is an error that carries its code and nothing else. Domain packages return it where a
// caller must branch on the kind of failure; the REST adapter turns it into the error body.
type Error struct {
	Code    Code
	Message string
	Err     error
}

// ErrorCode implements Coded.
func (e *Error) ErrorCode() Code { return e.Code }

// ErrorMessage implements Coded.
func (e *Error) ErrorMessage() string { return e.Message }

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return string(e.Code) + ": " + e.Err.Error()
	}
	return string(e.Code) + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// New makes an *Error.
func New(c Code, msg string) *Error { return &Error{Code: c, Message: msg} }

// Wrap makes an *Error around err; the message is err's text unless msg is given.
func Wrap(c Code, err error, msg string) *Error {
	if msg == "" && err != nil {
		msg = err.Error()
	}
	return &Error{Code: c, Message: msg, Err: err}
}

// Of returns the code carried by err (by the outermost Coded error in its chain), or Internal.
func Of(err error) Code {
	var e Coded
	if errors.As(err, &e) {
		return e.ErrorCode()
	}
	return Internal
}
