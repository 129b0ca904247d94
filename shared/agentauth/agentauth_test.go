package agentauth_test

import (
	"context"
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
	tests := []struct {
		name   string
		token  string
		header string
		want   int
	}{
		{"right token", "s3cret", "Bearer s3cret", http.StatusOK},
		{"wrong token", "s3cret", "Bearer s3cre", http.StatusUnauthorized},
		{"no header", "s3cret", "", http.StatusUnauthorized},
		{"other scheme", "s3cret", "Basic s3cret", http.StatusUnauthorized},
		{"token disabled", "", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/x", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			agentauth.Middleware(tt.token, ok).ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("got %d; want %d", rec.Code, tt.want)
			}
			if rec.Code == http.StatusUnauthorized && !strings.Contains(rec.Body.String(), `"code":"unauthenticated"`) {
				t.Errorf("body: got %q; want a Connect error", rec.Body)
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
	srv := httptest.NewServer(agentauth.Middleware("s3cret", mux))
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
