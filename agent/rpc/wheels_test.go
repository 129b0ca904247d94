package rpc_test

import (
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
)

// With UV_WHEELS_ONLY an sdist-only package is refused with SOURCE_BUILD_DISABLED and leaves no
// project behind; wheels still install.
func TestCreateWheelsOnly(t *testing.T) {
	f := newFixtureWith(t, fixtureOptions{extra: []pyindex.Package{{Name: "zeta", Version: "1.0.0", Sdist: true}}, noBuild: true})
	client, envs := f.client, f.envs

	_, err := client.CreateProject(t.Context(), connect.NewRequest(&agentv1.CreateProjectRequest{Env: ref("z"), PythonVersion: "3.11", Packages: []string{"alpha", "zeta"}}))
	d := wantError(t, err, connect.CodeFailedPrecondition, errcode.SourceBuildDisabled)
	if d.GetUvOutput() == "" {
		t.Errorf("want uv's output in the error detail")
	}
	if _, err := os.Stat(filepath.Join(envs, "wf1", "z")); !os.IsNotExist(err) {
		t.Errorf("a refused create left %s behind (stat: %v)", filepath.Join(envs, "wf1", "z"), err)
	}
	if _, err := client.CreateProject(t.Context(), connect.NewRequest(&agentv1.CreateProjectRequest{Env: ref("w"), PythonVersion: "3.11", Packages: []string{"alpha"}})); err != nil {
		t.Fatalf("wheels still install: %v", err)
	}
}
