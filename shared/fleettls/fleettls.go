// Package fleettls is the mutual TLS between control planes and agents. It loads a member's
// certificate, key and the fleet's CA bundle from files and reloads them when they change (so a
// rolling re-issue needs no restart), builds the TLS configurations of both sides, and checks the
// role a certificate carries: control planes hold client certificates, agents server ones, and
// neither can act as the other.
package fleettls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/shared/config"
)

// Role is what a certificate lets its holder be in the fleet. It is carried by the certificate's
// extended key usage, which TLS verification itself enforces: a client certificate is verified
// for ClientAuth, a server certificate for ServerAuth.
type Role string

const (
	// ControlPlane certificates have ClientAuth, and only it: they call agents.
	ControlPlane Role = "controlplane"
	// Agent certificates have ServerAuth, and only it: they serve control planes.
	Agent Role = "agent"
)

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case ControlPlane, Agent:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want %s or %s", s, ControlPlane, Agent)
}

// Usage is the extended key usage that carries the role.
func (r Role) Usage() x509.ExtKeyUsage {
	if r == ControlPlane {
		return x509.ExtKeyUsageClientAuth
	}
	return x509.ExtKeyUsageServerAuth
}

// RoleError is a certificate that does not carry the fleet role asked for: another role, or none.
type RoleError struct {
	Subject string // the certificate's common name
	Got     Role   // "": no single role
	Want    Role
	Usages  []x509.ExtKeyUsage
}

func (e *RoleError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("certificate %q carries no single fleet role (extended key usage %v): issue it with envfabric-ca", e.Subject, e.Usages)
	}
	return fmt.Sprintf("certificate %q is for the %s role; this program needs one for the %s role", e.Subject, e.Got, e.Want)
}

// RoleOf is the role a certificate carries. A certificate with both usages (or any), as general
// tools issue by default, has none: it could act as either side (a *RoleError).
func RoleOf(c *x509.Certificate) (Role, error) {
	client := slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	server := slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	switch {
	case slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny):
	case client && !server:
		return ControlPlane, nil
	case server && !client:
		return Agent, nil
	}
	return "", &RoleError{Subject: c.Subject.CommonName, Usages: c.ExtKeyUsage}
}

func wantRole(c *x509.Certificate, want Role) error {
	got, err := RoleOf(c)
	if err != nil {
		var re *RoleError
		if errors.As(err, &re) {
			re.Want = want
		}
		return err
	}
	if got != want {
		return &RoleError{Subject: c.Subject.CommonName, Got: got, Want: want, Usages: c.ExtKeyUsage}
	}
	return nil
}

// ErrNoCertificate is a request that came without a client certificate.
var ErrNoCertificate = errors.New("no client certificate")

// Files are a member's TLS material.
type Files struct {
	Cert string // its certificate (PEM; intermediates may follow)
	Key  string // its private key (PEM)
	CA   string // the fleet's CA bundle (PEM, one or more certificates: several during a CA rotation)
}

// Set reports whether any file is named.
func (f Files) Set() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// material is one loaded generation of the files.
type material struct {
	cert *tls.Certificate
	pool *x509.CertPool
	gen  uint64
}

// stamp identifies a file's content cheaply: a change of any of these means it was rewritten
// (or, through a symlink, replaced).
type stamp struct {
	ino, size int64
	mod       time.Time
}

// Source is a member's TLS material, reloaded when its files change. Every handshake and every
// check looks at the files' stamps (three stats) and reloads when one changed, so a rotation takes
// effect at the next connection, with nothing to signal and no polling loop. A reload that fails
// (a key written before its certificate, say) keeps the material in force and is retried at the
// next change.
type Source struct {
	files Files
	role  Role
	log   *slog.Logger

	mu     sync.Mutex
	stamps [3]stamp // at the last load attempt
	cur    atomic.Pointer[material]
}

// Open loads the files; it fails when they do not make a usable certificate for role.
func Open(files Files, role Role, log *slog.Logger) (*Source, error) {
	if files.Cert == "" || files.Key == "" || files.CA == "" {
		return nil, errors.New("a certificate, its key and the CA bundle are all needed")
	}
	s := &Source{files: files, role: role, log: log}
	st, err := s.stat()
	if err != nil {
		return nil, err
	}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	if _, err := verify(m.cert.Leaf, m.cert.Certificate[1:], m.pool, role); err != nil {
		return nil, fmt.Errorf("%s is not trusted by the CA bundle %s: %w", files.Cert, files.CA, err)
	}
	m.gen = 1
	s.stamps = st
	s.cur.Store(m)
	return s, nil
}

func (s *Source) stat() ([3]stamp, error) {
	var out [3]stamp
	for i, p := range []string{s.files.Cert, s.files.Key, s.files.CA} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("TLS file: %w", err)
		}
		out[i] = stamp{size: fi.Size(), mod: fi.ModTime()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			out[i].ino = int64(sys.Ino)
		}
	}
	return out, nil
}

// load reads the files; the certificate must carry the source's role.
func (s *Source) load() (*material, error) {
	files := s.files
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, fmt.Errorf("loading the certificate %s and key %s: %w", files.Cert, files.Key, err)
	}
	b, err := os.ReadFile(files.CA)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("the CA bundle %s holds no PEM certificate", files.CA)
	}
	if err := wantRole(cert.Leaf, s.role); err != nil {
		return nil, fmt.Errorf("%s: %w", files.Cert, err)
	}
	return &material{cert: &cert, pool: pool}, nil
}

// current returns the material in force, reloading it first when the files changed.
func (s *Source) current() *material {
	st, err := s.stat()
	cur := s.cur.Load()
	if err != nil {
		// Mid-rename, or removed: keep what works.
		return cur
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == s.stamps {
		return s.cur.Load()
	}
	s.stamps = st
	m, err := s.load()
	if err == nil {
		m.gen = cur.gen + 1
		s.cur.Store(m)
		s.log.Info("TLS material reloaded", "cert", s.files.Cert, "subject", m.cert.Leaf.Subject.CommonName,
			"serial", m.cert.Leaf.SerialNumber.Text(16), "not_after", m.cert.Leaf.NotAfter)
		return m
	}
	s.log.Warn("TLS files changed but do not load; keeping the material in force", "err", err)
	return cur
}

// Generation counts the reloads; it changes when the material in force does.
func (s *Source) Generation() uint64 { return s.current().gen }

// NotAfter is when the certificate in force expires.
func (s *Source) NotAfter() time.Time { return s.current().cert.Leaf.NotAfter }

// verify checks a peer's chain against pool for role.
func verify(leaf *x509.Certificate, rest [][]byte, pool *x509.CertPool, role Role) ([][]*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, der := range rest {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{role.Usage()}})
	if err != nil {
		return nil, err
	}
	return chains, wantRole(leaf, role)
}

// VerifyPeer checks a connection's peer against the CA bundle in force now, for role. Servers
// call it for every request, so a CA removed from the bundle is refused at once, even on
// connections that were made while it was trusted.
func (s *Source) VerifyPeer(cs *tls.ConnectionState, role Role) error {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ErrNoCertificate
	}
	rest := make([][]byte, 0, len(cs.PeerCertificates)-1)
	for _, c := range cs.PeerCertificates[1:] {
		rest = append(rest, c.Raw)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := verify(leaf, rest, s.current().pool, role); err != nil {
		return fmt.Errorf("certificate %q (serial %s): %w", leaf.Subject.CommonName, leaf.SerialNumber.Text(16), err)
	}
	return nil
}

const minVersion = tls.VersionTLS13 // both sides are ours: no older protocol to keep

// ServerConfig is an agent's TLS: its certificate, and client certificates verified against the
// CA bundle for the control-plane role when one is presented. A client may come without one (a
// Prometheus scrape with the metrics token, a probe); what it may then do is the HTTP layer's
// decision, which calls VerifyPeer. nextProtos are the ALPN protocols served.
func (s *Source) ServerConfig(nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion: minVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.current()
			return &tls.Config{
				MinVersion:   minVersion,
				Certificates: []tls.Certificate{*m.cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    m.pool,
				NextProtos:   nextProtos,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return nil
					}
					return wantRole(cs.PeerCertificates[0], ControlPlane)
				},
			}, nil
		},
	}
}

// ClientConfig is a control plane's TLS towards the agent at serverName: the agent must show an
// agent certificate for that name from the CA bundle in force; the control plane shows its own.
func (s *Source) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: minVersion,
		ServerName: serverName,
		RootCAs:    s.current().pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return wantRole(cs.PeerCertificates[0], Agent)
		},
	}
}

// DialTLSContext dials a TLS connection with a configuration made for this connection from the
// material in force (http.Transport.DialTLSContext), so each new connection sees the latest
// certificate and CA bundle.
func (s *Source) DialTLSContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(raw, s.ClientConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		return tc, nil
	}
}

// Transport wraps base (whose DialTLSContext should be s.DialTLSContext) so that when the
// material changes, its idle connections are closed: the next request handshakes with the new
// certificate and CA bundle instead of riding a connection made with the old ones.
func (s *Source) Transport(base *http.Transport) http.RoundTripper {
	r := &rotating{base: base, src: s}
	r.seen.Store(s.Generation())
	return r
}

type rotating struct {
	base *http.Transport
	src  *Source
	seen atomic.Uint64
}

func (r *rotating) RoundTrip(req *http.Request) (*http.Response, error) {
	if g := r.src.Generation(); r.seen.Swap(g) != g {
		r.base.CloseIdleConnections()
	}
	return r.base.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the transport.
func (r *rotating) CloseIdleConnections() { r.base.CloseIdleConnections() }

// FromEnv reads FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA, which both programs share (each
// names its own certificate), and reports on r when only some are set.
func FromEnv(r *config.Reader) Files {
	f := Files{Cert: r.String("FLEET_TLS_CERT", ""), Key: r.String("FLEET_TLS_KEY", ""), CA: r.String("FLEET_TLS_CA", "")}
	if f.Set() && (f.Cert == "" || f.Key == "" || f.CA == "") {
		r.Fail("FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA go together: set all three or none")
	}
	return f
}
