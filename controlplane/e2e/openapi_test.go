package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// schemathesisBin finds the pinned schemathesis CLI: SCHEMATHESIS_BIN, else what
// scripts/install-schemathesis.sh installs. In CI (CI=true) its absence fails the test; elsewhere
// the test is skipped with the command that installs it.
func schemathesisBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("SCHEMATHESIS_BIN")
	if p == "" {
		p = filepath.Join(testenv.RepoRoot(t), ".tools", "schemathesis", "bin", "st")
	}
	if _, err := os.Stat(p); err != nil {
		msg := "schemathesis is not installed (" + p + "); run: bash scripts/install-schemathesis.sh"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// TestSchemathesis fuzzes the live control plane from its own /openapi.json: generated valid and
// invalid requests for every operation, with an admin token, must never get a server error, and
// every status and content type must be one the document declares. The seed is fixed so a
// failure reproduces (SCHEMATHESIS_SEED picks another); the number of examples bounds the time.
func TestSchemathesis(t *testing.T) {
	t.Parallel()
	st := schemathesisBin(t)
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")

	seed := os.Getenv("SCHEMATHESIS_SEED")
	if seed == "" {
		seed = "20261127"
	}
	examples := os.Getenv("SCHEMATHESIS_MAX_EXAMPLES")
	if examples == "" {
		examples = "25"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	work := t.TempDir() // schemathesis and hypothesis write their state into the working directory
	cmd := exec.CommandContext(ctx, st, "run", f.URL+"/openapi.json",
		"--header", "Authorization: Bearer "+adminSecret,
		"--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
		"--max-examples", examples,
		"--seed", seed,
		"--workers", "1", // CPython 3.11 before 3.11.8 can fail ast.parse under threads (hypothesis uses it)
		"--request-timeout", "120",
		"--max-redirects", "0",
		"--no-color",
	)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "HOME="+work, "SCHEMATHESIS_TELEMETRY=false", "NO_COLOR=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("schemathesis (seed %s, %s examples) took %s", seed, examples, time.Since(start).Round(time.Second))
	if ctx.Err() != nil {
		t.Fatalf("schemathesis did not finish within 5 minutes\n%s", tail(string(out), 8000))
	}
	if err != nil {
		t.Fatalf("schemathesis: %v\n%s", err, tail(string(out), 12000))
	}
	if !strings.Contains(string(out), "passed") {
		t.Fatalf("schemathesis reported no passed checks:\n%s", tail(string(out), 4000))
	}
	t.Logf("schemathesis summary:\n%s", tail(string(out), 1200))
	expect(t, f.do(t, "GET", "/readyz", nil), 200, "")
}
