package agentauth_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
)

func TestMiddleware(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	full := agentauth.Policy{Token: "s3cret", MetricsToken: "m3trics", ReadOnly: []string{"/metrics", "/healthz"}}
	withCert := full
	withCert.Peer = func(cs *tls.ConnectionState) error {
		switch {
		case cs == nil:
			return agentauth.ErrNoPeer
		case cs.ServerName == "control-plane":
			return nil
		}
		return errors.New("not a control plane")
	}
	cp, agent := &tls.ConnectionState{ServerName: "control-plane"}, &tls.ConnectionState{ServerName: "agent"}
	tests := []struct {
		name   string
		policy agentauth.Policy
		method string
		path   string
		header string
		tls    *tls.ConnectionState
		want   int
		code   string // the Connect error code of a refusal
	}{
		{"right token", full, "POST", "/x", "Bearer s3cret", nil, http.StatusOK, ""},
		{"wrong token", full, "POST", "/x", "Bearer s3cre", nil, http.StatusUnauthorized, "unauthenticated"},
		{"no header", full, "POST", "/x", "", nil, http.StatusUnauthorized, "unauthenticated"},
		{"other scheme", full, "POST", "/x", "Basic s3cret", nil, http.StatusUnauthorized, "unauthenticated"},
		{"token disabled", agentauth.Policy{}, "POST", "/x", "", nil, http.StatusOK, ""},
		{"metrics token scrapes", full, "GET", "/metrics", "Bearer m3trics", nil, http.StatusOK, ""},
		{"metrics token probes", full, "GET", "/healthz", "Bearer m3trics", nil, http.StatusOK, ""},
		{"metrics token cannot call", full, "POST", "/x", "Bearer m3trics", cp, http.StatusForbidden, "permission_denied"},
		{"metrics token cannot post to metrics", full, "POST", "/metrics", "Bearer m3trics", nil, http.StatusForbidden, "permission_denied"},
		{"metrics token elsewhere", full, "GET", "/readyz", "Bearer m3trics", nil, http.StatusForbidden, "permission_denied"},
		{"full token scrapes", full, "GET", "/metrics", "Bearer s3cret", nil, http.StatusOK, ""},
		{"certificate and token", withCert, "POST", "/x", "Bearer s3cret", cp, http.StatusOK, ""},
		{"token without certificate", withCert, "POST", "/x", "Bearer s3cret", nil, http.StatusUnauthorized, "unauthenticated"},
		{"token with an agent's certificate", withCert, "POST", "/x", "Bearer s3cret", agent, http.StatusForbidden, "permission_denied"},
		{"certificate without token", withCert, "POST", "/x", "", cp, http.StatusUnauthorized, "unauthenticated"},
		{"scrape needs no certificate", withCert, "GET", "/metrics", "Bearer m3trics", nil, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			req.TLS = tt.tls
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			agentauth.Middleware(tt.policy, ok).ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("got %d; want %d", rec.Code, tt.want)
			}
			if tt.code != "" && !strings.Contains(rec.Body.String(), `"code":"`+tt.code+`"`) {
				t.Errorf("body: got %q; want a Connect %s error", rec.Body, tt.code)
			}
		})
	}
}

type infoOnly struct {
	agentv1connect.UnimplementedAgentServiceHandler
}

func (infoOnly) Info(context.Context, *connect.Request[agentv1.InfoRequest]) (*connect.Response[agentv1.InfoResponse], error) {
	return connect.NewResponse(&agentv1.InfoResponse{AgentId: "a"}), nil
}

func TestClientThroughMiddleware(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(infoOnly{}))
	srv := httptest.NewServer(agentauth.Middleware(agentauth.Policy{Token: "s3cret"}, mux))
	defer srv.Close()
	tests := []struct {
		name  string
		token string
		want  connect.Code
	}{
		{"right token", "s3cret", 0},
		{"wrong token", "nope", connect.CodeUnauthenticated},
		{"no token", "", connect.CodeUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := agentv1connect.NewAgentServiceClient(srv.Client(), srv.URL,
				connect.WithInterceptors(agentauth.ClientInterceptor(tt.token)))
			_, err := c.Info(t.Context(), connect.NewRequest(&agentv1.InfoRequest{}))
			if got := connect.CodeOf(err); err != nil && got != tt.want || err == nil && tt.want != 0 {
				t.Errorf("got %v; want code %v", err, tt.want)
			}
		})
	}
}
