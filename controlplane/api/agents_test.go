package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/envs"
)

type staticView envs.AgentsView

func (v staticView) View(context.Context) envs.AgentsView { return envs.AgentsView(v) }

// TestAgentsResponse: GET /agents renders one shape for both modes, the single host's a subset of
// the fleet's plus its probe, every field documented in the OpenAPI document.
func TestAgentsResponse(t *testing.T) {
	py := []envs.Interpreter{{Version: "3.11.7", Path: "/opt/py/bin/python3.11"}, {Version: "3.11.7", Path: "/usr/bin/python3.11"}}
	single := envs.AgentsView{Mode: envs.ModeSingleHost, Agents: []envs.AgentView{{ID: "a1", URL: "http://127.0.0.1:8081",
		State: envs.AgentAlive, Version: "v1", Interpreters: py, Probe: &envs.AgentProbe{Reachable: true, Storage: envs.AgentStorage{UVVersion: "0.9.0"}}}}}
	fleet := envs.AgentsView{Mode: envs.ModeFleet, Agents: []envs.AgentView{{ID: "a1", URL: "https://10.0.0.1:8081",
		State: envs.AgentSuspect, Sandbox: "namespace", Version: "v1", Interpreters: py,
		Gossip: &envs.AgentGossip{Addr: "10.0.0.1:7946", Load: 2, FleetID: "fleet-a"}}},
		Fleet: &envs.FleetMembership{FleetID: "fleet-a", ControlPlane: "cp0", GossipAddr: "10.0.0.9:7946"}}
	tests := []struct {
		name      string
		view      envs.Viewer
		top, each []string // the keys rendered
	}{
		{"single host", staticView(single), []string{"agents", "mode"},
			[]string{"agent_id", "interpreters", "reachable", "state", "url", "uv_version", "version"}},
		{"fleet", staticView(fleet), []string{"agents", "control_plane", "control_planes", "fleet_id", "gossip_addr", "mode", "refused"},
			[]string{"agent_id", "fleet_id", "gossip_addr", "interpreters", "load", "sandbox", "state", "url", "version"}},
		{"no agents configured", nil, []string{"agents", "mode"}, nil},
	}
	doc := loadDoc(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(nil, Options{Agents: tt.view, Registry: prometheus.NewRegistry(), MaxBodyBytes: 1 << 20, BodyTimeout: time.Minute}, slog.New(slog.DiscardHandler))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/agents", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("GET /agents: %d %s", rec.Code, rec.Body)
			}
			var body struct {
				Mode   string                       `json:"mode"`
				Agents []map[string]json.RawMessage `json:"agents"`
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &top); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if got := sortedKeys(top); !slices.Equal(got, tt.top) {
				t.Errorf("top-level keys %q; want %q", got, tt.top)
			}
			checkDocumented(t, doc, "Agents", top)
			for _, a := range body.Agents {
				if got := sortedKeys(a); !slices.Equal(got, tt.each) {
					t.Errorf("agent keys %q; want %q", got, tt.each)
				}
				checkDocumented(t, doc, "Agent", a)
				var ps []Interpreter
				_ = json.Unmarshal(a["interpreters"], &ps)
				if len(ps) != 2 || ps[0].Path == ps[1].Path {
					t.Errorf("interpreters %s; want both paths of 3.11.7", a["interpreters"])
				}
			}
		})
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func checkDocumented[V any](t *testing.T, doc openAPIDoc, schema string, m map[string]V) {
	t.Helper()
	props := doc.Components.Schemas[schema].Properties
	for k := range m {
		if _, ok := props[k]; !ok {
			t.Errorf("%s is rendered but not a property of the %s schema", k, schema)
		}
	}
}
