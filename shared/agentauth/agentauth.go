// Package agentauth authenticates control-plane calls to agents with a shared bearer token: a
// server middleware that checks it before any body is read, and a client interceptor that sends it.
package agentauth

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// unauthenticatedBody is a Connect error body (the JSON shape of the Connect protocol's errors).
const unauthenticatedBody = `{"code":"unauthenticated","message":"missing or invalid bearer token"}`

// Middleware requires `Authorization: Bearer <token>` on every request when token is not empty,
// and answers 401 with a Connect-style JSON error otherwise. An empty token lets every request
// through.
func Middleware(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(unauthenticatedBody))
			return
		}
		next.ServeHTTP(w, r)
	})
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
