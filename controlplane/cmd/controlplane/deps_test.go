package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/envfabric/envfabric/"

// deps lists the packages pkg imports, transitively.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestDependencyDirection keeps the design card's import rules: the control plane never imports
// the agent; the lifecycle rules know neither SQL drivers nor the wire; shared code imports
// neither binary; generated code imports nothing of ours.
func TestDependencyDirection(t *testing.T) {
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		// The binaries ship no test helpers.
		{pkg: module + "controlplane/cmd/controlplane", forbidden: []string{module + "agent/", module + "shared/testutil/"}},
		{pkg: module + "agent/cmd/agent", forbidden: []string{module + "controlplane/", module + "shared/testutil/"}},
		{pkg: module + "controlplane/envs", forbidden: []string{"github.com/jackc/pgx", "modernc.org/sqlite", module + "proto/", "connectrpc.com/connect"}},
		// The shared SQL layer knows database/sql only; each driver stays in its dialect's package.
		{pkg: module + "controlplane/store/sqlstore", forbidden: []string{"github.com/jackc/pgx", "modernc.org/sqlite"}},
		{pkg: module + "controlplane/api", forbidden: []string{"github.com/jackc/pgx", "modernc.org/sqlite", module + "proto/", module + "controlplane/fleet", module + "controlplane/agentclient"}},
		// The agents view is envs' type: the API renders it, the fleet produces it, app wires them.
		{pkg: module + "controlplane/fleet", forbidden: []string{module + "controlplane/api", module + "controlplane/app"}},
		{pkg: module + "shared/...", forbidden: []string{module + "controlplane/", module + "agent/"}},
		{pkg: module + "proto/...", forbidden: []string{module + "shared/", module + "controlplane/", module + "agent/"}},
		{pkg: module + "agent/...", forbidden: []string{module + "controlplane/", "github.com/jackc/pgx", "modernc.org/sqlite"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			for _, d := range deps(t, tt.pkg) {
				for _, f := range tt.forbidden {
					if strings.HasPrefix(d, f) || d == strings.TrimSuffix(f, "/") {
						t.Errorf("%s imports %s", tt.pkg, d)
					}
				}
			}
		})
	}
}
