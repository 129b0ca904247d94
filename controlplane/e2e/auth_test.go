package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// as sends a request with the given Authorization header ("" sends none) and an X-Actor that
// must never become the identity.
func (f *fabric) as(t *testing.T, authz, method, path, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, f.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	req.Header.Set("X-Actor", "mallory")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Raw: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.Body); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	if resp.StatusCode == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: Bearer")
	}
	return r
}

// TestAuthentication: with tokens configured, no token and a wrong token are 401 UNAUTHENTICATED,
// a token whose role is too weak is 403 FORBIDDEN, refused requests change nothing, and the audit
// names the token, whatever X-Actor claims.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	spec := loadOpenAPI(t, f)
	const create = `{"workflow_id": "wf", "node_id": "n", "packages": ["alpha==1.0.0"]}`

	tests := []struct {
		name, authz, method, path, body string
		status                          int
		code                            string
	}{
		{"no token: create", "", "POST", "/envs", create, 401, "UNAUTHENTICATED"},
		{"no token: list", "", "GET", "/envs", "", 401, "UNAUTHENTICATED"},
		{"no token: run", "", "POST", "/envs/wf/n/run", `{"code": "print(1)"}`, 401, "UNAUTHENTICATED"},
		{"no token: cleanup", "", "POST", "/envs/cleanup", `{"idle_hours": 0}`, 401, "UNAUTHENTICATED"},
		{"no token: metrics", "", "GET", "/metrics", "", 401, "UNAUTHENTICATED"},
		{"no token: agents", "", "GET", "/agents", "", 401, "UNAUTHENTICATED"},
		{"bad token", "Bearer not-a-configured-token-at-all", "POST", "/envs", create, 401, "UNAUTHENTICATED"},
		{"a secret's prefix", "Bearer " + adminSecret[:len(adminSecret)-1], "GET", "/envs", "", 401, "UNAUTHENTICATED"},
		{"a secret with more", "Bearer " + adminSecret + "x", "GET", "/envs", "", 401, "UNAUTHENTICATED"},
		{"basic scheme", "Basic " + adminSecret, "GET", "/envs", "", 401, "UNAUTHENTICATED"},
		{"reader may not create", "Bearer " + readerSecret, "POST", "/envs", create, 403, "FORBIDDEN"},
		{"reader may not add", "Bearer " + readerSecret, "POST", "/envs/wf/n/deps", `{"packages": ["beta"]}`, 403, "FORBIDDEN"},
		{"reader may not run", "Bearer " + readerSecret, "POST", "/envs/wf/n/run", `{"code": "print(1)"}`, 403, "FORBIDDEN"},
		{"reader may not delete", "Bearer " + readerSecret, "DELETE", "/envs/wf/n", "", 403, "FORBIDDEN"},
		{"reader may not sync", "Bearer " + readerSecret, "POST", "/envs/wf/n/sync", "", 403, "FORBIDDEN"},
		{"writer may not clean up", "Bearer " + writerSecret, "POST", "/envs/cleanup", `{"idle_hours": 0}`, 403, "FORBIDDEN"},
	}
	before := treeSnapshot(t, f.Envs)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.as(t, tt.authz, tt.method, tt.path, tt.body)
			expect(t, r, tt.status, tt.code)
			spec.checkStatus(t, tt.method, tt.path, r.Status)
		})
	}
	if diffs := diffSnapshots(before, treeSnapshot(t, f.Envs)); len(diffs) > 0 {
		t.Errorf("refused requests changed the disk: %v", diffs)
	}

	// Open without a token: probes and the API's description.
	for _, p := range []string{"/healthz", "/readyz", "/openapi.json"} {
		if r := f.as(t, "", "GET", p, ""); r.Status != 200 {
			t.Errorf("GET %s without a token: %d %s", p, r.Status, tail(r.Raw, 300))
		}
	}
	// A read token reads, metrics included.
	for _, p := range []string{"/envs", "/metrics", "/agents"} {
		if r := f.as(t, "Bearer "+readerSecret, "GET", p, ""); r.Status != 200 {
			t.Errorf("reader GET %s: %d %s", p, r.Status, tail(r.Raw, 300))
		}
	}

	// What each role may do, and who the audit says did it.
	expect(t, f.as(t, "Bearer "+writerSecret, "POST", "/envs", create), 201, "")
	expect(t, f.as(t, "Bearer "+writerSecret, "POST", "/envs/wf/n/run", `{"code": "print(1)"}`), 200, "")
	expect(t, f.as(t, "Bearer "+readerSecret, "GET", "/envs/wf/n/deps", ""), 200, "")
	expect(t, f.as(t, "Bearer "+adminSecret, "POST", "/envs/cleanup", `{"dry_run": true, "idle_hours": 0}`), 200, "")
	r := f.as(t, "Bearer "+readerSecret, "GET", "/envs/wf/n/operations", "")
	expect(t, r, 200, "")
	var actors []string
	for _, o := range r.Body["operations"].([]any) {
		op := o.(map[string]any)
		actors = append(actors, op["operation"].(string)+":"+op["actor"].(string))
	}
	if got, want := strings.Join(actors, " "), "run:e2e-writer create:e2e-writer"; got != want {
		t.Errorf("audit actors %q; want %q (the token's name, not X-Actor)", got, want)
	}
}

// TestOpenWithoutTokens: on loopback the API may run open; the audit then records X-Actor.
func TestOpenWithoutTokens(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{cpEnv: []string{"API_TOKENS="}})
	req, _ := http.NewRequest("POST", f.URL+"/envs", strings.NewReader(`{"workflow_id": "wf", "node_id": "n"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer ignored-when-no-tokens-are-configured")
	expect(t, f.send(t, req), 201, "")
	r := f.do(t, "GET", "/envs/wf/n/operations", nil)
	ops := r.Body["operations"].([]any)
	if a := ops[0].(map[string]any)["actor"]; a != "e2e-test" {
		t.Errorf("actor %v; want the X-Actor e2e-test", a)
	}
}

// TestRefusesOpenAPIBeyondLoopback: the control plane does not start on a non-loopback address
// without tokens, unless told to.
func TestRefusesOpenAPIBeyondLoopback(t *testing.T) {
	t.Parallel()
	cpBin, _ := binaries(t)
	tests := []struct {
		name  string
		env   []string
		start bool
	}{
		{"all interfaces, no tokens", []string{"LISTEN_ADDR=0.0.0.0:0"}, false},
		{"all interfaces, no tokens, open on purpose", []string{"LISTEN_ADDR=0.0.0.0:0", "API_ALLOW_NO_AUTH=true"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, cpBin)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATA_ROOT=" + t.TempDir(), "CLEANUP_INTERVAL=0"}, tt.env...)
			out, err := cmd.CombinedOutput()
			if !tt.start {
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "API_ALLOW_NO_AUTH") {
					t.Fatalf("got %v\n%s; want exit status 2 naming API_ALLOW_NO_AUTH", err, out)
				}
				return
			}
			// It got past the configuration: it ran until the deadline killed it.
			if ctx.Err() == nil || strings.Contains(string(out), "configuration") {
				t.Fatalf("did not start: %v\n%s", err, out)
			}
		})
	}
}
