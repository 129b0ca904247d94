package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/app"
	"github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/uv"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
	sharedconfig "github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testConfig is the agent's configuration as an operator would give it, read through config.Load
// so that every default is the one production gets.
func testConfig(t *testing.T) config.Config {
	t.Helper()
	root := t.TempDir()
	cfg, err := config.Load(sharedconfig.Map(map[string]string{
		"AGENT_LISTEN_ADDR": freeAddr(t),
		"AGENT_TOKEN":       "s3cret",
		"AGENT_ID":          "a1",
		"DATA_ROOT":         root,
		"UV_BIN":            testenv.UV(t),
		"PATH":              os.Getenv("PATH"),
		"HOME":              t.TempDir(),
		"RUN_SANDBOX":       "process",
	}))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// h2cClient speaks unencrypted HTTP/2 only, proving the server offers it.
func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

func TestRunServesAndStops(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, testLogger(t)) }()

	base := "http://" + cfg.ListenAddr
	get := func(path, token string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, err := get("/healthz", "s3cret")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body, err := get("/readyz", "s3cret"); err != nil || code != http.StatusOK || !strings.HasPrefix(body, "ok\nsandbox: ") {
		t.Errorf("readyz: got %d %q %v; want 200 ok and the sandbox tier", code, body, err)
	}
	if code, body, _ := get("/metrics", "s3cret"); code != http.StatusOK || !strings.Contains(body, "envfabric_agent_operations_in_flight") {
		t.Errorf("metrics: got %d; want 200 with the agent's series", code)
	}
	// Nothing on an agent answers an anonymous caller.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/envfabric.agent.v1.AgentService/Info"} {
		if code, _, _ := get(path, ""); code != http.StatusUnauthorized {
			t.Errorf("anonymous GET %s: %d; want 401", path, code)
		}
	}

	tests := []struct {
		name  string
		token string
		want  connect.Code
	}{
		{"authorised", "s3cret", 0},
		{"unauthorised", "wrong", connect.CodeUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := agentv1connect.NewAgentServiceClient(h2cClient(), base, connect.WithInterceptors(agentauth.ClientInterceptor(tt.token)))
			info, err := c.Info(t.Context(), connect.NewRequest(&agentv1.InfoRequest{}))
			if tt.want != 0 {
				if connect.CodeOf(err) != tt.want {
					t.Errorf("got %v; want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Msg.GetAgentId() != "a1" || info.Msg.GetEnvsBasePath() != cfg.EnvsBasePath {
				t.Errorf("got %+v", info.Msg)
			}
		})
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v; want nil after cancel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunRefusesWithoutHardlinks(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "app-test-*")
	if err != nil {
		t.Skip("no /dev/shm")
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	cfg := testConfig(t)
	var a, b syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(cfg.DataRoot, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is not another filesystem")
	}
	cfg.UVCacheDir = filepath.Join(shm, "uv_cache")
	err = app.Run(t.Context(), cfg, testLogger(t))
	if !errors.Is(err, uv.ErrNoHardlink) || !strings.Contains(err.Error(), "UV_LINK_MODE=copy") {
		t.Fatalf("got %v; want ErrNoHardlink", err)
	}

	// With copies accepted the agent starts (and stops when its context ends).
	cfg.UVLinkMode = "copy"
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := app.Run(ctx, cfg, testLogger(t)); err != nil {
		t.Errorf("copy mode: got %v; want a clean stop", err)
	}
}

// The agent refuses to start when the configured sandbox tier is not available: no silent
// downgrade. An unprivileged agent cannot create namespaces or switch users, so the test runs
// itself again as nobody.
func TestRunRefusesUnavailableSandbox(t *testing.T) {
	if dir := os.Getenv("APP_TEST_UNPRIVILEGED_ROOT"); dir != "" {
		// uv is never reached: the sandbox is checked first.
		cfg := config.Config{
			ListenAddr: freeAddr(t), AgentID: "a1", DataRoot: dir, EnvsBasePath: filepath.Join(dir, "envs"),
			UVCacheDir: filepath.Join(dir, "uv_cache"), UVBin: "/bin/false", UVLinkMode: "hardlink", Path: "/usr/bin:/bin",
			Home: dir, DefaultPython: "3.11", RunMaxOutputBytes: 1 << 20,
			Sandbox: config.Sandbox{Tier: sandbox.Tier(os.Getenv("APP_TEST_TIER")), User: "nobody"},
		}
		if os.Getenv("APP_TEST_RUN_LIMITS") != "" {
			cfg.Sandbox.RunLimits = sandbox.RunLimits{MemoryBytes: 1 << 30, Processes: 64}
		}
		err := app.Run(t.Context(), cfg, testLogger(t))
		fmt.Printf("RUN RESULT: %v\n", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run itself as nobody")
	}
	uid, gid, err := config.LookupRunUser("nobody")
	if err != nil {
		t.Skip(err)
	}
	for _, tt := range []struct {
		tier      sandbox.Tier
		runLimits bool
		want      string
	}{
		{sandbox.Namespace, false, "RUN_SANDBOX=namespace is not available on this host"},
		{sandbox.User, false, "RUN_SANDBOX=user is not available on this host"},
		// An unprivileged agent cannot make cgroups: whole-run limits it was given are refused.
		{sandbox.Process, true, "RUN_LIMIT_TOTAL_MEMORY_BYTES=1073741824 and RUN_LIMIT_TOTAL_PROCESSES=64 cannot be enforced on this host"},
	} {
		t.Run(string(tt.tier), func(t *testing.T) {
			root := t.TempDir()
			for _, p := range []string{filepath.Dir(root), root} {
				if err := os.Chmod(p, 0o777); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("/proc/self/exe", "-test.run=^TestRunRefusesUnavailableSandbox$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "APP_TEST_UNPRIVILEGED_ROOT="+root, "APP_TEST_TIER="+string(tt.tier))
			if tt.runLimits {
				cmd.Env = append(cmd.Env, "APP_TEST_RUN_LIMITS=1")
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
			out, _ := cmd.CombinedOutput()
			t.Logf("agent as nobody:\n%s", out)
			if !strings.Contains(string(out), tt.want) || !strings.Contains(string(out), map[bool]string{false: "does not fall back", true: "does not run code without"}[tt.runLimits]) {
				t.Errorf("output:\n%s\nwant %q", out, tt.want)
			}
		})
	}
}

func TestSweepTrash(t *testing.T) {
	base := t.TempDir()
	old := filepath.Join(base, ".trash-1-wf-n-v1")
	fresh := filepath.Join(base, ".trash-2-wf-m-v1")
	oldStaging := filepath.Join(base, ".staging", "7-123")
	freshStaging := filepath.Join(base, ".staging", "8-456")
	env := filepath.Join(base, "wf")
	for _, d := range []string{filepath.Join(old, ".venv"), fresh, filepath.Join(oldStaging, "x"), freshStaging, env} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	os.Chtimes(old, past, past)
	os.Chtimes(oldStaging, past, past)
	app.SweepTrash(base, 10*time.Minute, testLogger(t))
	for p, want := range map[string]bool{old: false, fresh: true, oldStaging: false, freshStaging: true, env: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists = %v; want %v", p, err == nil, want)
		}
	}
}
