package fleet

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/gossip"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// member joins the control plane's gossip as an agent would, with the metadata given.
func member(t *testing.T, seed string, meta gossip.Meta) {
	t.Helper()
	m, err := gossip.Join(t.Context(), gossip.Config{NodeName: meta.ID, BindAddr: freeAddr(t), Seeds: []string{seed}, Profile: "local"},
		gossip.Hooks{Meta: func() gossip.Meta { return meta }}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
}

// TestPick: the control plane routes each operation to an agent that has what it needs, the least
// loaded first, and never to one on other storage.
func TestPick(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "fabric.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	gossipAddr := freeAddr(t)
	f, err := Join(t.Context(), Config{Instance: "cp", FleetID: "fleet-a", Gossip: gossip.Config{BindAddr: gossipAddr, Profile: "local"}},
		st, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	py311 := gossip.Python{Version: "3.11.7", Path: "/opt/py/3.11/bin/python3.11"}
	py312 := gossip.Python{Version: "3.12.1", Path: "/opt/py/3.12/bin/python3.12"}
	member(t, gossipAddr, gossip.Meta{Role: gossip.RoleAgent, ID: "busy", URL: "http://127.0.0.1:1", Fleet: "fleet-a", Load: 5, Pythons: []gossip.Python{py311}})
	member(t, gossipAddr, gossip.Meta{Role: gossip.RoleAgent, ID: "idle", URL: "http://127.0.0.1:2", Fleet: "fleet-a", Pythons: []gossip.Python{py311}})
	member(t, gossipAddr, gossip.Meta{Role: gossip.RoleAgent, ID: "new", URL: "http://127.0.0.1:3", Fleet: "fleet-a", Pythons: []gossip.Python{py312}})
	member(t, gossipAddr, gossip.Meta{Role: gossip.RoleAgent, ID: "elsewhere", URL: "http://127.0.0.1:4", Fleet: "fleet-b", Pythons: []gossip.Python{py311, py312}})

	deadline := time.Now().Add(15 * time.Second)
	for len(f.All(t.Context())) != 3 || len(f.View(t.Context()).Fleet.Refused) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("fleet view: %+v", f.View(t.Context()))
		}
		time.Sleep(50 * time.Millisecond)
	}

	tests := []struct {
		name string
		need envs.Need
		want string // agent id, or "" for NO_AGENT_AVAILABLE
	}{
		{"least loaded with the interpreter", envs.Need{PythonPath: py311.Path}, "idle"},
		{"the only one with the interpreter", envs.Need{PythonPath: py312.Path}, "new"},
		{"avoid the failed one", envs.Need{PythonPath: py311.Path, Avoid: "idle"}, "busy"},
		{"version for a create", envs.Need{PythonVersion: "3.12"}, "new"},
		{"nobody has the path", envs.Need{PythonPath: "/usr/bin/python3.9"}, ""},
		{"nobody has the version", envs.Need{PythonVersion: "3.13"}, ""},
		{"only agent with it avoided", envs.Need{PythonPath: py312.Path, Avoid: "new"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 20 { // ties are broken at random: ask often enough to see a wrong pick
				a, err := f.Pick(context.Background(), tt.need)
				if tt.want == "" {
					if errcode.Of(err) != errcode.NoAgentAvailable {
						t.Fatalf("got %v, %v; want NO_AGENT_AVAILABLE", a, err)
					}
					return
				}
				if err != nil || a.Name() != tt.want {
					t.Fatalf("got %v, %v; want %s", a, err, tt.want)
				}
			}
		})
	}

	// Work this control plane has in flight counts before the agents gossip their load.
	idle, _ := f.Pick(context.Background(), envs.Need{PythonPath: py311.Path})
	c := idle.(*counted)
	for range 6 {
		c.inFlight.Add(1)
	}
	if a, _ := f.Pick(context.Background(), envs.Need{PythonPath: py311.Path}); a.Name() != "busy" {
		t.Errorf("with 6 of our calls in flight on idle (load 6 > 5): picked %s; want busy", a.Name())
	}
}
