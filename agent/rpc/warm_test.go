package rpc_test

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
)

// warmRun runs code on the environment's linked build until a run is warm, and returns it; every
// answer on the way (cold ones included) must be want.
func warmRun(t *testing.T, f *fixture, node, code, want string) *agentv1.RunResponse {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := f.client.Run(t.Context(), connect.NewRequest(&agentv1.RunRequest{Env: ref(node), Code: code, TimeoutMs: 60000}))
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if got := strings.TrimSpace(string(resp.Msg.GetStdout())); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q (warm=%v, stderr %q); want %q", got, resp.Msg.GetWarm(), resp.Msg.GetStderr(), want)
		}
		if resp.Msg.GetWarm() {
			return resp.Msg
		}
		if time.Now().After(deadline) {
			t.Fatal("no warm run within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A changed environment is another build, so another warm interpreter: no run after the switch
// is served by the old one, and the new build's interpreter serves it warm.
func TestWarmBuildChange(t *testing.T) {
	f := newFixtureWith(t, fixtureOptions{warm: true})
	old := f.create(t, "w", "alpha==1.0.0")
	code := "import alpha, sys\nprint(alpha.__version__, sys.prefix)"
	first := warmRun(t, f, "w", code, "1.0.0")
	if !strings.Contains(string(first.GetStdout()), old.build.GetId()) {
		t.Errorf("warm run on %q; want build %s", first.GetStdout(), old.build.GetId())
	}
	next := f.change(t, old, agentv1.LockKind_LOCK_KIND_UPDATE, []string{"alpha==1.1.0"}, "alpha")
	if next.build.GetId() == old.build.GetId() {
		t.Fatal("the update kept the build")
	}
	second := warmRun(t, f, "w", code, "1.1.0")
	if !strings.Contains(string(second.GetStdout()), next.build.GetId()) {
		t.Errorf("warm run on %q; want build %s", second.GetStdout(), next.build.GetId())
	}
	// The old build is no one's now; its warm interpreter lets it go.
	resp, err := f.client.RemoveBuild(t.Context(), connect.NewRequest(&agentv1.RemoveBuildRequest{BuildId: old.build.GetId()}))
	if err != nil || !resp.Msg.GetExisted() || resp.Msg.GetInUse() {
		t.Errorf("remove the old build: %+v, %v; want removed (not held by a warm interpreter)", resp.Msg, err)
	}
}
