package api

// The path every request takes before its handler: a request id, authentication (authn.go),
// canonical paths; per-route metrics, authorisation and body checks are in handle (routes.go).

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/envfabric/envfabric/controlplane/api/auth"
	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/shared/errcode"
)

// ServeHTTP names the request, authenticates the caller before anything of the request is read,
// refuses paths that are not in canonical form, and hands the rest to the routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := r.Header.Get("X-Request-ID")
	if !validHeaderToken(rid) {
		rid = newRequestID()
	}
	r.Header.Set("X-Request-ID", rid)
	w.Header().Set("X-Request-ID", rid)
	r, err := h.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="envfabric"`)
		h.fail(w, r, err)
		return
	}
	if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p && path.Clean(p)+"/" != p {
		// The mux would answer with a redirect to the cleaned path; a client that sends
		// "/envs/../x" or "//envs" gets a clear refusal instead.
		h.fail(w, r, errcode.New(errcode.InvalidRequest, fmt.Sprintf("path %q is not in canonical form", p)))
		return
	}
	h.mux.ServeHTTP(w, r)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

// Unwrap lets http.ResponseController reach the connection (for read deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// validHeaderToken bounds what a client-chosen X-Request-ID or X-Actor may be before it is echoed,
// logged and stored: 1-128 characters of A-Z a-z 0-9 . _ - : @.
func validHeaderToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:@", c) >= 0) {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// caller is who the audit records: the token's name, or without tokens what X-Actor claims.
func caller(r *http.Request) envs.Caller {
	actor := "anonymous"
	if id, ok := auth.FromContext(r.Context()); ok && id.Name != "" {
		actor = id.Name
	}
	return envs.Caller{Actor: actor, RequestID: r.Header.Get("X-Request-ID")}
}
