package e2e

import (
	"strings"
	"testing"
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
