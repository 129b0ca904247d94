// Package e2e drives the real binaries: a control plane and an agent as separate processes talking
// Connect over loopback, real uv against a package index the tests serve, and a real database.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/sdnotify"
	"github.com/envfabric/envfabric/shared/testutil/fabricbin"
	"github.com/envfabric/envfabric/shared/testutil/pgtest"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

var bins struct {
	once sync.Once
	dir  string
	fabricbin.Binaries
	err error
}

// binaries builds both programs once per test binary.
func binaries(t *testing.T) (controlplane, agent string) {
	t.Helper()
	root := testenv.RepoRoot(t)
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "envfabric-e2e-bin-")
		if bins.err == nil {
			bins.Binaries, bins.err = fabricbin.Build(context.Background(), root, bins.dir)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.ControlPlane, bins.Agent
}

// sharedPG is the package's one PostgreSQL server, started by the first test that needs it; each test
// gets a database of its own on it. A test that stops the server (TestDatabaseGoesAway) starts
// its own.
var sharedPG struct {
	once sync.Once
	srv  *pgtest.Server
	err  error
}

// database returns a fresh database on the package's PostgreSQL server.
func database(t *testing.T) string {
	t.Helper()
	sharedPG.once.Do(func() { sharedPG.srv, sharedPG.err = pgtest.Start(context.Background(), nil) })
	if sharedPG.err != nil {
		pgtest.Unavailable(t, sharedPG.err)
	}
	return sharedPG.srv.NewDatabase(t)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedPG.srv != nil {
		sharedPG.srv.Close()
	}
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// proc is a running program whose log goes to a file shown when the test fails. It tells the test
// it is ready the way it tells systemd (sd_notify's READY=1), with the addresses it bound: the
// programs take any free port (port 0), so parallel tests never race for one.
type proc struct {
	name  string
	cmd   *exec.Cmd
	log   string
	done  chan struct{}
	err   error
	ready chan map[string]string // receives READY=1's variables once
}

func start(t *testing.T, name, bin string, env []string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// A socket path must fit in 108 bytes; test temp dirs can be longer.
	sockDir, err := os.MkdirTemp("", "efn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	notify, err := sdnotify.Listen(filepath.Join(sockDir, "notify"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(append([]string{}, env...), "NOTIFY_SOCKET="+notify.Path())
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		notify.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{}), ready: make(chan map[string]string, 1)}
	go func() {
		if vars, err := notify.Ready(); err == nil {
			p.ready <- vars
		}
	}()
	go func() {
		p.err = cmd.Wait()
		f.Close()
		notify.Close() // ends the wait for READY=1
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log ---\n%s", name, tail(string(b), 6000))
		}
	})
	return p
}

// waitReady waits for the program's READY=1 and returns the variables it sent with it.
func (p *proc) waitReady(t *testing.T) map[string]string {
	t.Helper()
	select {
	case vars := <-p.ready:
		return vars
	case <-p.done:
		b, _ := os.ReadFile(p.log)
		t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.err, tail(string(b), 4000))
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready within 60s", p.name)
	}
	return nil
}

// addr is the address p bound for HTTP, from its readiness message.
func (p *proc) addr(t *testing.T) string {
	t.Helper()
	a := p.waitReady(t)["X_ENVFABRIC_ADDR"]
	if a == "" {
		t.Fatalf("%s said READY=1 without its address", p.name)
	}
	return a
}

// stop sends SIGINT and expects a clean exit.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return // already gone (a test killed it on purpose)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s did not exit cleanly on SIGINT: %v", p.name, p.err)
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 30s of SIGINT", p.name)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// fabric is one control plane and one agent on loopback.
type fabric struct {
	URL      string
	DataRoot string
	Envs     string
	Cache    string
	Index    *pyindex.Index
	proxy    *indexProxy
	cp       *proc
	cpBin    string
	cpEnv    []string
	agent    *proc
	agentBin string
	agentEnv []string
	client   *http.Client

	// The agent's own address and bearer token, for tests that talk to it directly.
	AgentURL, AgentToken string
}

type options struct {
	dataRoot    string // DATA_ROOT of both programs; empty: a temporary directory
	databaseURL string
	indexURL    string // the real index for the end-to-end case; empty: a local one
	cpEnv       []string
	agentEnv    []string // added to the agent's environment
	// packages are published on the local index beside pyindex.Universe().
	packages []pyindex.Package
}

func newFabric(t *testing.T, opt options) *fabric {
	t.Helper()
	cpBin, agentBin := binaries(t)
	uv := testenv.UV(t)
	f := &fabric{DataRoot: opt.dataRoot, client: &http.Client{Timeout: 10 * time.Minute}}
	if f.DataRoot == "" {
		f.DataRoot = t.TempDir()
	}
	f.Envs = filepath.Join(f.DataRoot, "envs")
	f.Cache = filepath.Join(f.DataRoot, "uv_cache")
	indexURL := opt.indexURL
	if indexURL == "" {
		f.Index = pyindex.Serve(t, append(pyindex.Universe(), opt.packages...))
		f.proxy = newIndexProxy(t, f.Index.URL)
		indexURL = f.proxy.URL
	}
	token := "test-token-" + fmt.Sprint(time.Now().UnixNano())
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATA_ROOT=" + f.DataRoot,
		"AGENT_TOKEN=" + token, "LOG_LEVEL=debug", "ENVFABRIC_TEST_SECRET=do-not-leak"}
	for _, k := range []string{"SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"} {
		if v, ok := os.LookupEnv(k); ok {
			base = append(base, k+"="+v)
		}
	}
	agentEnv := append(append([]string{}, base...), "AGENT_LISTEN_ADDR=127.0.0.1:0", "UV_BIN="+uv)
	if indexURL != "-" {
		agentEnv = append(agentEnv, "UV_DEFAULT_INDEX="+indexURL)
	}
	if opt.indexURL != "" {
		// The real index may sit behind a TLS proxy whose CA only the system store knows.
		agentEnv = append(agentEnv, "UV_SYSTEM_CERTS=1")
	}
	agentEnv = append(agentEnv, opt.agentEnv...)
	f.agent = start(t, "agent", agentBin, agentEnv)
	agentAddr := f.agent.addr(t)
	f.agentBin, f.agentEnv = agentBin, append(agentEnv, "AGENT_LISTEN_ADDR="+agentAddr) // a restart takes the same address
	f.AgentURL, f.AgentToken = "http://"+agentAddr, token

	cpEnv := append(append([]string{}, base...), "LISTEN_ADDR=127.0.0.1:0", "AGENT_URL=http://"+agentAddr, "LEASE_TTL=6s", "API_TOKENS="+apiTokens)
	if opt.databaseURL != "" {
		cpEnv = append(cpEnv, "DATABASE_URL="+opt.databaseURL)
	}
	f.cpBin, f.cpEnv = cpBin, append(cpEnv, opt.cpEnv...)
	f.startControlPlane(t)
	return f
}

// startControlPlane starts (or starts again) the control plane with the same configuration. The
// first start takes any free port; a restart takes the same one again, so f.URL stays valid.
func (f *fabric) startControlPlane(t *testing.T) {
	t.Helper()
	f.cp = start(t, "controlplane", f.cpBin, f.cpEnv)
	if f.URL == "" {
		addr := f.cp.addr(t)
		f.URL = "http://" + addr
		f.cpEnv = append(f.cpEnv, "LISTEN_ADDR="+addr) // the last setting wins
	} else {
		f.cp.waitReady(t)
	}
	waitHTTP(t, f.cp, f.URL+"/readyz")
}

// killControlPlane kills the control plane with SIGKILL, as a crash would.
func (f *fabric) killControlPlane(t *testing.T) {
	t.Helper()
	_ = f.cp.cmd.Process.Kill()
	<-f.cp.done
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, p *proc, url string) {
	t.Helper()
	waitHTTPWith(t, p, http.DefaultClient, url, "")
}

// waitHTTPWith is waitHTTP through client c, sending token as a bearer token when it is set.
func waitHTTPWith(t *testing.T, p *proc, c *http.Client, url, token string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.err, tail(string(b), 4000))
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready at %s within 60s", p.name, url)
}

// response is a decoded API answer.
type response struct {
	Status int
	Body   map[string]any
	Raw    string
}

func (r response) errCode() string {
	e, _ := r.Body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r response) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

func (f *fabric) do(t *testing.T, method, path string, body any) response {
	t.Helper()
	return f.doCtx(t, context.Background(), method, path, body)
}

func (f *fabric) doCtx(t *testing.T, ctx context.Context, method, path string, body any) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return f.send(t, req)
}

// The control plane's callers in every test (see auth_test.go); send uses the admin one.
const (
	adminSecret  = "e2e-admin-secret-0123456789"
	readerSecret = "e2e-read-secret-0123456789"
	writerSecret = "e2e-write-secret-0123456789"
	apiTokens    = "e2e-test:admin:" + adminSecret + ",e2e-reader:read:" + readerSecret + ",e2e-writer:write:" + writerSecret
)

func (f *fabric) send(t *testing.T, req *http.Request) response {
	t.Helper()
	req.Header.Set("X-Actor", "e2e-test")
	if req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+adminSecret)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return response{Status: -1}
		}
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Raw: string(b)}
	if err := json.Unmarshal(b, &r.Body); err != nil {
		t.Fatalf("%s %s: status %d, body is not a JSON object: %q", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	conformsToDoc(t, req.Method, req.URL.Path, r, resp.Header.Get("Content-Type")) // conformance_test.go
	return r
}

// createForm posts form data to /envs the way the TRD describes it.
func (f *fabric) createForm(t *testing.T, fields map[string][]string, requirements string) response {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, vs := range fields {
		for _, v := range vs {
			mw.WriteField(k, v)
		}
	}
	if requirements != "" {
		fw, _ := mw.CreateFormFile("requirements_file", "requirements.txt")
		fw.Write([]byte(requirements))
	}
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, f.URL+"/envs", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return f.send(t, req)
}

func (f *fabric) createURLEncoded(t *testing.T, fields url.Values) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.URL+"/envs", strings.NewReader(fields.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return f.send(t, req)
}

func (f *fabric) envDir(wf, node, version string) string {
	return filepath.Join(f.Envs, wf, node, version)
}

func (f *fabric) readFile(t *testing.T, wf, node, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.envDir(wf, node, "v1"), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func expect(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.Status != status || r.errCode() != code {
		t.Fatalf("got %d %q; want %d %q\nbody: %s", r.Status, r.errCode(), status, code, tail(r.Raw, 3000))
	}
}

// restartAgent starts the agent again (after a test killed it) on the same address.
func (f *fabric) restartAgent(t *testing.T) {
	t.Helper()
	f.agent = start(t, "agent-restarted", f.agentBin, f.agentEnv)
	f.agent.waitReady(t)
}

// indexProxy sits in front of the local index so a test can break one file on purpose, or hold
// the downloads of some files (stallFiles).
type indexProxy struct {
	URL     string
	corrupt atomic.Value // file name whose bytes are replaced, or ""
	stallMu sync.Mutex
	stall   *fileStall
}

type fileStall struct {
	prefix  string
	reached chan struct{}
	once    sync.Once
	release chan struct{}
}

// stallFiles holds every download of a file whose name starts with prefix until release is called
// (or the request is abandoned); reached is closed at the first such download.
func (p *indexProxy) stallFiles(t *testing.T, prefix string) (reached <-chan struct{}, release func()) {
	s := &fileStall{prefix: prefix, reached: make(chan struct{}), release: make(chan struct{})}
	p.stallMu.Lock()
	p.stall = s
	p.stallMu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(s.release) }) }
	t.Cleanup(release)
	return s.reached, release
}

func (p *indexProxy) hold(r *http.Request) {
	p.stallMu.Lock()
	s := p.stall
	p.stallMu.Unlock()
	if s == nil || !strings.HasPrefix(filepath.Base(r.URL.Path), s.prefix) || !strings.Contains(r.URL.Path, "/files/") ||
		strings.HasSuffix(r.URL.Path, ".metadata") {
		return
	}
	s.once.Do(func() { close(s.reached) })
	select {
	case <-s.release:
	case <-r.Context().Done():
	}
}

func newIndexProxy(t *testing.T, target string) *indexProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &indexProxy{}
	p.corrupt.Store("")
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hold(r)
		if name := p.corrupt.Load().(string); name != "" && strings.HasSuffix(r.URL.Path, "/"+name) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write([]byte("this is not a wheel"))
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.URL = "http://" + l.Addr().String() + u.Path
	return p
}

// addInto sends an add of pkg to the environment in the background and returns once the add waits
// on the index at stalled. Its answer is not read: the tests using it kill the control plane under
// it, so the answer is a broken connection.
func (f *fabric) addInto(t *testing.T, wf, node, pkg string, stalled <-chan struct{}) {
	t.Helper()
	go func() {
		req, _ := http.NewRequest(http.MethodPost, f.URL+"/envs/"+wf+"/"+node+"/deps", strings.NewReader(`{"packages":["`+pkg+`"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+writerSecret)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-stalled:
	case <-time.After(60 * time.Second):
		t.Fatal("the add never reached the index")
	}
}
