package rpc_test

import (
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/errcode"
)

// With UV_WHEELS_ONLY an sdist-only package is refused with SOURCE_BUILD_DISABLED (by the
// resolution, or else by the build) and leaves no build behind; wheels still install.
func TestWheelsOnly(t *testing.T) {
	f := newFixtureWith(t, fixtureOptions{noBuild: true})
	l, err := f.lock(t.Context(), &agentv1.LockRequest{Env: ref("z"), Kind: agentv1.LockKind_LOCK_KIND_CREATE, PythonVersion: "3.11", Packages: []string{"alpha", "zeta"}})
	if err == nil {
		_, err = f.client.Build(t.Context(), connect.NewRequest(&agentv1.BuildRequest{Files: l.GetFiles(), PythonPath: l.GetPythonPath()}))
	}
	d := wantError(t, err, connect.CodeFailedPrecondition, errcode.SourceBuildDisabled)
	if d.GetUvOutput() == "" {
		t.Errorf("want uv's output in the error detail")
	}
	if builds, _ := os.ReadDir(filepath.Join(f.envs, ".builds")); len(builds) > 1 { // .locks only
		t.Errorf("a refused build left %v behind", builds)
	}
	f.create(t, "w", "alpha")
}
