package e2e

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestErrorsSayWhatToDo: what an API caller reads in an error tells them what went wrong with
// their request and what to do, never the server's paths or uv's command line (those stay in
// the logs and the audit).
func TestErrorsSayWhatToDo(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "errs", "node_id": "n", "packages": []string{"beta==2.0.0"}}), 201, "")

	t.Run("resolution failure", func(t *testing.T) {
		r := f.do(t, "POST", "/envs/errs/n/deps", map[string]any{"packages": []string{"gamma"}})
		expect(t, r, 422, "PACKAGE_RESOLUTION_FAILED")
		t.Logf("body: %s", r.Raw)
		noServerDetails(t, f, r.Raw)
		e := r.Body["error"].(map[string]any)
		if out, _ := e["uv_output"].(string); !strings.Contains(out, "gamma") || !strings.Contains(out, "alpha") {
			t.Errorf("uv_output %q; want uv's account of the conflict (gamma, alpha)", out)
		}
	})

	t.Run("the audit keeps the command line", func(t *testing.T) {
		r := f.do(t, "GET", "/envs/errs/n/operations?limit=1", nil)
		expect(t, r, 200, "")
		op := r.Body["operations"].([]any)[0].(map[string]any)
		if msg, _ := op["error_message"].(string); op["operation"] != "add" || !strings.Contains(msg, "--project") {
			t.Errorf("the failed add's audit row: %v; want uv's command line in its error_message", op)
		}
	})

	t.Run("no-op update", func(t *testing.T) {
		before := f.do(t, "GET", "/envs/errs/n/deps", nil)
		r := f.do(t, "PUT", "/envs/errs/n/deps", map[string]any{"packages": []string{"beta"}})
		expect(t, r, 200, "")
		if r.str("status") != "unchanged" || r.Body["revision"] != before.Body["revision"] {
			t.Errorf("an update with nothing newer allowed: status %q, revision %v; want unchanged at %v", r.str("status"), r.Body["revision"], before.Body["revision"])
		}
		r = f.do(t, "PUT", "/envs/errs/n/deps", map[string]any{"packages": []string{"beta<=2.0.0"}})
		expect(t, r, 200, "")
		if r.str("status") != "updated" {
			t.Errorf("an update that changes the specifier: status %q; want updated", r.str("status"))
		}
	})

	t.Run("python unavailable lists the versions", func(t *testing.T) {
		r := f.do(t, "POST", "/envs", map[string]any{"workflow_id": "errs", "node_id": "py", "python_version": "3.99"})
		expect(t, r, 422, "PYTHON_UNAVAILABLE")
		ag := f.do(t, "GET", "/agents", nil)
		ip := ag.Body["agents"].([]any)[0].(map[string]any)["interpreters"].([]any)[0].(map[string]any)
		minor := strings.Join(strings.SplitN(ip["version"].(string), ".", 3)[:2], ".")
		if msg := r.Body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, minor) {
			t.Errorf("message %q; want it to list the agent's %s", msg, minor)
		}
		noServerDetails(t, f, r.Raw)
	})

	t.Run("comma-separated packages in a form", func(t *testing.T) {
		r := f.createURLEncoded(t, url.Values{"workflow_id": {"errs"}, "node_id": {"form"}, "packages": {"alpha,delta"}})
		expect(t, r, 400, "INVALID_PACKAGES")
		if msg := r.Body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "JSON array") || !strings.Contains(msg, "packages=alpha&packages=delta") {
			t.Errorf("message %q; want it to say to send a JSON array or repeat the field", msg)
		}
	})

	t.Run("JSON without a Content-Type", func(t *testing.T) {
		req, _ := http.NewRequest("POST", f.URL+"/envs", strings.NewReader(`{"workflow_id": "errs", "node_id": "nocontenttype", "packages": ["delta==0.1.0"]}`))
		req.Header.Del("Content-Type")
		expect(t, f.send(t, req), 201, "")
		req, _ = http.NewRequest("POST", f.URL+"/envs", strings.NewReader(`{"workflow_id": "errs", "node_id": "curl"}`))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
		r := f.send(t, req)
		expect(t, r, 415, "UNSUPPORTED_MEDIA_TYPE")
		if msg := r.Body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "Content-Type: application/json") {
			t.Errorf("message %q; want it to say to set Content-Type: application/json", msg)
		}
	})

	t.Run("Retry-After on 423", func(t *testing.T) {
		stalled := f.Index.Stall("delta")
		first := make(chan response, 1)
		go func() { first <- f.do(t, "POST", "/envs/errs/n/deps", map[string]any{"packages": []string{"delta"}}) }()
		select {
		case <-stalled:
		case <-time.After(60 * time.Second):
			t.Fatal("the add never reached the index")
		}
		for _, c := range []struct{ method, path, body string }{
			// Runs are not in this list: a run is never refused because of a change (builds).
			{"POST", "/envs/errs/n/deps", `{"packages": ["alpha"]}`}, {"POST", "/envs/errs/n/sync", ""}, {"DELETE", "/envs/errs/n", ""},
		} {
			req, _ := http.NewRequest(c.method, f.URL+c.path, strings.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+adminSecret)
			if c.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// The harness's LEASE_TTL is 6s: the lease in the way expires within it.
			if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 423 || err != nil || n < 1 || n > 6 {
				t.Errorf("%s %s: %d with Retry-After %q; want 423 with 1 to 6 seconds", c.method, c.path, resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
		f.Index.Release("delta")
		expect(t, <-first, 200, "")
	})
}

// noServerDetails fails when an answer shows the server's paths, uv's command line or uv's hint
// to pass --frozen (which a caller of the API cannot do).
func noServerDetails(t *testing.T, f *fabric, raw string) {
	t.Helper()
	for _, bad := range []string{f.DataRoot, f.Envs, f.Cache, "--project", "--python", "--frozen", "uv add --", "uv sync --"} {
		if strings.Contains(raw, bad) {
			t.Errorf("the answer shows %q:\n%s", bad, raw)
		}
	}
}
