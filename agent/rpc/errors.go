package rpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/uv"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// envKey validates the caller's ids; the caller never names a path.
func envKey(ref *agentv1.EnvRef) (envid.Key, error) {
	if ref == nil {
		return envid.Key{}, errcode.New(errcode.InvalidID, "env is required")
	}
	key, err := envid.New(ref.GetWorkflowId(), ref.GetNodeId(), ref.GetVersionId())
	if err != nil {
		return envid.Key{}, errcode.Wrap(errcode.InvalidID, err, "")
	}
	return key, nil
}

// checkRevision requires both files of a revision.
func checkRevision(f *agentv1.ProjectFiles, field string) error {
	if f.GetPyprojectToml() == "" || f.GetUvLock() == "" {
		return errcode.New(errcode.InvalidRequest, field+" must hold pyproject_toml and uv_lock")
	}
	return nil
}

// checkPackages refuses requirement strings that cannot be a named requirement (options, paths),
// as a second line behind the control plane's validation.
func checkPackages(pkgs []string) error {
	for _, p := range pkgs {
		if pyproject.RequirementName(p) == "" || strings.TrimSpace(p) != p {
			return errcode.New(errcode.InvalidPackages, fmt.Sprintf("%q is not a package requirement", p))
		}
	}
	return nil
}

// checkNames requires bare project names.
func checkNames(names []string) error {
	for _, n := range names {
		if !pyproject.IsName(n) {
			return errcode.New(errcode.InvalidPackages, fmt.Sprintf("%q is not a package name", n))
		}
	}
	return nil
}

// checkInterpreter refuses to resolve or build for an interpreter this host lacks: uv would
// pick another one.
func checkInterpreter(python string) error {
	if python == "" {
		return nil
	}
	if _, err := os.Stat(python); err != nil {
		return errcode.Wrap(errcode.PythonUnavailable, err, fmt.Sprintf("interpreter %s is not on this host", python))
	}
	return nil
}

// fail logs err and turns it into a Connect error carrying an ErrorDetail.
func (s *Server) fail(ctx context.Context, op string, err error) error {
	code := errcode.Of(err)
	output := uv.OutputOf(err)
	if code == errcode.Internal && output != "" {
		code = errcode.UVExecutionError
	}
	s.logger.WarnContext(ctx, op+" failed", "code", code, "err", err)
	ce := connect.NewError(connectCode(err, code), err)
	if d, derr := connect.NewErrorDetail(&agentv1.ErrorDetail{ErrorCode: wireCode(code), UvOutput: output}); derr == nil {
		ce.AddDetail(d)
	}
	return ce
}

func connectCode(err error, code errcode.Code) connect.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	switch code {
	case errcode.InvalidPackages, errcode.InvalidID, errcode.InvalidRequest:
		return connect.CodeInvalidArgument
	case errcode.EnvNotFound, errcode.DependencyNotFound:
		return connect.CodeNotFound
	case errcode.EnvNotReady, errcode.PackageResolutionFailed, errcode.PythonUnavailable, errcode.SourceBuildDisabled,
		errcode.BuildMissing:
		return connect.CodeFailedPrecondition
	case errcode.ExecutionTimeout:
		return connect.CodeDeadlineExceeded
	case errcode.EnvLocked:
		return connect.CodeAborted // another call holds the project, or a newer operation wrote it
	}
	return connect.CodeInternal
}

// wireCode is the proto enum value of code: the value named ERROR_CODE_<code>, or
// ERROR_CODE_INTERNAL_ERROR for a code the enum lacks.
func wireCode(code errcode.Code) agentv1.ErrorCode {
	if v, ok := agentv1.ErrorCode_value["ERROR_CODE_"+string(code)]; ok {
		return agentv1.ErrorCode(v)
	}
	return agentv1.ErrorCode_ERROR_CODE_INTERNAL_ERROR
}
