package e2e

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The servers' limits for these tests: a small cap, so a flood of a few thousand connections is
// far past it, and a short header timeout.
var floodEnv = []string{"HTTP_MAX_CONNS=64", "HTTP_PROBE_CONNS=4", "HTTP_READ_HEADER_TIMEOUT=1s"}

// Thousands of idle TCP connections to either program neither exhaust its descriptors nor lock
// out its probes or its real callers.
func TestFloodOfIdleConnections(t *testing.T) {
	f := newFabric(t, options{cpEnv: floodEnv, agentEnv: floodEnv})
	targets := []struct {
		name  string
		proc  *proc
		base  string
		token string
	}{
		{"controlplane", f.cp, f.URL, ""},
		{"agent", f.agent, f.AgentURL, f.AgentToken},
	}
	for _, tt := range targets {
		t.Run(tt.name, func(t *testing.T) {
			before := openFiles(t, tt.proc)
			conns := dialMany(t, hostOf(t, tt.base), 3000)
			for _, path := range []string{"/healthz", "/readyz"} {
				if code := probe(t, tt.base+path, tt.token); code != http.StatusOK {
					t.Errorf("%s under a flood of %d idle connections: %d; want 200", path, len(conns), code)
				}
			}
			// The control plane still reaches its agent (the agent under its own flood too).
			if r := f.do(t, "GET", "/agents", nil); r.Status != http.StatusOK || !reachable(r) {
				t.Errorf("GET /agents under the flood: %d %s; want the agent reachable", r.Status, r.Raw)
			}
			// 64 connections, the probe reserve, and the program's own files (database, logs,
			// gossip, the agent's keep-alive connections).
			if n := openFiles(t, tt.proc); n > before+64+4+16 {
				t.Errorf("%s holds %d descriptors under the flood (%d before); want it bounded by the cap", tt.name, n, before)
			}
			if !closedByPeer(conns[0]) {
				t.Error("the oldest idle connection is still open; want it closed to make room")
			}
		})
	}
}

// A client that never finishes its headers is cut after HTTP_READ_HEADER_TIMEOUT.
func TestSlowHeadersCut(t *testing.T) {
	f := newFabric(t, options{cpEnv: floodEnv, agentEnv: floodEnv})
	for name, base := range map[string]string{"controlplane": f.URL, "agent": f.AgentURL} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", hostOf(t, base))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a"); err != nil {
				t.Fatal(err)
			}
			if !closedByPeer(c) {
				t.Errorf("%s kept a connection whose headers never ended", name)
			}
		})
	}
}

func hostOf(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func dialMany(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, 30*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	return conns
}

// probe GETs url on a connection of its own.
func probe(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func reachable(r response) bool {
	agents, _ := r.Body["agents"].([]any)
	if len(agents) != 1 {
		return false
	}
	a, _ := agents[0].(map[string]any)
	return a["reachable"] == true
}

// closedByPeer reads until the server closes the connection; a read that times out means it was
// kept open.
func closedByPeer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func openFiles(t *testing.T, p *proc) int {
	t.Helper()
	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "fd"))
	if err != nil {
		t.Fatalf("reading %s's descriptors: %v", p.name, err)
	}
	return len(fds)
}
