package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/errcode"
)

// TestErrorBody pins the error body clients read: each typed failure renders its facts under the
// same keys as before the types existed.
func TestErrorBody(t *testing.T) {
	expires := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errcode.New(errcode.EnvNotFound, "no such environment"),
			`{"code":"ENV_NOT_FOUND","message":"no such environment"}`},
		{"locked", fmt.Errorf("taking the lease: %w", &envs.LockedError{Holder: store.Lease{Operation: "add", OperationID: 7, ExpiresAt: expires}}),
			`{"code":"ENV_LOCKED","held_by":{"expires_at":"2025-01-02T03:04:05Z","operation":"add","operation_id":7},"message":"environment /@ is busy: add (operation 7) holds it"}`},
		{"uv failure", &envs.AgentError{Code: errcode.UVExecutionError, Message: "uv failed", UVOutput: "error: boom", Restored: true},
			`{"code":"UV_EXECUTION_ERROR","message":"uv failed","restored":true,"uv_output":"error: boom"}`},
		{"restored by another agent", &envs.AgentError{Code: errcode.AgentUnavailable, Message: "gone", Agent: "a1", Restored: true, RestoredBy: "a2"},
			`{"code":"AGENT_UNAVAILABLE","failed_agent":"a1","message":"gone","restored":true,"restored_by":"a2"}`},
		{"timeout", &envs.RunTimeoutError{Timeout: 2 * time.Second, Stdout: "partial", Stderr: "", Duration: 2100 * time.Millisecond},
			`{"code":"EXECUTION_TIMEOUT","duration_ms":2100,"message":"code ran past its timeout of 2 seconds and was killed","stderr":"","stdout":"partial","timeout":2}`},
		{"not an errcode", errors.New("boom"), `{"code":"INTERNAL_ERROR","message":"internal error: boom"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(errorBody(tt.err))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s; want %s", got, tt.want)
			}
		})
	}
}
