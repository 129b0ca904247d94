package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/envfabric/envfabric/"

// TestDependencyDirection: the client and the CLI link the wire types and the shared error codes
// only, never the control plane's domain, its storage or the agent, so any program may use them.
func TestDependencyDirection(t *testing.T) {
	for _, pkg := range []string{module + "client", module + "client/cmd/envfabric"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, d := range strings.Fields(string(out)) {
			for _, f := range []string{module + "controlplane/", module + "agent/", module + "proto/", module + "shared/testutil/"} {
				if strings.HasPrefix(d, f) {
					t.Errorf("%s imports %s", pkg, d)
				}
			}
		}
	}
}
