package rpc_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/rpc"
	"github.com/envfabric/envfabric/agent/uv"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// With UV_WHEELS_ONLY an sdist-only package is refused with SOURCE_BUILD_DISABLED and leaves no
// project behind; wheels still install.
func TestCreateWheelsOnly(t *testing.T) {
	ix := pyindex.Serve(t, append(pyindex.Universe(), pyindex.Package{Name: "zeta", Version: "1.0.0", Sdist: true}))
	envs := filepath.Join(t.TempDir(), "envs")
	if err := os.Mkdir(envs, 0o755); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ex := uv.New(uv.Config{
		Bin: testenv.UV(t), CacheDir: cacheDir, LinkMode: "hardlink", DefaultIndex: ix.URL,
		Path: os.Getenv("PATH"), Home: t.TempDir(), WaitDelay: 5 * time.Second, NoBuild: true,
	}, logger)
	srv := rpc.New(rpc.Config{AgentID: "a", EnvsBasePath: envs, UVCacheDir: cacheDir, LinkMode: "hardlink", DefaultPython: "3.11", RunMaxOutputBytes: 1 << 20}, ex, logger)
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(srv))
	hs := httptest.NewUnstartedServer(mux)
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	client := agentv1connect.NewAgentServiceClient(hs.Client(), hs.URL)

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
