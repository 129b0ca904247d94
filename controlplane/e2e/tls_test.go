package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

var caBin struct {
	once sync.Once
	path string
	err  error
}

// fleetCA is the envfabric-ca command at work in a directory: CAs under ca*/, members'
// certificates under certs/, and certs/ca.crt the bundle every member trusts.
type fleetCA struct {
	t   *testing.T
	bin string
	dir string
}

func newFleetCA(t *testing.T) *fleetCA {
	t.Helper()
	binaries(t) // makes bins.dir, which TestMain removes
	caBin.once.Do(func() {
		caBin.path = filepath.Join(bins.dir, "envfabric-ca")
		cmd := exec.Command("go", "build", "-o", caBin.path, "./controlplane/cmd/envfabric-ca")
		cmd.Dir = testenv.RepoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			caBin.err = fmt.Errorf("go build envfabric-ca: %v\n%s", err, b)
		}
	})
	if caBin.err != nil {
		t.Fatal(caBin.err)
	}
	c := &fleetCA{t: t, bin: caBin.path, dir: t.TempDir()}
	c.run("init", "-dir", c.path("ca1"), "-name", "e2e CA 1")
	c.trust("ca1")
	return c
}

func (c *fleetCA) path(p string) string { return filepath.Join(c.dir, p) }

func (c *fleetCA) run(args ...string) {
	c.t.Helper()
	if b, err := exec.Command(c.bin, args...).CombinedOutput(); err != nil {
		c.t.Fatalf("envfabric-ca %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

// trust makes the bundle the given CAs' certificates.
func (c *fleetCA) trust(cas ...string) {
	c.t.Helper()
	args := []string{"bundle", "-out", c.path("certs/ca.crt")}
	for _, ca := range cas {
		args = append(args, c.path(ca+"/ca.crt"))
	}
	if err := os.MkdirAll(c.path("certs"), 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.run(args...)
}

// issue (re-)issues NAME's certificate from ca into certs/ and returns its serial.
func (c *fleetCA) issue(ca, role, name string) string {
	c.t.Helper()
	c.run("issue", "-dir", c.path(ca), "-role", role, "-name", name, "-host", "127.0.0.1", "-out", c.path("certs"))
	return c.pair(name).Leaf.SerialNumber.Text(16)
}

func (c *fleetCA) pair(name string) *tls.Certificate {
	c.t.Helper()
	p, err := tls.LoadX509KeyPair(c.path("certs/"+name+".crt"), c.path("certs/"+name+".key"))
	if err != nil {
		c.t.Fatal(err)
	}
	return &p
}

// env is the FLEET_TLS_* of member name.
func (c *fleetCA) env(name string) []string {
	return []string{"FLEET_TLS_CERT=" + c.path("certs/"+name+".crt"), "FLEET_TLS_KEY=" + c.path("certs/"+name+".key"),
		"FLEET_TLS_CA=" + c.path("certs/ca.crt")}
}

// client presents cert (none when nil), trusting the bundle as it is now.
func (c *fleetCA) client(cert *tls.Certificate) *http.Client {
	c.t.Helper()
	b, err := os.ReadFile(c.path("certs/ca.crt"))
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	cfg := &tls.Config{RootCAs: pool}
	if cert != nil {
		// Always sent, even when the agent asks for other CAs' certificates: what matters is what
		// the agent does with it.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// tlsFabric is an agent serving mutual TLS and a control plane calling it.
type tlsFabric struct {
	ca           *fleetCA
	agentURL     string
	token        string
	metricsToken string
	agent        *proc
	cp           *fabric
	cpBin        string
	base         []string
}

func newTLSFabric(t *testing.T) *tlsFabric {
	t.Helper()
	cpBin, agentBin := binaries(t)
	ca := newFleetCA(t)
	ca.issue("ca1", "agent", "a1")
	ca.issue("ca1", "controlplane", "cp1")
	data := t.TempDir()
	f := &tlsFabric{ca: ca, token: "tls-token-" + fmt.Sprint(time.Now().UnixNano()), metricsToken: "tls-metrics-token", cpBin: cpBin}
	f.base = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATA_ROOT=" + data, "AGENT_TOKEN=" + f.token, "LOG_LEVEL=debug"}
	env := append(append(append([]string{}, f.base...), "AGENT_LISTEN_ADDR=127.0.0.1:0", "UV_BIN="+testenv.UV(t),
		"AGENT_METRICS_TOKEN="+f.metricsToken), ca.env("a1")...)
	f.agent = start(t, "agent", agentBin, env)
	f.agentURL = "https://" + f.agent.addr(t)
	waitHTTPWith(t, f.agent, ca.client(nil), f.agentURL+"/healthz", f.metricsToken)
	f.cp = f.controlPlane(t, "cp", f.agentURL, ca.env("cp1"))
	return f
}

// controlPlane starts a control plane calling the agent at agentURL with the given FLEET_TLS_*,
// and waits until it serves (not until it is ready: it may be meant to refuse its agent).
func (f *tlsFabric) controlPlane(t *testing.T, name, agentURL string, tlsEnv []string) *fabric {
	t.Helper()
	env := append(append(append([]string{}, f.base...), "DATA_ROOT="+t.TempDir(), "LISTEN_ADDR=127.0.0.1:0", "AGENT_URL="+agentURL,
		"API_TOKENS="+apiTokens), tlsEnv...)
	cp := &fabric{client: &http.Client{Timeout: time.Minute}}
	cp.cp = start(t, name, f.cpBin, env)
	cp.URL = "http://" + cp.cp.addr(t)
	waitHTTP(t, cp.cp, cp.URL+"/healthz")
	return cp
}

// reachesAgent reports whether the control plane's GET /agents reached its agent, with the error
// it reports otherwise.
func reachesAgent(t *testing.T, cp *fabric) (bool, string) {
	t.Helper()
	r := cp.do(t, "GET", "/agents", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /agents: %d %s", r.Status, r.Raw)
	}
	agents, _ := r.Body["agents"].([]any)
	if len(agents) != 1 {
		t.Fatalf("GET /agents: %s", r.Raw)
	}
	a := agents[0].(map[string]any)
	msg, _ := a["error"].(string)
	return a["reachable"] == true, msg
}

// info calls the agent's Info RPC as a client with c and token would.
func (f *tlsFabric) info(t *testing.T, c *http.Client, token string) error {
	rpc := agentv1connect.NewAgentServiceClient(c, f.agentURL, connect.WithInterceptors(agentauth.ClientInterceptor(token)))
	_, err := rpc.Info(t.Context(), connect.NewRequest(&agentv1.InfoRequest{}))
	return err
}

// presented is the serial of the certificate the agent shows a new connection.
func (f *tlsFabric) presented(t *testing.T) string {
	t.Helper()
	conn, err := tls.Dial("tcp", hostOf(t, f.agentURL), &tls.Config{InsecureSkipVerify: true}) // only reading what it shows
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// handshake stands for a refusal at the TLS handshake, which a Connect client sees as unavailable.
const handshake connect.Code = 1000

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	f := newTLSFabric(t)
	waitHTTP(t, f.cp.cp, f.cp.URL+"/readyz") // ready: the control plane reached its agent over mutual TLS
	if ok, msg := reachesAgent(t, f.cp); !ok {
		t.Fatalf("the control plane does not reach its agent: %s", msg)
	}

	// An agent refuses callers without a control plane's certificate of this fleet, whatever
	// their token.
	other := newFleetCA(t) // another fleet's CA
	other.issue("ca1", "controlplane", "intruder")
	f.ca.issue("ca1", "agent", "a2")
	tests := []struct {
		name   string
		client *http.Client
		token  string
		want   connect.Code // 0: succeeds; handshake: the TLS handshake fails
	}{
		{"control plane certificate and token", f.ca.client(f.ca.pair("cp1")), f.token, 0},
		{"control plane certificate, wrong token", f.ca.client(f.ca.pair("cp1")), "nope", connect.CodeUnauthenticated},
		{"control plane certificate, metrics token", f.ca.client(f.ca.pair("cp1")), f.metricsToken, connect.CodePermissionDenied},
		{"token without a certificate", f.ca.client(nil), f.token, connect.CodeUnauthenticated},
		{"an agent's certificate", f.ca.client(f.ca.pair("a2")), f.token, handshake},
		{"another CA's control plane", f.ca.client(other.pair("intruder")), f.token, handshake},
	}
	for _, tt := range tests {
		t.Run("agent refuses/"+tt.name, func(t *testing.T) {
			err := f.info(t, tt.client, tt.token)
			switch {
			case tt.want == 0 && err != nil:
				t.Errorf("got %v; want success", err)
			case tt.want == handshake && (err == nil || connect.CodeOf(err) != connect.CodeUnavailable):
				t.Errorf("got %v; want the handshake refused", err)
			case tt.want > 0 && tt.want != handshake && connect.CodeOf(err) != tt.want:
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
	// Plaintext on the TLS port gets Go's 400 ("an HTTP request to an HTTPS server"), nothing else.
	if resp, err := http.Get("http://" + hostOf(t, f.agentURL) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plaintext to the agent's TLS port: %d; want 400", resp.StatusCode)
		}
	}

	// The metrics credential scrapes (and probes) without a certificate, and does nothing else.
	t.Run("metrics credential", func(t *testing.T) {
		for _, tt := range []struct {
			token string
			path  string
			want  int
		}{
			{f.metricsToken, "/metrics", http.StatusOK},
			{f.metricsToken, "/readyz", http.StatusOK},
			{"", "/metrics", http.StatusUnauthorized},
		} {
			req, _ := http.NewRequest(http.MethodGet, f.agentURL+tt.path, nil)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := f.ca.client(nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || tt.path == "/metrics" && tt.want == 200 && !strings.Contains(string(b), "envfabric_agent_tls_certificate_expiry_timestamp_seconds") {
				t.Errorf("GET %s with %q: %d; want %d (and the agent's series)", tt.path, tt.token, resp.StatusCode, tt.want)
			}
		}
		if err := f.info(t, f.ca.client(nil), f.metricsToken); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("an RPC with the metrics token: %v; want permission_denied", err)
		}
	})

	// A control plane refuses agents that are not this fleet's: a server with a control plane's
	// certificate, or with another CA's agent certificate.
	other.issue("ca1", "agent", "foreign-agent")
	for name, cert := range map[string]*tls.Certificate{
		"a control plane's certificate": f.ca.pair("cp1"),
		"another CA's agent":            other.pair("foreign-agent"),
	} {
		t.Run("control plane refuses an agent with "+name, func(t *testing.T) {
			impostor := impostor(t, cert)
			cp := f.controlPlane(t, "cp-vs-impostor", "https://"+impostor, f.ca.env("cp1"))
			ok, msg := reachesAgent(t, cp)
			if ok || !strings.Contains(msg, "certificate") {
				t.Errorf("reachable=%v error=%q; want it refused for its certificate", ok, msg)
			}
		})
	}

	// An agent given a control plane's certificate does not start.
	t.Run("agent with a control plane's certificate", func(t *testing.T) {
		_, agentBin := binaries(t)
		env := append(append(append([]string{}, f.base...), "DATA_ROOT="+t.TempDir(), "AGENT_LISTEN_ADDR=127.0.0.1:0", "UV_BIN="+testenv.UV(t)), f.ca.env("cp1")...)
		p := start(t, "agent-with-cp-cert", agentBin, env)
		<-p.done
		b, _ := os.ReadFile(p.log)
		if p.err == nil || !strings.Contains(string(b), "this program needs one for the agent role") {
			t.Errorf("exit %v, log:\n%s\nwant a refusal of the certificate's role", p.err, tail(string(b), 2000))
		}
	})
}

// impostor serves TLS with cert on loopback and returns its address.
func impostor(t *testing.T, cert *tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ErrorLog: nil}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// Certificates and the CA are rotated under running processes: re-issued certificates are
// picked up, a new CA is introduced beside the old one, everyone moves to it, and the old one is
// dropped, with calls working at every step and the old CA's certificates refused at the end.
func TestCertificateRotation(t *testing.T) {
	t.Parallel()
	f := newTLSFabric(t)
	ca := f.ca
	step := func(name string) {
		t.Helper()
		if ok, msg := reachesAgent(t, f.cp); !ok {
			t.Fatalf("%s: the control plane no longer reaches its agent: %s", name, msg)
		}
	}
	step("start")

	// Re-issued from the same CA: the agent shows the new certificate to the next connection.
	serial := ca.issue("ca1", "agent", "a1")
	if got := f.presented(t); got != serial {
		t.Errorf("after a re-issue the agent shows serial %s; want %s", got, serial)
	}
	step("agent re-issued")
	ca.issue("ca1", "controlplane", "cp1")
	step("control plane re-issued")

	// A caller of the old CA, kept alive across the rotation.
	ca.issue("ca1", "controlplane", "cp-old")
	ca.run("init", "-dir", ca.path("ca2"), "-name", "e2e CA 2")
	ca.trust("ca1", "ca2")
	old := ca.client(ca.pair("cp-old"))
	if err := f.info(t, old, f.token); err != nil {
		t.Fatalf("an old-CA caller while both CAs are trusted: %v", err)
	}

	serial = ca.issue("ca2", "agent", "a1")
	if got := f.presented(t); got != serial {
		t.Errorf("after moving to the new CA the agent shows serial %s; want %s", got, serial)
	}
	step("agent on the new CA")
	ca.issue("ca2", "controlplane", "cp1")
	step("control plane on the new CA")
	ca.trust("ca2")
	// Both sides now trust only the new CA: this step works only if each shows its new certificate.
	step("old CA dropped")

	if err := f.info(t, old, f.token); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("the old-CA caller on its kept-alive connection: %v; want permission_denied", err)
	}
	if err := f.info(t, ca.client(ca.pair("cp-old")), f.token); err == nil || connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("the old-CA caller on a new connection: %v; want the handshake refused", err)
	}
}

// TestFleetMutualTLS: two control planes and two agents, each with its own certificate of one
// fleet CA, find each other by gossip and work over mutual TLS (created through one control plane,
// run through the other). An agent on the same storage and gossip key but with another CA's
// certificate is refused by both control planes (listed under refused in GET /agents, never
// routed to) while the others keep working.
func TestFleetMutualTLS(t *testing.T) {
	t.Parallel()
	fl := newFleet(t, fleetOptions{controlPlanes: 2, agents: 2, tls: true})
	for i := range 2 {
		_, _, body := fl.agentsView(t, i)
		for _, a := range body["agents"].([]any) {
			if u, _ := a.(map[string]any)["url"].(string); !strings.HasPrefix(u, "https://") {
				t.Errorf("cp%d sees agent %v; want it reached at an https:// URL", i, a)
			}
		}
	}
	work := func(name string, nodes int) {
		t.Helper()
		for i := range nodes {
			node := fmt.Sprintf("%s%d", name, i)
			expect(t, fl.cp(i%2).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": node, "packages": []string{"alpha==1.0.0"}}), 201, "")
			r := fl.cp(1-i%2).do(t, "POST", "/envs/wf/"+node+"/run", map[string]any{"code": "import alpha; print(alpha.__version__)"})
			expect(t, r, 200, "")
			if strings.TrimSpace(r.str("stdout")) != "1.0.0" {
				t.Errorf("run on %s: %s", node, r.Raw)
			}
			for _, op := range opsOf(t, fl.cp(0), "wf", node) {
				if !strings.HasSuffix(op, "@agent1") && !strings.HasSuffix(op, "@agent2") {
					t.Errorf("operation %s on %s; want it on agent1 or agent2", op, node)
				}
			}
		}
	}
	work("before", 4)

	// Another CA's agent certificate; its bundle trusts the fleet's CA too, so that it accepts
	// the control planes and only they have a reason to refuse.
	other := newFleetCA(t)
	other.issue("ca1", "agent", "foreign")
	other.run("bundle", "-out", other.path("certs/both.crt"), other.path("ca1/ca.crt"), fl.ca.path("ca1/ca.crt"))
	fl.startAgent(t, "foreign", "FLEET_TLS_CERT="+other.path("certs/foreign.crt"), "FLEET_TLS_KEY="+other.path("certs/foreign.key"),
		"FLEET_TLS_CA="+other.path("certs/both.crt"))
	for i := range 2 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			alive, refused, _ := fl.agentsView(t, i)
			why, _ := refused["foreign"].(string)
			if strings.Contains(why, "certificate") {
				if slices.Contains(alive, "foreign") || len(alive) != 2 {
					t.Errorf("cp%d: alive %v; want agent1 and agent2 only", i, alive)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cp%d did not refuse the agent with another CA's certificate: alive %v, refused %v", i, alive, refused)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := fl.metric(t, i, "envfabric_agents_refused"); got != "1" {
			t.Errorf("cp%d: envfabric_agents_refused = %q; want the foreign agent counted", i, got)
		}
	}
	work("after", 6)
	for i := range 4 {
		expect(t, fl.cp(i%2).do(t, "POST", "/envs/wf/before"+fmt.Sprint(i)+"/run", map[string]any{"code": "import alpha"}), 200, "")
	}
}
