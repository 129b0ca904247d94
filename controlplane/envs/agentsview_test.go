package envs_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/envfabric/envfabric/controlplane/envs"
)

// describing is an agent that only describes itself.
type describing struct {
	envs.Agent // nil: the view calls nothing else
	info       envs.AgentInfo
	err        error
}

func (d describing) Name() string { return "configured" }
func (d describing) Describe(context.Context) (envs.AgentInfo, error) {
	return d.info, d.err
}

// pinging is an agent that cannot describe itself, only answer a ping.
type pinging struct {
	envs.Agent
	err error
}

func (p pinging) Name() string               { return "pinged" }
func (p pinging) Ping(context.Context) error { return p.err }

// TestSingleHostView: the single host's view asks its agent, keeps every interpreter (two paths of
// one version are two entries), and says why an agent is unreachable.
func TestSingleHostView(t *testing.T) {
	py := []envs.Interpreter{{Version: "3.12.1", Path: "/usr/bin/python3.12"}, {Version: "3.11.7", Path: "/usr/bin/python3.11"},
		{Version: "3.11.7", Path: "/opt/py/bin/python3.11"}}
	tests := []struct {
		name  string
		agent envs.Agent
		want  envs.AgentView
	}{
		{"reachable", describing{info: envs.AgentInfo{ID: "a1", URL: "http://127.0.0.1:8081", Version: "v1", Interpreters: py,
			Storage: envs.AgentStorage{UVVersion: "0.9.0", LinkMode: "hardlink"}}},
			envs.AgentView{ID: "a1", URL: "http://127.0.0.1:8081", State: envs.AgentAlive, Version: "v1",
				Interpreters: []envs.Interpreter{py[2], py[1], py[0]},
				Probe:        &envs.AgentProbe{Reachable: true, Storage: envs.AgentStorage{UVVersion: "0.9.0", LinkMode: "hardlink"}}}},
		{"unreachable", describing{info: envs.AgentInfo{URL: "http://127.0.0.1:8081"}, err: errors.New("connection refused")},
			envs.AgentView{ID: "configured", URL: "http://127.0.0.1:8081", State: envs.AgentUnreachable, Interpreters: []envs.Interpreter{},
				Probe: &envs.AgentProbe{Error: "connection refused"}}},
		{"ping only", pinging{},
			envs.AgentView{ID: "pinged", State: envs.AgentAlive, Interpreters: []envs.Interpreter{}, Probe: &envs.AgentProbe{Reachable: true}}},
		{"ping fails", pinging{err: errors.New("down")},
			envs.AgentView{ID: "pinged", State: envs.AgentUnreachable, Interpreters: []envs.Interpreter{}, Probe: &envs.AgentProbe{Error: "down"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := envs.One(tt.agent).View(t.Context())
			if v.Mode != envs.ModeSingleHost || v.Fleet != nil || len(v.Agents) != 1 {
				t.Fatalf("got %+v; want one agent in single-host mode, no fleet part", v)
			}
			if got := v.Agents[0]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v (probe %+v); want %+v (probe %+v)", got, got.Probe, tt.want, tt.want.Probe)
			}
		})
	}
}
