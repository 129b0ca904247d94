package console

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/shared/envid"
)

// TestTemplatesRender: every page renders from every shape its data takes (a fleet's agents, a
// single host's unreachable one, an environment without a disk view, a deleted one), and what the
// data holds is escaped, never markup.
func TestTemplatesRender(t *testing.T) {
	now := time.Now()
	key := envid.Key{WorkflowID: "wf", NodeID: "n", VersionID: "v2"}
	finished := now
	tests := []struct {
		name, page string
		data       any
		want       []string
	}{
		{"envs", "envs", envsPage{States: States, State: "IDLE", Envs: []envs.EnvView{{WorkflowID: "wf", NodeID: "<n>", VersionID: "v1", State: "IDLE", LastUsedAt: now}}, Next: "/console?cursor=x"},
			[]string{`data-env="wf/&lt;n&gt;/v1"`, "<option selected>IDLE</option>", `href="/console?cursor=x"`}},
		{"no envs", "envs", envsPage{States: States, WorkflowID: "x"}, []string{"match the filter"}},
		{"env", "env", envPage{Key: key, Status: envs.Status{Exists: true, EnvView: envs.EnvView{State: "ACTIVE", Revision: 3}, Disk: &envs.Disk{HasVenv: true, PackagesInstalled: 4}, InStep: true},
			Deps: &envs.DepsResult{Dependencies: []string{"alpha>=1"}}, Locked: []nameVersion{{"alpha", "1.1.0"}},
			Revisions: []revision{{Number: 3, Operation: "add", ID: 9, At: now}},
			History:   envs.History{Operations: []envs.OperationView{{ID: 9, Operation: "add", Status: "succeeded", StartedAt: now, FinishedAt: &finished}}}, Older: "/console/envs/wf/n?before=9"},
			[]string{`data-package="alpha" data-version="1.1.0"`, `id="in-step">true`, `data-op="9"`, `data-revision="3"`}},
		{"env without disk", "env", envPage{Key: key, Status: envs.Status{Exists: true, DiskError: "agent away"}, DepsError: "still being created"},
			[]string{"agent away", "still being created"}},
		{"deleted env", "env", envPage{Key: key}, []string{"does not exist"}},
		{"fleet agents", "agents", agentsPage{envs.AgentsView{Mode: envs.ModeFleet,
			Fleet:  &envs.FleetMembership{FleetID: "f1", ControlPlane: "cp1", ControlPlanes: []string{"cp2"}, Refused: map[string]string{"a9": "another fleet"}},
			Agents: []envs.AgentView{{ID: "a1", State: "alive", Interpreters: []envs.Interpreter{{Version: "3.11.2", Path: "/usr/bin/python3.11"}}, Gossip: &envs.AgentGossip{Load: 2}}}}},
			[]string{`data-agent="a1"`, "another fleet", "cp2", `data-python="3.11.2"`}},
		{"single host unreachable", "agents", agentsPage{envs.AgentsView{Mode: envs.ModeSingleHost,
			Agents: []envs.AgentView{{ID: "http://x", State: "unreachable", Probe: &envs.AgentProbe{Error: "refused"}}}}},
			[]string{`data-state="unreachable"`, "refused"}},
		{"cleanups", "cleanups", cleanupsPage{Cleanups: []envs.FleetOperation{{Key: key, OperationView: envs.OperationView{ID: 4, Operation: "cleanup", Status: "succeeded",
			Actor: "scheduler", Result: map[string]any{"bytes_freed": float64(3 << 20)}}}}},
			[]string{`data-env="wf/n/v2"`, "3.0 MiB", `href="/console/envs/wf/n?version_id=v2"`}},
		{"error", "error", errorPage{Code: "ENV_NOT_FOUND", Message: "<script>"}, []string{"&lt;script&gt;"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := pages.ExecuteTemplate(&b, tt.page, tt.data); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("page lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
