package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/errcode"
)

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		wantCode   errcode.Code
		wantMsg    string // a part of the message
		wantID     string
		wantRetry  time.Duration
		wantString string // a part of Error()
	}{
		{name: "the API's error body", status: 404, header: map[string]string{"X-Request-ID": "from-header"},
			body:     `{"error": {"code": "ENV_NOT_FOUND", "message": "environment wf/n@v1 does not exist", "request_id": "abc"}}`,
			wantCode: errcode.EnvNotFound, wantMsg: "environment wf/n@v1 does not exist", wantID: "abc",
			wantString: "ENV_NOT_FOUND: environment wf/n@v1 does not exist (request abc)"},
		{name: "the request id from the header when the body has none", status: 400, header: map[string]string{"X-Request-ID": "h1"},
			body: `{"error": {"code": "INVALID_ID", "message": "bad"}}`, wantCode: errcode.InvalidID, wantMsg: "bad", wantID: "h1"},
		{name: "423 with Retry-After in seconds", status: 423, header: map[string]string{"Retry-After": "7"},
			body:     `{"error": {"code": "ENV_LOCKED", "message": "held", "held_by": {"operation": "add", "operation_id": 12, "expires_at": "2026-01-02T03:04:05Z"}}}`,
			wantCode: errcode.EnvLocked, wantMsg: "held", wantRetry: 7 * time.Second},
		{name: "a proxy's HTML page", status: 502, body: "<html><body>Bad Gateway</body></html>",
			wantMsg: "unexpected answer: <html>", wantString: "HTTP 502: unexpected answer"},
		{name: "an empty body", status: 500, wantMsg: "Internal Server Error", wantString: "HTTP 500"},
		{name: "JSON that is not an error body", status: 503, body: `{"status": "not ready"}`, wantMsg: "not ready"},
		{name: "an error body without a code", status: 500, body: `{"error": {"message": "x"}}`, wantMsg: "unexpected answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}}
			for k, v := range tt.header {
				resp.Header.Set(k, v)
			}
			e := decodeError(resp, []byte(tt.body))
			if e.StatusCode != tt.status || e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("got %d %q %q; want %d %q, a message with %q", e.StatusCode, e.Code, e.Message, tt.status, tt.wantCode, tt.wantMsg)
			}
			if tt.wantID != "" && e.RequestID != tt.wantID {
				t.Errorf("request id %q; want %q", e.RequestID, tt.wantID)
			}
			if e.RetryAfter != tt.wantRetry {
				t.Errorf("RetryAfter %v; want %v", e.RetryAfter, tt.wantRetry)
			}
			if !strings.Contains(e.Error(), tt.wantString) {
				t.Errorf("Error() %q; want it to contain %q", e.Error(), tt.wantString)
			}
			// Reached through any wrapping, as callers do.
			var got *Error
			if !errors.As(fmt.Errorf("creating: %w", e), &got) || got != e || CodeOf(fmt.Errorf("x: %w", e)) != tt.wantCode {
				t.Errorf("errors.As through a wrap did not find the *Error")
			}
		})
	}
}

func TestErrorFacts(t *testing.T) {
	resp := &http.Response{StatusCode: 423, Header: http.Header{}}
	e := decodeError(resp, []byte(`{"error": {"code": "ENV_LOCKED", "message": "held", "held_by": {"operation": "add", "operation_id": 12, "expires_at": "2026-01-02T03:04:05Z"}}}`))
	h, ok := e.HeldBy()
	if !ok || h.Operation != "add" || h.OperationID != 12 || !h.ExpiresAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("HeldBy() = %+v, %t", h, ok)
	}
	if _, ok := e.RunTimeout(); ok {
		t.Errorf("an ENV_LOCKED answer has no run timeout")
	}

	resp.StatusCode = 504
	e = decodeError(resp, []byte(`{"error": {"code": "EXECUTION_TIMEOUT", "message": "killed", "stdout": "/3BhcnRpYWw=", "stdout_encoding": "base64",
		"stderr": "tick\n", "stderr_encoding": "utf-8", "duration_ms": 1003, "timeout": 1}}`))
	rt, ok := e.RunTimeout()
	if !ok || !bytes.Equal(rt.Stdout, []byte("\xffpartial")) || string(rt.Stderr) != "tick\n" || rt.DurationMS != 1003 || rt.Timeout != 1 {
		t.Errorf("RunTimeout() = %+v, %t", rt, ok)
	}
	if _, ok := e.HeldBy(); ok {
		t.Errorf("a timeout names no holder")
	}

	resp.StatusCode = 422
	e = decodeError(resp, []byte(`{"error": {"code": "PACKAGE_RESOLUTION_FAILED", "message": "no solution", "uv_output": "No solution found"}}`))
	if e.UVOutput() != "No solution found" {
		t.Errorf("UVOutput() = %q", e.UVOutput())
	}
	if _, ok := e.Denied(); ok {
		t.Errorf("a resolution failure names no policy rule")
	}
	e = decodeError(resp, []byte(`{"error": {"code": "PACKAGE_DENIED", "message": "denied", "denied": {"rule": "alpha<1.1", "package": "alpha", "version": "1.0.0", "reason": "known bad"}}}`))
	if d, ok := e.Denied(); !ok || d.Rule != "alpha<1.1" || d.Package != "alpha" || d.Version != "1.0.0" || d.Reason != "known bad" {
		t.Errorf("Denied() = %+v, %t", d, ok)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 10 ", 10 * time.Second},
		{"0", 0},
		{"-4", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func TestRunResultDecoding(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStdout []byte
		wantStderr []byte
		wantErr    bool
	}{
		{name: "text", body: `{"stdout": "π\n", "stdout_encoding": "utf-8", "stderr": "", "stderr_encoding": "utf-8", "exit_code": 3}`,
			wantStdout: []byte("π\n"), wantStderr: []byte{}},
		{name: "bytes that are not UTF-8", body: `{"stdout": "gIH/", "stdout_encoding": "base64", "stderr": "w", "stderr_encoding": "utf-8"}`,
			wantStdout: []byte{0x80, 0x81, 0xff}, wantStderr: []byte("w")},
		{name: "an encoding the client does not know", body: `{"stdout": "x", "stdout_encoding": "rot13"}`, wantErr: true},
		{name: "base64 that is not", body: `{"stdout": "!!", "stdout_encoding": "base64"}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r RunResult
			err := json.Unmarshal([]byte(tt.body), &r)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v; want an error: %t", err, tt.wantErr)
			}
			if err == nil && (!bytes.Equal(r.Stdout, tt.wantStdout) || !bytes.Equal(r.Stderr, tt.wantStderr)) {
				t.Errorf("stdout %q stderr %q; want %q %q", r.Stdout, r.Stderr, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// TestDryRunDecoding: a dry run's changes, null meaning added or removed, and the deps it would
// commit.
func TestDryRunDecoding(t *testing.T) {
	body := `{"workflow_id": "wf", "node_id": "n", "version_id": "v1", "dry_run": true, "revision": 4, "operation_id": 9,
		"dependencies": ["alpha>=2"], "locked_versions": {"alpha": "2.0.0", "beta": "1.0.0"},
		"changes": [{"name": "alpha", "from": "1.0.0", "to": "2.0.0"}, {"name": "beta", "from": null, "to": "1.0.0"}, {"name": "gamma", "from": "0.1", "to": null}]}`
	var r DryRunResult
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	var got []string
	for _, c := range r.Changes {
		got = append(got, c.Name+":"+str(c.From)+"->"+str(c.To))
	}
	if want := "alpha:1.0.0->2.0.0 beta:<nil>->1.0.0 gamma:0.1-><nil>"; strings.Join(got, " ") != want || !r.DryRun || r.Revision != 4 || r.LockedVersions["beta"] != "1.0.0" {
		t.Errorf("got %q, dry run %t, revision %d; want %q", got, r.DryRun, r.Revision, want)
	}
}

func TestNew(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "https://fabric.example/", "http://h:1/prefix"} {
		if _, err := New(u); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://h", "http://", "http://h/?x=1", "::"} {
		if _, err := New(u); err == nil {
			t.Errorf("New(%q): no error", u)
		}
	}
}

// TestRequests checks what goes on the wire: the paths, version_id, the JSON bodies, the token,
// and that an answer's JSON is kept as it came.
func TestRequests(t *testing.T) {
	type seen struct{ method, path, query, body, auth, ctype, requestID string }
	var last seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		b.ReadFrom(r.Body)
		last = seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, b.String(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), r.Header.Get("X-Request-ID")}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"workflow_id": "wf", "revision": 2, "stdout": "", "stdout_encoding": "utf-8", "stderr": "", "stderr_encoding": "utf-8", "environments": []}`)
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/", WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v2 := Env{WorkflowID: "wf", NodeID: "n", VersionID: "v2"}
	v1 := Env{WorkflowID: "wf", NodeID: "n"}
	idle := 0.0
	tests := []struct {
		name string
		call func() error
		want seen
	}{
		{"create", func() error {
			_, err := c.Create(ctx, CreateRequest{WorkflowID: "wf", NodeID: "n", Packages: []string{"six"}, Requirements: "a\n"})
			return err
		}, seen{method: "POST", path: "/envs", body: `{"workflow_id":"wf","node_id":"n","packages":["six"],"requirements":"a\n"}`, ctype: "application/json"}},
		{"create from another environment", func() error {
			_, err := c.Create(ctx, CreateRequest{WorkflowID: "wf", NodeID: "copy", From: &Env{WorkflowID: "wf", NodeID: "n"}})
			return err
		}, seen{method: "POST", path: "/envs", body: `{"workflow_id":"wf","node_id":"copy","from":{"workflow_id":"wf","node_id":"n"}}`, ctype: "application/json"}},
		{"create from a version", func() error {
			_, err := c.Create(ctx, CreateRequest{WorkflowID: "wf", NodeID: "n", VersionID: "v3", From: &v2})
			return err
		}, seen{method: "POST", path: "/envs", body: `{"workflow_id":"wf","node_id":"n","version_id":"v3","from":{"workflow_id":"wf","node_id":"n","version_id":"v2"}}`, ctype: "application/json"}},
		{"deps with a version", func() error { _, err := c.Deps(ctx, v2); return err }, seen{method: "GET", path: "/envs/wf/n/deps", query: "version_id=v2"}},
		{"add", func() error { _, err := c.Add(ctx, v1, []string{"numpy>=2"}); return err },
			seen{method: "POST", path: "/envs/wf/n/deps", body: `{"packages":["numpy>=2"]}`, ctype: "application/json"}},
		{"remove", func() error { _, err := c.Remove(ctx, v2, []string{"numpy"}); return err },
			seen{method: "DELETE", path: "/envs/wf/n/deps", query: "version_id=v2", body: `{"packages":["numpy"]}`, ctype: "application/json"}},
		{"update", func() error { _, err := c.Update(ctx, v1, []string{"numpy"}); return err },
			seen{method: "PUT", path: "/envs/wf/n/deps", body: `{"packages":["numpy"]}`, ctype: "application/json"}},
		{"add, dry run", func() error { _, err := c.AddDryRun(ctx, v1, []string{"numpy>=2"}); return err },
			seen{method: "POST", path: "/envs/wf/n/deps", body: `{"packages":["numpy>=2"],"dry_run":true}`, ctype: "application/json"}},
		{"remove, dry run", func() error { _, err := c.RemoveDryRun(ctx, v2, []string{"numpy"}); return err },
			seen{method: "DELETE", path: "/envs/wf/n/deps", query: "version_id=v2", body: `{"packages":["numpy"],"dry_run":true}`, ctype: "application/json"}},
		{"update, dry run", func() error { _, err := c.UpdateDryRun(ctx, v1, []string{"numpy"}); return err },
			seen{method: "PUT", path: "/envs/wf/n/deps", body: `{"packages":["numpy"],"dry_run":true}`, ctype: "application/json"}},
		{"rollback", func() error { _, err := c.Rollback(ctx, v2, 3); return err },
			seen{method: "POST", path: "/envs/wf/n/rollback", query: "version_id=v2", body: `{"revision":3}`, ctype: "application/json"}},
		{"run with a timeout", func() error {
			_, err := c.Run(ctx, v1, RunRequest{Code: "print(1)", Timeout: 1500 * time.Millisecond})
			return err
		}, seen{method: "POST", path: "/envs/wf/n/run", body: `{"code":"print(1)","timeout":1.5}`, ctype: "application/json"}},
		{"run with the server's timeout", func() error { _, err := c.Run(ctx, v1, RunRequest{Code: "x"}); return err },
			seen{method: "POST", path: "/envs/wf/n/run", body: `{"code":"x"}`, ctype: "application/json"}},
		{"export", func() error { _, err := c.Export(ctx, v2); return err }, seen{method: "GET", path: "/envs/wf/n/export", query: "version_id=v2"}},
		{"sync", func() error { _, err := c.Sync(ctx, v1); return err }, seen{method: "POST", path: "/envs/wf/n/sync"}},
		{"status", func() error { _, err := c.Status(ctx, v1); return err }, seen{method: "GET", path: "/envs/wf/n"}},
		{"delete", func() error { _, err := c.Delete(ctx, v2); return err }, seen{method: "DELETE", path: "/envs/wf/n", query: "version_id=v2"}},
		{"list a page", func() error {
			_, err := c.List(ctx, ListOptions{WorkflowID: "wf", Limit: 10, Cursor: "abc"})
			return err
		}, seen{method: "GET", path: "/envs", query: "cursor=abc&limit=10&workflow_id=wf"}},
		{"operations", func() error {
			_, err := c.Operations(ctx, v2, OperationsOptions{Limit: 5, Before: 9})
			return err
		}, seen{method: "GET", path: "/envs/wf/n/operations", query: "before=9&limit=5&version_id=v2"}},
		{"cleanup", func() error {
			_, err := c.Cleanup(ctx, CleanupRequest{DryRun: true, IdleHours: &idle})
			return err
		}, seen{method: "POST", path: "/envs/cleanup", body: `{"dry_run":true,"idle_hours":0}`, ctype: "application/json"}},
		{"agents", func() error { _, err := c.Agents(ctx); return err }, seen{method: "GET", path: "/agents"}},
		{"package holders", func() error {
			_, err := c.Holders(ctx, "Alpha", HoldersOptions{Specifier: "<1.1,>=1", Limit: 2, Cursor: "c"})
			return err
		}, seen{method: "GET", path: "/packages/Alpha", query: "cursor=c&limit=2&specifier=%3C1.1%2C%3E%3D1"}},
		{"the fleet's vulnerabilities", func() error {
			_, err := c.Vulnerabilities(ctx, VulnerabilitiesOptions{Limit: 3, EnvLimit: 7})
			return err
		}, seen{method: "GET", path: "/vulnerabilities", query: "env_limit=7&limit=3"}},
		{"an environment's vulnerabilities", func() error { _, err := c.EnvVulnerabilities(ctx, v2); return err },
			seen{method: "GET", path: "/envs/wf/n/vulnerabilities", query: "version_id=v2"}},
		{"sbom", func() error { _, err := c.SBOM(ctx, v1); return err }, seen{method: "GET", path: "/envs/wf/n/sbom"}},
		{"an id that needs escaping stays one path segment", func() error {
			_, err := c.Deps(ctx, Env{WorkflowID: "a/b", NodeID: "n"})
			return err
		}, seen{method: "GET", path: "/envs/a%2Fb/n/deps"}},
		{"a request id from the context", func() error { _, err := c.Agents(WithRequestID(ctx, "req-1")); return err },
			seen{method: "GET", path: "/agents", requestID: "req-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Fatal(err)
			}
			tt.want.auth = "Bearer s3cret"
			if last != tt.want {
				t.Errorf("got  %+v\nwant %+v", last, tt.want)
			}
		})
	}

	r, err := c.Deps(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision != 2 || !strings.HasPrefix(string(r.JSON()), `{"workflow_id": "wf", "revision": 2`) {
		t.Errorf("Deps: revision %d, JSON %s", r.Revision, r.JSON())
	}
}

// TestLockedRetry: a 423 is retried only when asked, as often as asked, after Retry-After.
func TestLockedRetry(t *testing.T) {
	tests := []struct {
		name      string
		attempts  int
		locked    int32 // answers of 423 before a 200
		wantCalls int32
		wantCode  errcode.Code
	}{
		{name: "off by default", attempts: 0, locked: 1, wantCalls: 1, wantCode: errcode.EnvLocked},
		{name: "retried until free", attempts: 3, locked: 2, wantCalls: 3},
		{name: "gives up after its attempts", attempts: 2, locked: 5, wantCalls: 3, wantCode: errcode.EnvLocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) <= tt.locked {
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(http.StatusLocked)
					fmt.Fprint(w, `{"error": {"code": "ENV_LOCKED", "message": "held"}}`)
					return
				}
				fmt.Fprint(w, `{"status": "synced"}`)
			}))
			defer srv.Close()
			c, _ := New(srv.URL, WithLockedRetry(LockedRetry{Attempts: tt.attempts, Wait: time.Millisecond}))
			_, err := c.Sync(context.Background(), Env{WorkflowID: "wf", NodeID: "n"})
			if CodeOf(err) != tt.wantCode || (tt.wantCode == "") != (err == nil) {
				t.Errorf("err %v; want code %q", err, tt.wantCode)
			}
			if calls.Load() != tt.wantCalls {
				t.Errorf("%d requests; want %d", calls.Load(), tt.wantCalls)
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"status": "not ready", "checks": {"agent": "unreachable", "database": "ok"}}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL)
	r, err := c.Readyz(context.Background())
	if err != nil || r.Ready || r.Checks["agent"] != "unreachable" {
		t.Errorf("Readyz of a 503: %+v, %v", r, err)
	}
}
