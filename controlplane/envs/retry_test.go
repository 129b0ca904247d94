package envs_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/shared/errcode"
)

// runner is an agent whose runs answer with err (nil: they succeed, printing its name).
type runner struct {
	fakeAgent
	name string
	err  error
	runs int
}

func (a *runner) Name() string { return a.name }
func (a *runner) Run(context.Context, envs.RunSpec) (envs.RunResult, error) {
	a.runs++
	if a.err != nil {
		return envs.RunResult{}, a.err
	}
	return envs.RunResult{Stdout: []byte(a.name), ExitReason: "exited"}, nil
}

// pair is a fleet of two agents: Pick gives the first unless it is avoided.
type pair struct{ first, second envs.Agent }

func (p pair) Pick(_ context.Context, need envs.Need) (envs.Agent, error) {
	if need.Avoid != p.first.Name() {
		return p.first, nil
	}
	if p.second == nil {
		return nil, errcode.New(errcode.NoAgentAvailable, "no other agent")
	}
	return p.second, nil
}
func (p pair) All(context.Context) []envs.Agent     { return []envs.Agent{p.first, p.second} }
func (p pair) Gone(context.Context, string) bool    { return false }
func (p pair) View(context.Context) envs.AgentsView { return envs.AgentsView{} }

// TestRunRetriedWhenNotStarted: a run whose agent refused the connection (nothing started) runs
// once more on another live agent, which the audit names; a failure after the agent had the call
// is answered as it is, never run twice; with no other agent the first failure is the answer.
func TestRunRetriedWhenNotStarted(t *testing.T) {
	refused := errcode.Wrap(errcode.AgentUnavailable, fmt.Errorf("%w: dial tcp: connection refused", envs.ErrNotStarted), "agent a1 refused the connection")
	died := errcode.New(errcode.AgentUnavailable, "agent a1: running code: connection reset")
	tests := []struct {
		name       string
		firstErr   error
		second     bool
		wantCode   errcode.Code
		wantStdout string
		wantSecond int // runs on the second agent
	}{
		{"refused: runs on the other", refused, true, "", "a2", 1},
		{"died with the call: not again", died, true, errcode.AgentUnavailable, "", 0},
		{"refused, no other agent", refused, false, errcode.AgentUnavailable, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := &runner{name: "a1", err: tt.firstErr}
			second := &runner{name: "a2"}
			agents := pair{first: first}
			if tt.second {
				agents.second = second
			}
			st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "fabric.db"), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			svc := envs.New(st, agents, nil, envs.Options{Instance: "test", DefaultPython: "3.11", DefaultTimeout: time.Second,
				MaxTimeout: time.Minute, MaxOutputBytes: 1 << 20, LeaseTTL: time.Minute, CleanupIdle: time.Hour}, slog.New(slog.DiscardHandler))
			if _, err := svc.Create(t.Context(), envs.Caller{Actor: "t"}, envs.CreateRequest{Key: key}); err != nil {
				t.Fatal(err)
			}
			res, runErr := svc.Run(t.Context(), envs.Caller{Actor: "t"}, key, envs.RunRequest{Code: "print(1)"})
			if tt.wantCode == "" && runErr != nil || tt.wantCode != "" && !errors.Is(runErr, tt.firstErr) {
				t.Fatalf("got %v; want %v", runErr, cmp.Or[any](tt.wantCode, "success"))
			}
			if string(res.Stdout) != tt.wantStdout || second.runs != tt.wantSecond || first.runs != 1 {
				t.Errorf("stdout %q, runs a1 %d a2 %d; want %q, 1, %d", res.Stdout, first.runs, second.runs, tt.wantStdout, tt.wantSecond)
			}
			h, err := svc.Operations(t.Context(), key, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			op := h.Operations[0]
			wantAgent := "a1"
			if tt.wantSecond > 0 {
				wantAgent = "a2"
			}
			if op.Operation != "run" || op.Agent != wantAgent {
				t.Errorf("audit: %s by %q; want run by %q", op.Operation, op.Agent, wantAgent)
			}
		})
	}
}
