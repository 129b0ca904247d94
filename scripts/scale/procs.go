package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// program is a real process of the fabric, its output in a log file.
type program struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func launch(name, bin, logPath string, env []string) (*program, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a Ctrl-C reaches the harness, which stops it
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &program{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

// stop sends SIGINT, then SIGKILL after 30 s.
func (p *program) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rss is the program's resident memory now and at its peak (VmRSS, VmHWM), in bytes.
func (p *program) rss() (now, peak int64) { return rssOf(p.cmd.Process.Pid) }

func rssOf(pid int) (now, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			now = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return now, peak
}

func (p *program) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitReady polls url until it answers 200, the program exits, or 5 minutes pass (a control
// plane opening a large database indexes nothing new, but PostgreSQL may be busy).
func waitReady(ctx context.Context, p *program, url string, c *http.Client) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready:\n%s", p.name, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s\n%s", p.name, url, p.tail())
}

// bearer adds the token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func client(token string) *http.Client {
	return &http.Client{Timeout: 10 * time.Minute, Transport: bearer{token: token, next: &http.Transport{
		Proxy: nil, MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}}
}

// fabric is one agent and one control plane on loopback, on a database already filled.
type fabric struct {
	url, agentURL string
	api, agentAPI *http.Client
	agent, cp     *program
}

// startFabric starts an agent with its environments under root/envs and a control plane on
// the database (dbURL, or SQLite under root when empty), the scheduled cleanup off.
func startFabric(ctx context.Context, bins binaries, uvBin, root, dbURL string) (*fabric, error) {
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
		return nil, err
	}
	agentAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	const agentToken, apiToken = "scale-agent-token-0123456789", "scale-api-token-0123456789"
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATA_ROOT=" + root,
		"AGENT_TOKEN=" + agentToken, "LOG_LEVEL=warn"}
	f := &fabric{url: "http://" + cpAddr, agentURL: "http://" + agentAddr, api: client(apiToken), agentAPI: client(agentToken)}
	f.agent, err = launch("agent", bins.agent, filepath.Join(root, "logs", "agent.log"),
		append(append([]string{}, base...), "AGENT_LISTEN_ADDR="+agentAddr, "UV_BIN="+uvBin))
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, f.agent, f.agentURL+"/healthz", f.agentAPI); err != nil {
		f.stop()
		return nil, err
	}
	cpEnv := append(append([]string{}, base...), "LISTEN_ADDR="+cpAddr, "AGENT_URL="+f.agentURL,
		"CLEANUP_INTERVAL=0", "API_TOKENS=scale:admin:"+apiToken)
	if dbURL != "" {
		cpEnv = append(cpEnv, "DATABASE_URL="+dbURL)
	}
	f.cp, err = launch("controlplane", bins.controlPlane, filepath.Join(root, "logs", "controlplane.log"), cpEnv)
	if err != nil {
		f.stop()
		return nil, err
	}
	if err := waitReady(ctx, f.cp, f.url+"/readyz", f.api); err != nil {
		f.stop()
		return nil, err
	}
	return f, nil
}

func (f *fabric) stop() {
	f.cp.stop()
	f.agent.stop()
}
