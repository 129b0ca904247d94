package runner_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/warm"
)

// runKind is how a test's code runs: cold (a fresh interpreter, agent/runner) or warm (forked
// from a warm interpreter of the environment, agent/warm). Every escape test runs both ways.
type runKind struct {
	name string
	warm bool
}

var runners = []runKind{{"cold", false}, {"warm", true}}

// forRunners runs fn for each runner and each tier.
func forRunners(t *testing.T, tiers []sandbox.Tier, fn func(t *testing.T, r runKind, tier sandbox.Tier)) {
	for _, r := range runners {
		t.Run(r.name, func(t *testing.T) {
			for _, tier := range tiers {
				t.Run(string(tier), func(t *testing.T) { fn(t, r, tier) })
			}
		})
	}
}

var (
	poolsMu sync.Mutex
	pools   = map[string]*warm.Pool{}
)

// pool is the warm pool of this (sub)test for sb: runs of one test with the same sandbox share
// it (and so their warm interpreter), as runs of one build do on an agent.
func pool(t *testing.T, sb sandbox.Config) *warm.Pool {
	t.Helper()
	key := t.Name() + "\x00" + fmt.Sprintf("%+v", sb)
	poolsMu.Lock()
	defer poolsMu.Unlock()
	if p := pools[key]; p != nil {
		return p
	}
	p := warm.New(warm.Config{Sandbox: sb, MemoryBytes: 4 << 30, ParentsPerBuild: 1, WaitFree: time.Minute,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	pools[key] = p
	t.Cleanup(func() {
		poolsMu.Lock()
		delete(pools, key)
		poolsMu.Unlock()
		p.Close()
	})
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// run runs spec the runner's way; a warm run that went cold fails the test.
func (r runKind) run(t *testing.T, spec runner.Spec) (runner.Result, error) {
	t.Helper()
	if !r.warm {
		return runner.Run(t.Context(), spec)
	}
	p := pool(t, spec.Sandbox)
	if !p.Enabled() {
		t.Fatalf("warm runs disabled for %s", spec.Sandbox.Describe())
	}
	b := warm.Build{ID: spec.VenvDir, Venv: spec.VenvDir}
	if err := p.Prestart(t.Context(), b); err != nil {
		t.Fatalf("start the warm interpreter: %v", err)
	}
	res, ok, err := p.Run(t.Context(), b, spec)
	if !ok && err == nil {
		t.Fatalf("the run went cold")
	}
	return res, err
}

// venvOf is an environment's .venv.
func venvOf(env string) string { return filepath.Join(env, ".venv") }
