package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/client"
	"github.com/envfabric/envfabric/shared/testutil/fabricbin"
)

// index is the package index uv uses, found at run time. Its URL is never written to a file.
type index struct {
	URL    string // empty: uv's default
	Source string // where it came from, safe to print
}

// discoverIndex follows controlplane/e2e/realindex_test.go: uv's own setting, else pip's (pip may
// reach the index through a mirror, and uv never reads pip's configuration), else uv's default.
func discoverIndex() index {
	if v := os.Getenv("UV_DEFAULT_INDEX"); v != "" {
		return index{URL: v, Source: "UV_DEFAULT_INDEX"}
	}
	if v := os.Getenv("PIP_INDEX_URL"); v != "" {
		return index{URL: v, Source: "PIP_INDEX_URL"}
	}
	out, err := exec.Command("python3", "-m", "pip", "config", "get", "global.index-url").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return index{URL: v, Source: "pip config global.index-url"}
	}
	return index{Source: "uv's default index"}
}

// passthrough are the variables of the bench's own environment handed to the programs and to uv:
// TLS and proxies, as the end-to-end harness does.
var passthrough = []string{"SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
	"http_proxy", "https_proxy", "no_proxy"}

func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range passthrough {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// uvEnv is the environment the agent gives uv (agent/uv buildEnv), for the commands run by hand:
// the same cache, link mode, index and Python rules, so both do the same work.
func uvEnv(cfg config, cacheDir, linkMode string) []string {
	env := append(baseEnv(), "UV_CACHE_DIR="+cacheDir, "UV_LINK_MODE="+linkMode, "UV_NO_CONFIG=1",
		"UV_PYTHON_DOWNLOADS=never", "UV_PYTHON_PREFERENCE=only-system", "NO_COLOR=1", "UV_NO_PROGRESS=1",
		"UV_SYSTEM_CERTS=1")
	if cfg.Index.URL != "" {
		env = append(env, "UV_DEFAULT_INDEX="+cfg.Index.URL)
	}
	return env
}

// proc is a running program whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(name, bin, logPath string, env []string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a Ctrl-C at the terminal reaches the bench, which stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGINT and waits for the exit, killing the program after 30 s.
func (p *proc) stop() error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within 30s of SIGINT", p.name)
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// fabric is one agent and one control plane on loopback with their data under DataRoot.
type fabric struct {
	Name     string
	DataRoot string
	Envs     string
	Cache    string
	URL      string
	LinkMode string
	AgentURL string
	Token    string
	cfg      config
	bins     fabricbin.Binaries
	agent    *proc
	cp       *proc
	cpEnv    []string
	client   *http.Client   // the bench's HTTP client of the control plane (bearer token, loopback)
	api      *client.Client // the API through f.client
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// newClient makes a loopback HTTP client that sends token (when set) as a bearer token.
func newClient(token string) *http.Client {
	var rt http.RoundTripper = &http.Transport{
		Proxy:               nil, // loopback, never through a proxy
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	if token != "" {
		rt = bearer{token: token, next: rt}
	}
	return &http.Client{Timeout: 30 * time.Minute, Transport: rt}
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// startFabric starts an agent (uv in linkMode) and a control plane with SQLite under
// cfg.Workdir/name; cpSettings (KEY=value) are added to the control plane's environment.
func startFabric(ctx context.Context, cfg config, bins fabricbin.Binaries, name, linkMode string, cpSettings ...string) (*fabric, error) {
	root := filepath.Join(cfg.Workdir, name)
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	apiSecret := make([]byte, 16)
	rand.Read(apiSecret)
	// The bench calls the API as an admin (API_TOKENS, controlplane/api/auth).
	f := &fabric{Name: name, DataRoot: root, Envs: filepath.Join(root, "envs"), Cache: filepath.Join(root, "uv_cache"),
		LinkMode: linkMode, cfg: cfg, bins: bins, client: newClient(hex.EncodeToString(apiSecret)),
		Token: hex.EncodeToString(tok)}
	base := append(baseEnv(), "DATA_ROOT="+root, "AGENT_TOKEN="+f.Token, "LOG_LEVEL=info")

	agentAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	agentEnv := append(append([]string{}, base...), "AGENT_LISTEN_ADDR="+agentAddr, "UV_BIN="+cfg.UV,
		"UV_LINK_MODE="+linkMode, "UV_SYSTEM_CERTS=1")
	if cfg.Index.URL != "" {
		agentEnv = append(agentEnv, "UV_DEFAULT_INDEX="+cfg.Index.URL)
	}
	f.agent, err = startProc(name+"-agent", bins.Agent, filepath.Join(root, "logs", "agent.log"), agentEnv)
	if err != nil {
		return nil, err
	}
	f.AgentURL = "http://" + agentAddr
	if err := waitHTTP(ctx, f.agent, f.AgentURL+"/healthz", newClient(f.Token)); err != nil {
		f.Stop()
		return nil, err
	}
	cpAddr, err := freeAddr()
	if err != nil {
		f.Stop()
		return nil, err
	}
	// The scheduled cleanup is off: nothing should move under the measurements.
	f.cpEnv = append(append([]string{}, base...), "LISTEN_ADDR="+cpAddr, "AGENT_URL=http://"+agentAddr,
		"CLEANUP_INTERVAL=0", "API_TOKENS=bench:admin:"+hex.EncodeToString(apiSecret))
	f.cpEnv = append(f.cpEnv, cpSettings...)
	f.URL = "http://" + cpAddr
	if f.api, err = client.New(f.URL, client.WithHTTPClient(f.client), client.WithActor("bench")); err != nil {
		f.Stop()
		return nil, err
	}
	if err := f.StartControlPlane(ctx); err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

// StartControlPlane starts (or starts again) the control plane.
func (f *fabric) StartControlPlane(ctx context.Context) error {
	p, err := startProc(f.Name+"-controlplane", f.bins.ControlPlane, filepath.Join(f.DataRoot, "logs",
		fmt.Sprintf("controlplane-%d.log", time.Now().UnixNano())), f.cpEnv)
	if err != nil {
		return err
	}
	f.cp = p
	return waitHTTP(ctx, p, f.URL+"/readyz", f.client)
}

// StopControlPlane stops the control plane and expects a clean exit.
func (f *fabric) StopControlPlane() error {
	err := f.cp.stop()
	f.cp = nil
	return err
}

// SQLitePath is where the control plane keeps its database (controlplane/config's default).
func (f *fabric) SQLitePath() string { return filepath.Join(f.DataRoot, "controlplane", "fabric.db") }

// Stop stops the control plane, then the agent.
func (f *fabric) Stop() {
	if f == nil {
		return
	}
	for _, p := range []*proc{f.cp, f.agent} {
		if p == nil {
			continue
		}
		if err := p.stop(); err != nil {
			f.cfg.log.Warn("program did not exit cleanly", "program", p.name, "err", err, "log", p.log)
		}
	}
	f.cp, f.agent = nil, nil
}

func waitHTTP(ctx context.Context, p *proc, url string, c *http.Client) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v\n%s", p.name, p.err, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s within 60s\n%s", p.name, url, p.tail())
}

// envKey names an environment (version v1, the default).
type envKey struct{ WF, Node string }

func (k envKey) path() string { return "/envs/" + k.WF + "/" + k.Node }

func (k envKey) env() client.Env { return client.Env{WorkflowID: k.WF, NodeID: k.Node} }

// create makes an environment through POST /envs.
func (f *fabric) create(ctx context.Context, k envKey, pkgs []string) error {
	_, err := f.api.Create(ctx, client.CreateRequest{WorkflowID: k.WF, NodeID: k.Node, Packages: pkgs})
	return err
}

// runResult is the part of POST .../run the bench checks.
type runResult struct {
	Stdout     string  `json:"stdout"`
	Stderr     string  `json:"stderr"`
	ExitCode   int     `json:"exit_code"`
	DurationMS float64 `json:"duration_ms"` // python's run as the agent timed it
	Warm       bool    `json:"warm"`        // forked from the build's warm interpreter
}

// run runs code through POST .../run and checks that it printed want.
func (f *fabric) run(ctx context.Context, k envKey, code, want string) (runResult, error) {
	return f.runWith(ctx, k, client.RunRequest{Code: code}, want)
}

// runWith is run with the request's other fields (Cold).
func (f *fabric) runWith(ctx context.Context, k envKey, req client.RunRequest, want string) (runResult, error) {
	req.Timeout = 120 * time.Second
	res, err := f.api.Run(ctx, k.env(), req)
	if err != nil {
		return runResult{}, err
	}
	r := runResult{Stdout: string(res.Stdout), Stderr: string(res.Stderr), ExitCode: res.ExitCode, DurationMS: float64(res.DurationMS), Warm: res.Warm}
	if r.ExitCode != 0 || r.Stdout != want {
		return r, fmt.Errorf("run in %s: exit %d, stdout %q (want %q), stderr %q", k.path(), r.ExitCode, r.Stdout, want, r.Stderr)
	}
	return r, nil
}

// pythonPath asks the control plane which interpreter an environment is bound to.
func (f *fabric) pythonPath(ctx context.Context, k envKey) (string, error) {
	st, err := f.api.Status(ctx, k.env())
	if err != nil {
		return "", err
	}
	if st.PythonPath == "" {
		return "", errors.New("status has no python_path")
	}
	return st.PythonPath, nil
}

// envDir is where the agent keeps an environment (shared/envid's layout).
func (f *fabric) envDir(k envKey) string { return filepath.Join(f.Envs, k.WF, k.Node, "v1") }

// timed runs fn and returns how long it took.
func timed(fn func() error) (time.Duration, error) {
	t := time.Now()
	err := fn()
	return time.Since(t), err
}

// command runs a program to completion in dir with env; its output is returned with the error.
func command(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		s := string(out)
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, s)
	}
	return nil
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
