// Package agentauth authenticates calls to agents: a server middleware that decides from the
// headers and the TLS connection, before any body is read, and a client interceptor that sends
// the control plane's bearer token.
package agentauth

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"
)

// Policy is who may do what on an agent.
type Policy struct {
	// Token is the control plane's bearer token, which authorises everything. Empty: no token is
	// asked for (an agent on loopback without one).
	Token string
	// MetricsToken is a read-only credential: it authorises only GET (and HEAD) of the ReadOnly
	// paths, never an RPC, so Prometheus need not hold the token that runs code.
	MetricsToken string
	// ReadOnly are the paths MetricsToken opens (/metrics and the probes).
	ReadOnly []string
	// Peer, when set, must accept the TLS peer of every request but the read-only ones: the
	// control plane's client certificate, checked against the CA bundle in force.
	Peer func(*tls.ConnectionState) error
}

// ErrNoPeer is what Peer returns for a request without a client certificate.
var ErrNoPeer = errors.New("no client certificate")

// RefusedHeader says, on a refusal, which credential was refused: RefusedToken (the bearer
// token, or the metrics credential used beyond its reach) or RefusedCertificate (the client
// certificate is missing or not a control plane's of this fleet). Callers branch on it rather than
// on the message.
const (
	RefusedHeader      = "Envfabric-Refused"
	RefusedToken       = "token"
	RefusedCertificate = "certificate"
)

// Connect-style JSON error bodies (the Connect protocol's error shape).
const (
	unauthenticatedBody = `{"code":"unauthenticated","message":"missing or invalid bearer token"}`
	noCertificateBody   = `{"code":"unauthenticated","message":"a control plane's client certificate is required"}`
	deniedBody          = `{"code":"permission_denied","message":"the client certificate is not a control plane's of this fleet"}`
	readOnlyBody        = `{"code":"permission_denied","message":"the metrics credential is read-only"}`
)

// Middleware applies p to every request before next sees it: 401 without a valid credential (or,
// for an RPC under TLS, without a client certificate), 403 for a read-only credential used
// beyond its paths or a certificate that is not a control plane's.
func Middleware(p Policy, next http.Handler) http.Handler {
	full, metrics := []byte(p.Token), []byte(p.MetricsToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		readOnly := (r.Method == http.MethodGet || r.Method == http.MethodHead) && slices.Contains(p.ReadOnly, r.URL.Path)
		if p.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			isFull := ok && subtle.ConstantTimeCompare([]byte(got), full) == 1
			isMetrics := ok && len(metrics) > 0 && subtle.ConstantTimeCompare([]byte(got), metrics) == 1
			switch {
			case !isFull && !isMetrics:
				refuse(w, http.StatusUnauthorized, RefusedToken, unauthenticatedBody)
				return
			case isMetrics && !readOnly:
				refuse(w, http.StatusForbidden, RefusedToken, readOnlyBody)
				return
			}
		}
		if p.Peer != nil && !readOnly {
			if err := p.Peer(r.TLS); errors.Is(err, ErrNoPeer) {
				refuse(w, http.StatusUnauthorized, RefusedCertificate, noCertificateBody)
				return
			} else if err != nil {
				refuse(w, http.StatusForbidden, RefusedCertificate, deniedBody)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func refuse(w http.ResponseWriter, status int, refused, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(RefusedHeader, refused)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// ClientInterceptor adds the bearer token to every unary call.
func ClientInterceptor(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if req.Spec().IsClient && token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}
}
