package rpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/wrapperspb"

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
//
// The error's message and its uv output are what the control plane shows API callers: what
// failed and uv's account of why, without uv's command line (its flags and this host's paths)
// or uv's hints to pass flags the fabric chooses, and with the storage's paths named by their
// settings. The whole error, command line included, goes to this agent's log and, as a second
// detail (a StringValue), to the control plane for its log and the audit.
func (s *Server) fail(ctx context.Context, op string, err error) error {
	code := errcode.Of(err)
	output := uv.OutputOf(err)
	if code == errcode.Internal && output != "" {
		code = errcode.UVExecutionError
	}
	public := publicMessage(err)
	// What the public message leaves out: the whole error text, and uv's command line.
	var internal []string
	if full := err.Error(); full != public && full != string(code)+": "+public {
		internal = append(internal, full)
	}
	var ee *uv.ExitError
	if errors.As(err, &ee) {
		internal = append(internal, "command: uv "+strings.Join(ee.Args, " "))
	}
	detail := strings.Join(internal, "; ")
	s.logger.WarnContext(ctx, op+" failed", "code", code, "err", err, "detail", detail)
	ce := connect.NewError(connectCode(err, code), errors.New(s.redact(public)))
	if d, derr := connect.NewErrorDetail(&agentv1.ErrorDetail{ErrorCode: wireCode(code), UvOutput: s.redact(uv.Trim(output))}); derr == nil {
		ce.AddDetail(d)
	}
	if detail != "" {
		if d, derr := connect.NewErrorDetail(wrapperspb.String(detail)); derr == nil {
			ce.AddDetail(d)
		}
	}
	return ce
}

// publicMessage is err's message for the API: a coded error's own message (without its code,
// which travels in the detail), else a uv failure told without its command line.
func publicMessage(err error) string {
	var coded errcode.Coded
	if errors.As(err, &coded) && coded.ErrorMessage() != "" {
		return coded.ErrorMessage()
	}
	var ee *uv.ExitError
	if errors.As(err, &ee) {
		return ee.Public()
	}
	return err.Error()
}

// redact names the shared storage's directories by their settings instead of this host's paths.
func (s *Server) redact(msg string) string {
	for _, d := range []struct{ path, name string }{{s.cfg.EnvsBasePath, "$ENVS_BASE_PATH"}, {s.cfg.UVCacheDir, "$UV_CACHE_DIR"}} {
		if d.path != "" && d.path != "/" {
			msg = strings.ReplaceAll(msg, strings.TrimRight(d.path, "/"), d.name)
		}
	}
	return msg
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
