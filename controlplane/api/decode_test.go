package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/errcode"
)

// TestDecodeCreateSaysWhatToDo: the ways a caller gets POST /envs almost right are either read
// as meant (JSON without a Content-Type, a comma inside one requirement) or refused with a
// message that says what to send instead; a body that does not match the document (a string
// where an array is declared) is refused, not guessed at.
func TestDecodeCreateSaysWhatToDo(t *testing.T) {
	h := newTestHandler(t)
	form := func(vs url.Values) (string, string) { return "application/x-www-form-urlencoded", vs.Encode() }
	tests := []struct {
		name, contentType, body string
		code                    errcode.Code // "" : decoded
		packages                []string
		hints                   []string // in the message
	}{
		{name: "JSON without a Content-Type", body: `{"workflow_id": "wf", "node_id": "n", "packages": ["numpy"]}`, packages: []string{"numpy"}},
		{name: "JSON sent as a form (curl -d)", contentType: "application/x-www-form-urlencoded", body: `{"workflow_id": "wf", "node_id": "n"}`,
			code: errcode.UnsupportedMediaType, hints: []string{"Content-Type: application/json"}},
		{name: "packages as a string in JSON", contentType: "application/json", body: `{"workflow_id": "wf", "node_id": "n", "packages": "numpy"}`,
			code: errcode.InvalidRequest, hints: []string{"JSON array"}},
		{name: "packages as a JSON array in a JSON string", contentType: "application/json", body: `{"workflow_id": "wf", "node_id": "n", "packages": "[\"numpy\"]"}`,
			code: errcode.InvalidRequest, hints: []string{"JSON array"}},
		{name: "two packages in one JSON item", contentType: "application/json", body: `{"workflow_id": "wf", "node_id": "n", "packages": ["numpy, pandas"]}`,
			code: errcode.InvalidPackages, hints: []string{`["numpy","pandas"]`, "own array item"}},
	}
	for _, f := range []struct {
		name     string
		packages []string
		code     errcode.Code
		want     []string
		hints    []string
	}{
		{name: "form: comma-separated packages", packages: []string{"numpy,pandas"}, code: errcode.InvalidPackages,
			hints: []string{`packages=["numpy","pandas"]`, "packages=numpy&packages=pandas"}},
		{name: "form: version clauses", packages: []string{"numpy>=1.24,<2"}, want: []string{"numpy>=1.24,<2"}},
		{name: "form: extras", packages: []string{"pkg[a,b]>=1"}, want: []string{"pkg[a,b]>=1"}},
		{name: "form: a marker", packages: []string{`pkg; python_version in "3.10,3.11"`}, want: []string{`pkg; python_version in "3.10,3.11"`}},
		{name: "form: repeated fields", packages: []string{"numpy", "pandas"}, want: []string{"numpy", "pandas"}},
		{name: "form: a JSON array", packages: []string{`["numpy", "pandas"]`}, want: []string{"numpy", "pandas"}},
	} {
		ct, body := form(url.Values{"workflow_id": {"wf"}, "node_id": {"n"}, "packages": f.packages})
		tests = append(tests, struct {
			name, contentType, body string
			code                    errcode.Code
			packages                []string
			hints                   []string
		}{f.name, ct, body, f.code, f.want, f.hints})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/envs", strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			if err := checkBody(r, formBody); err != nil {
				t.Fatalf("checkBody: %v", err)
			}
			req, err := h.decodeCreate(r)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("got %v; want it decoded", err)
				}
				if !slices.Equal(req.Packages, tt.packages) {
					t.Errorf("packages %q; want %q", req.Packages, tt.packages)
				}
				return
			}
			if errcode.Of(err) != tt.code {
				t.Fatalf("got %v; want %s", err, tt.code)
			}
			for _, hint := range tt.hints {
				if !strings.Contains(err.Error(), hint) {
					t.Errorf("message %q; want it to say %q", err, hint)
				}
			}
		})
	}
}

// TestCheckBodyContentType: no Content-Type reads JSON; form data where JSON is read says to set
// Content-Type: application/json.
func TestCheckBodyContentType(t *testing.T) {
	r := httptest.NewRequest("POST", "/envs/wf/n/deps", strings.NewReader(`{"packages": ["a"]}`))
	if err := checkBody(r, jsonBody); err != nil {
		t.Errorf("no Content-Type: %v; want it read as JSON", err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if err := checkBody(r, jsonBody); errcode.Of(err) != errcode.UnsupportedMediaType || !strings.Contains(err.Error(), "Content-Type: application/json") {
		t.Errorf("form data: %v; want UNSUPPORTED_MEDIA_TYPE saying to send Content-Type: application/json", err)
	}
}

// TestRetryAfter: every 423 says when to try again: the seconds until the lease in the way
// expires, rounded up, at least 1.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	locked := func(in time.Duration) error {
		return fmt.Errorf("taking the lease: %w", &envs.LockedError{Holder: store.Lease{Operation: "add", ExpiresAt: now.Add(in)}})
	}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"lease expires in 2.2s", locked(2200 * time.Millisecond), 3},
		{"lease expires in 30s", locked(30 * time.Second), 30},
		{"lease just expired", locked(-time.Second), 1},
		{"the agent's project lock", &envs.AgentError{Code: errcode.EnvLocked, Message: "busy"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.err, now); got != tt.want {
				t.Errorf("got %d; want %d", got, tt.want)
			}
		})
	}
	h := newTestHandler(t)
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.fail(w, httptest.NewRequest("POST", "/envs/wf/n/deps", nil), tt.err)
		if w.Code != http.StatusLocked || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s: %d with Retry-After %q; want 423 with one", tt.name, w.Code, w.Header().Get("Retry-After"))
		}
	}
	w := httptest.NewRecorder()
	h.fail(w, httptest.NewRequest("GET", "/envs/wf/n", nil), errcode.New(errcode.EnvNotFound, "no"))
	if w.Header().Get("Retry-After") != "" {
		t.Errorf("a 404 carries Retry-After %q; want none", w.Header().Get("Retry-After"))
	}
}
