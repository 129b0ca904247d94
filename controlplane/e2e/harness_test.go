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

	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

var bins struct {
	once         sync.Once
	dir          string
	controlplane string
	agent        string
	err          error
}

// binaries builds both programs once per test binary.
func binaries(t *testing.T) (controlplane, agent string) {
	t.Helper()
	root := testenv.RepoRoot(t)
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "envfabric-e2e-bin-")
		if bins.err != nil {
			return
		}
		for name, pkg := range map[string]string{"controlplane": "./controlplane/cmd/controlplane", "agent": "./agent/cmd/agent"} {
			out := filepath.Join(bins.dir, name)
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
		bins.controlplane = filepath.Join(bins.dir, "controlplane")
		bins.agent = filepath.Join(bins.dir, "agent")
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.controlplane, bins.agent
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a running program whose log goes to a file shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func start(t *testing.T, name, bin string, env []string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
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
	client   *http.Client
}

type options struct {
	databaseURL string
	indexURL    string // the real index for the end-to-end case; empty: a local one
	cpEnv       []string
	// packages are published on the local index beside pyindex.Universe().
	packages []pyindex.Package
}

func newFabric(t *testing.T, opt options) *fabric {
	t.Helper()
	cpBin, agentBin := binaries(t)
	uv := testenv.UV(t)
	f := &fabric{DataRoot: t.TempDir(), client: &http.Client{Timeout: 10 * time.Minute}}
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
	agentAddr := freeAddr(t)
	agentEnv := append(append([]string{}, base...), "AGENT_LISTEN_ADDR="+agentAddr, "UV_BIN="+uv)
	if indexURL != "-" {
		agentEnv = append(agentEnv, "UV_DEFAULT_INDEX="+indexURL)
	}
	if opt.indexURL != "" {
		// The real index may sit behind a TLS proxy whose CA only the system store knows.
		agentEnv = append(agentEnv, "UV_SYSTEM_CERTS=1")
	}
	f.agent = start(t, "agent", agentBin, agentEnv)
	waitHTTPAuth(t, f.agent, "http://"+agentAddr+"/healthz", token)

	cpAddr := freeAddr(t)
	cpEnv := append(append([]string{}, base...), "LISTEN_ADDR="+cpAddr, "AGENT_URL=http://"+agentAddr, "LEASE_TTL=6s", "API_TOKENS="+apiTokens)
	if opt.databaseURL != "" {
		cpEnv = append(cpEnv, "DATABASE_URL="+opt.databaseURL)
	}
	f.cpBin, f.cpEnv = cpBin, append(cpEnv, opt.cpEnv...)
	f.URL = "http://" + cpAddr
	f.startControlPlane(t)
	return f
}

// startControlPlane starts (or starts again) the control plane with the same configuration.
func (f *fabric) startControlPlane(t *testing.T) {
	t.Helper()
	f.cp = start(t, "controlplane", f.cpBin, f.cpEnv)
	waitHTTP(t, f.cp, f.URL+"/readyz")
}

// killControlPlane kills the control plane with SIGKILL, as a crash would.
func (f *fabric) killControlPlane(t *testing.T) {
	t.Helper()
	_ = f.cp.cmd.Process.Kill()
	<-f.cp.done
}

func waitHTTP(t *testing.T, p *proc, url string) {
	t.Helper()
	waitHTTPAuth(t, p, url, "")
}

// waitHTTPAuth waits until url answers 200, sending token as a bearer token when set.
func waitHTTPAuth(t *testing.T, p *proc, url, token string) {
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
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
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

// indexProxy sits in front of the local index so a test can break one file on purpose.
type indexProxy struct {
	URL     string
	corrupt atomic.Value // file name whose bytes are replaced, or ""
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
