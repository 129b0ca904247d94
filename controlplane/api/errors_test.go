package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/depintel"
	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/pkgpolicy"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
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
		{"uv failure", &envs.AgentError{Code: errcode.UVExecutionError, Message: "uv failed", UVOutput: "error: boom"},
			`{"code":"UV_EXECUTION_ERROR","message":"uv failed","uv_output":"error: boom"}`},
		{"agent gone", &envs.AgentError{Code: errcode.AgentUnavailable, Message: "gone", Agent: "a1"},
			`{"code":"AGENT_UNAVAILABLE","message":"gone"}`},
		{"uncommitted change", &envs.UncommittedError{Base: 3, Restored: true, Err: errors.New("disk full")},
			`{"base_revision":3,"code":"DB_AUDIT_ERROR","message":"audit database: the change to /@ could not be recorded (disk full); the environment stays at revision 3 on its current build","restored":true}`},
		{"timeout", &envs.RunTimeoutError{Timeout: 2 * time.Second, Stdout: []byte("partial"), Stderr: nil, Duration: 2100 * time.Millisecond},
			`{"code":"EXECUTION_TIMEOUT","duration_ms":2100,"message":"code ran past its timeout of 2 seconds and was killed","stderr":"","stderr_encoding":"utf-8","stdout":"partial","stdout_encoding":"utf-8","timeout":2}`},
		{"timeout with binary output", &envs.RunTimeoutError{Timeout: time.Second, Stdout: []byte{0xff, 0x00, 'a'}, Stderr: []byte("é"), Duration: time.Second},
			`{"code":"EXECUTION_TIMEOUT","duration_ms":1000,"message":"code ran past its timeout of 1 seconds and was killed","stderr":"é","stderr_encoding":"utf-8","stdout":"/wBh","stdout_encoding":"base64","timeout":1}`},
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

// Output keeps every byte: valid UTF-8 stands as text, anything else travels as base64 with a flag.
func TestOutput(t *testing.T) {
	high := make([]byte, 128)
	for i := range high {
		high[i] = byte(128 + i)
	}
	tests := []struct {
		name         string
		in           []byte
		wantText     string
		wantEncoding string
	}{
		{"empty", nil, "", EncodingUTF8},
		{"ascii", []byte("hello\n"), "hello\n", EncodingUTF8},
		{"utf-8", []byte("π ≈ 3.14 — ok"), "π ≈ 3.14 — ok", EncodingUTF8},
		{"the 128 high bytes", high, base64.StdEncoding.EncodeToString(high), EncodingBase64},
		{"text with one bad byte", []byte("ab\xffcd"), "YWL/Y2Q=", EncodingBase64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, enc := Output(tt.in)
			if text != tt.wantText || enc != tt.wantEncoding {
				t.Fatalf("got %q %s; want %q %s", text, enc, tt.wantText, tt.wantEncoding)
			}
			back := []byte(text)
			if enc == EncodingBase64 {
				var err error
				if back, err = base64.StdEncoding.DecodeString(text); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(back, tt.in) && len(tt.in) > 0 {
				t.Errorf("decoded %q; want the input %q back", back, tt.in)
			}
		})
	}
}

func TestVulnCursor(t *testing.T) {
	for _, c := range []depintel.VulnCursor{{Rank: 4, ID: "GHSA-aaaa-1111-2222"}, {Rank: 0, ID: "PYSEC-2099-1"}} {
		got, err := decodeVulnCursor(encodeVulnCursor(c))
		if err != nil || got != c {
			t.Errorf("cursor %v does not round-trip: %v %v", c, got, err)
		}
	}
	for _, bad := range []string{"", "x", encodeCursor(envid.Key{WorkflowID: "w", NodeID: "n", VersionID: "v"}), "WzEsIiJd"} {
		if _, err := decodeVulnCursor(bad); errcode.Of(err) != errcode.InvalidRequest {
			t.Errorf("decodeVulnCursor(%q) = %v; want INVALID_REQUEST", bad, err)
		}
	}
}

func TestPackageDeniedBody(t *testing.T) {
	body := errorBody(&envs.PackageDeniedError{Denial: pkgpolicy.Denial{Rule: "gamma", Package: "gamma", Version: "1.0.0", Reason: "no"}})
	d, _ := body["denied"].(map[string]any)
	if body["code"] != errcode.PackageDenied || d["rule"] != "gamma" || d["version"] != "1.0.0" || errcode.PackageDenied.HTTPStatus() != 422 {
		t.Errorf("PACKAGE_DENIED body = %v", body)
	}
}
