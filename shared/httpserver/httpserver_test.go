package httpserver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/config"
)

// serve starts a server on loopback for the test and returns its address.
func serve(t *testing.T, lim Limits, h http.Handler) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Limits: lim, Probes: []string{"/healthz"}}, h)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

var testLimits = Limits{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
	WorkTimeout: time.Hour, IdleTimeout: time.Minute, MaxHeaderBytes: 8 << 10, MaxConns: 20, ProbeConns: 2}

func mux(work http.HandlerFunc) http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	if work != nil {
		m.HandleFunc("/work", work)
	}
	return m
}

// get sends one request on a fresh connection.
func get(addr, path string) (*http.Response, string, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// closedByServer reads from c until the server closes it; a read that times out means the
// server kept it open.
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestIdleFloodLeavesProbesAnswerable(t *testing.T) {
	s, addr := serve(t, testLimits, mux(nil))
	const flood = 2000
	conns := make([]net.Conn, 0, flood)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	for i := range 3 {
		resp, body, err := get(addr, "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("probe %d after %d idle connections: %v %v %q; want 200 ok", i, flood, err, resp, body)
		}
	}
	if n, limit := s.conns.count(), testLimits.MaxConns+testLimits.ProbeConns; n > limit {
		t.Errorf("server holds %d connections; want at most %d", n, limit)
	}
	if !closedByServer(conns[0]) {
		t.Error("the oldest idle connection is still open; want it closed to make room")
	}
}

func TestReserveServesOnlyProbesWhenAllBusy(t *testing.T) {
	lim := testLimits
	lim.MaxConns, lim.ProbeConns = 3, 1
	entered, release := make(chan struct{}), make(chan struct{})
	s, addr := serve(t, lim, mux(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		_, _ = w.Write([]byte("done"))
	}))
	var wg sync.WaitGroup
	for range lim.MaxConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, _, err := get(addr, "/work"); err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("busy request: %v %v", err, resp)
			}
		}()
		<-entered
	}
	t.Cleanup(func() { close(release); wg.Wait() })

	tests := []struct {
		path string
		want int
	}{
		{"/healthz", http.StatusOK},
		{"/work", http.StatusServiceUnavailable},
		{"/healthz", http.StatusOK},
	}
	for _, tt := range tests {
		resp, _, err := get(addr, tt.path)
		if err != nil {
			t.Fatalf("GET %s with every connection busy: %v", tt.path, err)
		}
		if resp.StatusCode != tt.want || !resp.Close {
			t.Errorf("GET %s with every connection busy: got %d close=%v; want %d, connection closed", tt.path, resp.StatusCode, resp.Close, tt.want)
		}
		// The server closes the reserve connection just after its answer; the next request must
		// not find the one-connection reserve still taken.
		waitFor(t, "the reserve connection to close", func() bool { return s.conns.reserved() == 0 })
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after 30s", what)
		}
	}
}

func TestSlowHeadersAreCut(t *testing.T) {
	lim := testLimits
	lim.ReadHeaderTimeout = 200 * time.Millisecond
	_, addr := serve(t, lim, mux(nil))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	if !closedByServer(c) {
		t.Error("a client that never finishes its headers kept its connection")
	}
}

func TestOversizedHeadersRefused(t *testing.T) {
	_, addr := serve(t, testLimits, mux(nil))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("a", 2*testLimits.MaxHeaderBytes+4096)
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("got %d; want 431", resp.StatusCode)
	}
}

// A request that does work outlives the read and write timeouts: they bound clients, not work.
func TestWorkOutlivesReadAndWriteTimeouts(t *testing.T) {
	lim := testLimits
	lim.ReadHeaderTimeout, lim.ReadTimeout, lim.WriteTimeout = 50*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	_, addr := serve(t, lim, mux(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusInternalServerError)
			return
		case <-time.After(5 * lim.ReadTimeout):
		}
		_, _ = w.Write([]byte("done"))
	}))
	for _, body := range []string{"", "some input"} {
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Post("http://"+addr+"/work", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("work with body %q: %v", body, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "done" {
			t.Errorf("work with body %q: got %d %q; want 200 done", body, resp.StatusCode, b)
		}
	}
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    func(Limits) bool
		wantErr []string
	}{
		{name: "defaults", env: map[string]string{}, want: func(l Limits) bool { return l == testLimits }},
		{name: "overrides", env: map[string]string{"HTTP_MAX_CONNS": "7", "HTTP_WORK_TIMEOUT": "2h"},
			want: func(l Limits) bool { return l.MaxConns == 7 && l.WorkTimeout == 2*time.Hour }},
		{name: "every problem", env: map[string]string{"HTTP_MAX_CONNS": "0", "HTTP_READ_HEADER_TIMEOUT": "2m",
			"HTTP_WORK_TIMEOUT": "1s", "HTTP_MAX_HEADER_BYTES": "100", "HTTP_IDLE_TIMEOUT": "soon"},
			wantErr: []string{"HTTP_MAX_CONNS", "HTTP_READ_HEADER_TIMEOUT (2m0s) exceeds", "HTTP_WORK_TIMEOUT (1s)", "HTTP_MAX_HEADER_BYTES", "HTTP_IDLE_TIMEOUT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := config.NewReader(config.Map(tt.env))
			l := FromEnv(r, testLimits)
			errs := errors.Join(r.Errs()...)
			if len(tt.wantErr) == 0 {
				if errs != nil || !tt.want(l) {
					t.Errorf("got %+v, %v", l, errs)
				}
				return
			}
			for _, w := range tt.wantErr {
				if errs == nil || !strings.Contains(errs.Error(), w) {
					t.Errorf("got %v; want a problem with %q", errs, w)
				}
			}
		})
	}
}
