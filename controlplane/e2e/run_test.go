package e2e

import (
	"bytes"
	"encoding/base64"
	"testing"
)

// TestRunOutcomes: what a caller reads off a run through the API — how it ended (exit_reason),
// the revision it ran against, and its output byte for byte, binary output included.
func TestRunOutcomes(t *testing.T) {
	t.Parallel()
	// A small bound on the run as a whole, so one allocation passes it while staying far below
	// the per-process address-space limit (RUN_LIMIT_MEMORY_BYTES, 4 GiB).
	f := newFabric(t, options{agentEnv: []string{"RUN_LIMIT_TOTAL_MEMORY_BYTES=268435456"}})
	r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}})
	expect(t, r, 201, "")
	rev := f.do(t, "GET", "/envs/wf/n/deps", nil).Body["revision"]
	if r.Body["revision"] != rev || rev != float64(1) {
		t.Errorf("create answered revision %v; GET deps says %v, want 1", r.Body["revision"], rev)
	}

	high := make([]byte, 128)
	for i := range high {
		high[i] = byte(128 + i)
	}
	tests := []struct {
		name       string
		code       string
		timeout    float64
		wantStatus int
		wantCode   string
		wantReason string
		wantStdout []byte // nil: not checked
		wantEnc    string
	}{
		{"text", "print('π ≈ 3.14')", 30, 200, "", "exited", []byte("π ≈ 3.14\n"), "utf-8"},
		{"the 128 high bytes", "import sys; sys.stdout.buffer.write(bytes(range(128, 256)))", 30, 200, "", "exited", high, "base64"},
		{"killed by a signal", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 30, 200, "", "signal", nil, ""},
		{"past the run's memory bound", "b = bytearray(512 << 20)", 30, 200, "", "memory", nil, ""},
		{"past its timeout", "import sys, time; sys.stdout.buffer.write(b'\\xffpartial'); sys.stdout.flush(); time.sleep(60)", 1, 504, "EXECUTION_TIMEOUT", "", []byte("\xffpartial"), "base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": tt.code, "timeout": tt.timeout})
			expect(t, r, tt.wantStatus, tt.wantCode)
			body := r.Body
			if tt.wantCode != "" {
				body, _ = r.Body["error"].(map[string]any)
			} else {
				if got := r.str("exit_reason"); got != tt.wantReason {
					t.Errorf("exit_reason %q; want %q\n%s", got, tt.wantReason, r.Raw)
				}
				if r.Body["revision"] != rev {
					t.Errorf("revision %v; want %v, the environment's", r.Body["revision"], rev)
				}
			}
			if tt.wantStdout == nil {
				return
			}
			text, _ := body["stdout"].(string)
			enc, _ := body["stdout_encoding"].(string)
			got := []byte(text)
			if enc == "base64" {
				var err error
				if got, err = base64.StdEncoding.DecodeString(text); err != nil {
					t.Fatalf("stdout is not base64: %v", err)
				}
			}
			if enc != tt.wantEnc || !bytes.Equal(got, tt.wantStdout) {
				t.Errorf("stdout %q (%s); want %q (%s)", got, enc, tt.wantStdout, tt.wantEnc)
			}
		})
	}
}
