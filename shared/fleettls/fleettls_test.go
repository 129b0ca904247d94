package fleettls_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/fleetca"
	"github.com/envfabric/envfabric/shared/fleettls"
)

// pki is a CA in a directory, issuing members' files there.
type pki struct {
	t   *testing.T
	dir string
	ca  *fleetca.CA
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	ca, _, err := fleetca.New(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), ca: ca}
	p.write("ca.crt", ca.CertPEM)
	return p
}

func (p *pki) write(name string, b []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := fleetca.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue writes NAME.crt and NAME.key into dir (the pki's own when empty) and returns the files,
// trusting this CA.
func (p *pki) issue(role fleettls.Role, name, dir string) fleettls.Files {
	p.t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(fleetca.Request{Role: role, Name: name, Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		p.t.Fatal(err)
	}
	if dir == "" {
		dir = p.dir
	}
	f := fleettls.Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: filepath.Join(p.dir, "ca.crt")}
	for path, b := range map[string][]byte{f.Key: keyPEM, f.Cert: certPEM} {
		if err := fleetca.WriteFile(path, b, 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	return f
}

func open(t *testing.T, f fleettls.Files, role fleettls.Role) *fleettls.Source {
	t.Helper()
	s, err := fleettls.Open(f, role, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoleOf(t *testing.T) {
	tests := []struct {
		name  string
		usage []x509.ExtKeyUsage
		want  fleettls.Role
	}{
		{"client only", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, fleettls.ControlPlane},
		{"server only", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, fleettls.Agent},
		{"both", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, ""},
		{"any", []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, ""},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fleettls.RoleOf(&x509.Certificate{ExtKeyUsage: tt.usage})
			if got != tt.want || (err == nil) != (tt.want != "") {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestOpenRefuses(t *testing.T) {
	p, other := newPKI(t, "fleet"), newPKI(t, "other")
	agent := p.issue(fleettls.Agent, "a1", "")
	foreign := other.issue(fleettls.Agent, "a2", "")
	foreign.CA = agent.CA
	tests := []struct {
		name  string
		files fleettls.Files
		role  fleettls.Role
		want  string
	}{
		{"wrong role", agent, fleettls.ControlPlane, "is for the agent role; this program needs one for the controlplane role"},
		{"another CA", foreign, fleettls.Agent, "not trusted by the CA bundle"},
		{"missing file", fleettls.Files{Cert: agent.Cert, Key: agent.Key, CA: filepath.Join(p.dir, "nope")}, fleettls.Agent, "no such file"},
		{"incomplete", fleettls.Files{Cert: agent.Cert}, fleettls.Agent, "all needed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fleettls.Open(tt.files, tt.role, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v; want an error with %q", err, tt.want)
			}
		})
	}
}

// server is an agent-side HTTPS server answering with the client certificate's serial, after
// checking it with VerifyPeer as the agent does.
func server(t *testing.T, src *fleettls.Source) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: src.ServerConfig([]string{"http/1.1"}), ErrorLog: nil,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := src.VerifyPeer(r.TLS, fleettls.ControlPlane); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].SerialNumber.Text(16))
		})}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// client is a control plane's client with src's material.
func client(src *fleettls.Source) *http.Client {
	return &http.Client{Timeout: 30 * time.Second,
		Transport: src.Transport(&http.Transport{DialTLSContext: src.DialTLSContext(&net.Dialer{})})}
}

func call(c *http.Client, addr string) (int, string, error) {
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// always sends cert, even to a server that asks for certificates of other CAs (a plain
// Certificates list is not sent then, which would hide what the server does with it).
func always(cert *tls.Certificate) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
}

func serialOf(t *testing.T, f fleettls.Files) string {
	t.Helper()
	c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Text(16)
}

func TestMutualAuthentication(t *testing.T) {
	p, other := newPKI(t, "fleet"), newPKI(t, "other")
	agentSrc := open(t, p.issue(fleettls.Agent, "a1", ""), fleettls.Agent)
	addr := server(t, agentSrc)
	cp := p.issue(fleettls.ControlPlane, "cp1", "")

	// Certificates in the wrong role or from another CA, built by hand as an attacker would
	// (fleettls.Open refuses to load them).
	pair := func(f fleettls.Files) tls.Certificate {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.ca.CertPEM)
	rogue := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		if cert != nil {
			cfg.GetClientCertificate = always(cert)
		}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	agentCert, foreignCP := pair(p.issue(fleettls.Agent, "a2", "")), pair(other.issue(fleettls.ControlPlane, "cp-x", ""))
	tests := []struct {
		name       string
		client     *http.Client
		wantStatus int // 0: the handshake fails
	}{
		{"control plane certificate", client(open(t, cp, fleettls.ControlPlane)), http.StatusOK},
		{"no certificate", rogue(nil), http.StatusForbidden},
		{"an agent's certificate", rogue(&agentCert), 0},
		{"another CA's control plane", rogue(&foreignCP), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, err := call(tt.client, addr)
			if tt.wantStatus == 0 {
				if err == nil {
					t.Errorf("got %d %q; want the handshake refused", code, body)
				}
				return
			}
			if err != nil || code != tt.wantStatus {
				t.Errorf("got %d %q %v; want %d", code, body, err, tt.wantStatus)
			}
		})
	}

	// The reverse: a control plane refuses a server that is not an agent of this fleet.
	for name, f := range map[string]fleettls.Files{
		"a control plane's certificate": p.issue(fleettls.ControlPlane, "cp-as-agent", ""),
		"another CA's agent":            other.issue(fleettls.Agent, "a-x", ""),
	} {
		t.Run("server with "+name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair(f)}})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_ = c.(*tls.Conn).Handshake()
					c.Close()
				}
			}()
			if _, _, err := call(client(open(t, cp, fleettls.ControlPlane)), ln.Addr().String()); err == nil {
				t.Error("the control plane accepted it")
			}
		})
	}
}

func TestRotation(t *testing.T) {
	p := newPKI(t, "fleet")
	agentFiles := p.issue(fleettls.Agent, "a1", "")
	agentSrc := open(t, agentFiles, fleettls.Agent)
	addr := server(t, agentSrc)
	cpFiles := p.issue(fleettls.ControlPlane, "cp1", "")
	cpSrc := open(t, cpFiles, fleettls.ControlPlane)
	c := client(cpSrc)
	expectSerial := func(step, want string) {
		t.Helper()
		code, got, err := call(c, addr)
		if err != nil || code != http.StatusOK || got != want {
			t.Fatalf("%s: got %d %q %v; want 200 and serial %s", step, code, got, err, want)
		}
	}
	expectSerial("before", serialOf(t, cpFiles))

	// Re-issued from the same CA: the next request (a kept-alive connection is dropped when the
	// material changes) shows the new certificate.
	p.issue(fleettls.ControlPlane, "cp1", "")
	expectSerial("re-issued", serialOf(t, cpFiles))
	if g := cpSrc.Generation(); g != 2 {
		t.Errorf("generation %d; want 2 after one reload", g)
	}

	// A key that does not match its certificate (written half-way) keeps the material in force,
	// even for a new connection; the pair made whole again is taken.
	inForce := serialOf(t, cpFiles)
	stray := p.issue(fleettls.ControlPlane, "stray", t.TempDir())
	b, _ := os.ReadFile(stray.Key)
	if err := fleetca.WriteFile(cpFiles.Key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	expectSerial("mismatched pair", inForce)
	p.issue(fleettls.ControlPlane, "cp1", "")
	expectSerial("pair whole again", serialOf(t, cpFiles))

	// CA rotation: trust both, re-issue everyone from the new CA, trust the new one only.
	next := newPKI(t, "fleet-2")
	both := x509.NewCertPool()
	both.AppendCertsFromPEM(p.ca.CertPEM)
	both.AppendCertsFromPEM(next.ca.CertPEM)
	p.write("ca.crt", append(append([]byte{}, p.ca.CertPEM...), next.ca.CertPEM...)) // the CA file both sides read
	// A client of the old CA with a fixed configuration, keeping its connection alive.
	oldPair := func() tls.Certificate {
		f := p.issue(fleettls.ControlPlane, "old", t.TempDir())
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}()
	oldClient := func() *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: both, ServerName: "127.0.0.1", GetClientCertificate: always(&oldPair)}}}
	}
	old := oldClient()
	if code, _, err := call(old, addr); err != nil || code != http.StatusOK {
		t.Fatalf("an old-CA client while both CAs are trusted: %d %v", code, err)
	}
	next.issue(fleettls.Agent, "a1", p.dir)
	expectSerial("agent on the new CA", serialOf(t, cpFiles))
	next.issue(fleettls.ControlPlane, "cp1", p.dir)
	newSerial := serialOf(t, cpFiles)
	expectSerial("control plane on the new CA", newSerial)
	p.write("ca.crt", next.ca.CertPEM)
	expectSerial("old CA dropped", newSerial)

	// The old CA's client is refused on its kept-alive connection (VerifyPeer per request)…
	if code, body, err := call(old, addr); err != nil || code != http.StatusForbidden {
		t.Errorf("an old-CA client on its connection after the old CA was dropped: %d %q %v; want 403", code, body, err)
	}
	// …and at a new handshake.
	if code, _, err := call(oldClient(), addr); err == nil {
		t.Errorf("a new old-CA connection: %d; want the handshake refused", code)
	}
}
