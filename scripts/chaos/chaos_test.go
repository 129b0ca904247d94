package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/shared/testutil/pgtest"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// TestChaos is the 30-second chaos run of `make test`: the whole harness, and a failure for
// every invariant violation. It is a Go test rather than a Makefile step so that it runs wherever
// `go test ./...` runs (make test, .ci/run), is skipped by -short like the other slow tests, and
// follows the suite's rules for missing tools (skipped locally, failed under CI=true).
// CHAOS_SECONDS and the other CHAOS_* settings apply.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("a chaos run takes about two minutes; skipped with -short")
	}
	if os.Getenv("UV_BIN") == "" {
		t.Setenv("UV_BIN", testenv.UV(t))
	}
	if os.Getenv("CHAOS_SECONDS") == "" {
		t.Setenv("CHAOS_SECONDS", "30")
	}
	keep := os.Getenv("CHAOS_OUT") != ""
	if !keep {
		// Kept when the test fails: the history and the programs' logs are the evidence.
		out, err := os.MkdirTemp("", "envfabric-chaos-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("CHAOS_OUT", out)
		t.Cleanup(func() {
			if !t.Failed() {
				os.RemoveAll(out)
			}
		})
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := loadConfig(log)
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(t.Context(), cfg, log)
	if errors.Is(err, pgtest.ErrNotInstalled) {
		pgtest.Unavailable(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	res.print(&b, cfg)
	t.Log("\n" + b.String())
	if len(res.Violations) > 0 {
		t.Errorf("%s (history, report and logs: %s)", res.verdict(), cfg.Out)
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
