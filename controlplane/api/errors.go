package api

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/shared/errcode"
)

// fail writes the one error body every error gets: {"error": {code, message, request_id, ...}}.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	body := errorBody(err)
	body["request_id"] = r.Header.Get("X-Request-ID")
	code := body["code"].(errcode.Code)
	status := code.HTTPStatus()
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	if status == http.StatusLocked {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter(err, time.Now())))
	}
	h.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status,
		"code", code, "err", envs.AuditMessage(err), "request_id", body["request_id"])
	writeJSON(w, status, map[string]any{"error": body})
}

// retryAfter is the Retry-After of a 423: the whole seconds until the lease in the way expires
// (its holder renews it while it works, so this is when to look again, not a promise), at least
// 1; 1 when the holder is not a lease (an agent still writing the project).
func retryAfter(err error, now time.Time) int {
	var le *envs.LockedError
	if !errors.As(err, &le) {
		return 1
	}
	return max(1, int(math.Ceil(le.Holder.ExpiresAt.Sub(now).Seconds())))
}

// errorBody renders a failure: its code and message, and the facts its type carries under the
// keys clients read (held_by, uv_output, restored, the partial output
// of a timed-out run, ...). This is the only place a domain failure becomes wire data.
func errorBody(err error) map[string]any {
	var coded errcode.Coded
	if !errors.As(err, &coded) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			coded = errcode.New(errcode.RequestTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
		} else {
			coded = errcode.Wrap(errcode.Internal, err, "internal error: "+err.Error())
		}
	}
	body := map[string]any{"code": coded.ErrorCode(), "message": coded.ErrorMessage()}
	switch e := coded.(type) {
	case *envs.LockedError:
		body["held_by"] = map[string]any{
			"operation": e.Holder.Operation, "operation_id": e.Holder.OperationID,
			"expires_at": e.Holder.ExpiresAt.UTC().Format(time.RFC3339),
		}
	case *envs.AgentError:
		if e.UVOutput != "" {
			body["uv_output"] = e.UVOutput
		}
	case *envs.UncommittedError:
		body["restored"] = e.Restored
		body["base_revision"] = e.Base
		if e.LeaseLost {
			body["lease_lost"] = true
		}
	case *envs.RunTimeoutError:
		body["stdout"], body["stdout_encoding"] = Output(e.Stdout)
		body["stderr"], body["stderr_encoding"] = Output(e.Stderr)
		body["duration_ms"], body["timeout"] = e.Duration.Milliseconds(), e.Timeout.Seconds()
	case *envs.PackageDeniedError:
		body["denied"] = map[string]any{"rule": e.Denial.Rule, "package": e.Denial.Package, "version": e.Denial.Version, "reason": e.Denial.Reason}
	case *envs.NoAgentError:
		body["python_path"], body["python_version"] = e.Need.PythonPath, e.Need.PythonVersion
	}
	return body
}
