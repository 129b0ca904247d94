package agentclient_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/controlplane/agentclient"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/fleetca"
	"github.com/envfabric/envfabric/shared/fleettls"
)

// pki holds CAs and members' files in one directory.
type pki struct {
	t   *testing.T
	dir string
	cas map[string]*fleetca.CA
}

func newPKI(t *testing.T, names ...string) *pki {
	p := &pki{t: t, dir: t.TempDir(), cas: map[string]*fleetca.CA{}}
	for _, n := range names {
		ca, _, err := fleetca.New(n, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		p.cas[n] = ca
	}
	return p
}

// member issues name's certificate from ca with role, trusting the CAs named in trust.
func (p *pki) member(ca string, role fleettls.Role, name string, trust ...string) fleettls.Files {
	p.t.Helper()
	certPEM, keyPEM, err := p.cas[ca].Issue(fleetca.Request{Role: role, Name: name, Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		p.t.Fatal(err)
	}
	var bundle []byte
	for _, n := range trust {
		bundle = append(bundle, p.cas[n].CertPEM...)
	}
	f := fleettls.Files{Cert: filepath.Join(p.dir, name+".crt"), Key: filepath.Join(p.dir, name+".key"), CA: filepath.Join(p.dir, name+"-ca.crt")}
	for path, b := range map[string][]byte{f.Cert: certPEM, f.Key: keyPEM, f.CA: bundle} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	return f
}

func (p *pki) source(f fleettls.Files, role fleettls.Role) *fleettls.Source {
	p.t.Helper()
	s, err := fleettls.Open(f, role, slog.New(slog.DiscardHandler))
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

type infoOnly struct {
	agentv1connect.UnimplementedAgentServiceHandler
}

func (infoOnly) Info(context.Context, *connect.Request[agentv1.InfoRequest]) (*connect.Response[agentv1.InfoResponse], error) {
	return connect.NewResponse(&agentv1.InfoResponse{AgentId: "a1"}), nil
}

// serve runs an agent's HTTP surface under cfg with policy, as the agent does, and returns its URL.
func serve(t *testing.T, cfg *tls.Config, policy agentauth.Policy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(infoOnly{}))
	srv := &http.Server{Handler: agentauth.Middleware(policy, mux), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

// TestCertificateErrors: a call refused for a certificate, on either side, says so (and is a
// *CertificateError), instead of pointing at AGENT_TOKEN; a refused token still does.
func TestCertificateErrors(t *testing.T) {
	p := newPKI(t, "ca1", "ca2")
	agentSrc := p.source(p.member("ca1", fleettls.Agent, "a1", "ca1"), fleettls.Agent)
	cpSrc := p.source(p.member("ca1", fleettls.ControlPlane, "cp1", "ca1"), fleettls.ControlPlane)
	foreignAgent := p.source(p.member("ca2", fleettls.Agent, "a2", "ca1", "ca2"), fleettls.Agent)
	foreignCP := p.source(p.member("ca2", fleettls.ControlPlane, "cp2", "ca1", "ca2"), fleettls.ControlPlane)
	cpPair, err := tls.LoadX509KeyPair(filepath.Join(p.dir, "cp1.crt"), filepath.Join(p.dir, "cp1.key"))
	if err != nil {
		t.Fatal(err)
	}
	const token = "the-token"
	policy := func(src *fleettls.Source) agentauth.Policy {
		return agentauth.Policy{Token: token, Peer: func(cs *tls.ConnectionState) error {
			err := src.VerifyPeer(cs, fleettls.ControlPlane)
			if errors.Is(err, fleettls.ErrNoCertificate) {
				return agentauth.ErrNoPeer
			}
			return err
		}}
	}
	good := serve(t, agentSrc.ServerConfig([]string{"http/1.1"}), policy(agentSrc))
	tests := []struct {
		name         string
		url          string
		src          *fleettls.Source
		token        string
		wantCert     bool // a *CertificateError
		agentRefused bool
		want         string // in the message
	}{
		{"both certificates good", good, cpSrc, token, false, false, ""},
		{"the agent's certificate is from another CA", serve(t, foreignAgent.ServerConfig([]string{"http/1.1"}), policy(foreignAgent)), cpSrc, token,
			true, false, "does not accept the certificate of agent"},
		{"the agent shows a control plane's certificate", serve(t, &tls.Config{Certificates: []tls.Certificate{cpPair}}, policy(agentSrc)), cpSrc, token,
			true, false, "incompatible key usage"},
		{"the agent refuses this control plane's CA at the handshake", good, foreignCP, token, true, true, "refused this control plane's certificate"},
		{"the agent refuses the certificate per request", serve(t, agentSrc.ServerConfig([]string{"http/1.1"}),
			agentauth.Policy{Token: token, Peer: func(*tls.ConnectionState) error { return errors.New("CA dropped") }}), cpSrc, token,
			true, true, "refused this control plane's certificate"},
		{"wrong token", good, cpSrc, "not-the-token", false, false, "check AGENT_TOKEN on both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := agentclient.New(tt.url, tt.token, agentclient.WithTLS(tt.src))
			_, err := c.Describe(t.Context())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v; want success", err)
				}
				return
			}
			if err == nil {
				t.Fatal("got success; want a refusal")
			}
			if got := errcode.Of(err); got != errcode.AgentUnavailable {
				t.Errorf("code %q; want %q", got, errcode.AgentUnavailable)
			}
			var cert *agentclient.CertificateError
			if errors.As(err, &cert) != tt.wantCert || (cert != nil && cert.AgentRefused != tt.agentRefused) {
				t.Errorf("got %v (%#v); want a certificate error %v, agent refused %v", err, cert, tt.wantCert, tt.agentRefused)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || (tt.wantCert && strings.Contains(msg, "AGENT_TOKEN")) {
				t.Errorf("got %q; want it to say %q", msg, tt.want)
			}
		})
	}
}
