package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/envfabric/envfabric/controlplane/api/auth"
	"github.com/envfabric/envfabric/controlplane/console"
	"github.com/envfabric/envfabric/shared/errcode"
)

// openPaths answer without a token: probes that load balancers and supervisors call without
// secrets, and the API's description, which holds none.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/openapi.json": true}

// authenticate puts the caller's identity in the request's context, from the bearer token when
// tokens are configured. It reads headers only: no body is read for a caller who is refused.
func (h *Handler) authenticate(r *http.Request) (*http.Request, error) {
	if !h.opt.Tokens.Enabled() {
		// An open API: whoever calls may do anything, and the audit records what they claim.
		id := auth.Identity{Name: "anonymous", Role: auth.Admin}
		if a := strings.TrimSpace(r.Header.Get("X-Actor")); validHeaderToken(a) {
			id.Name = a
		}
		return r.WithContext(auth.WithIdentity(r.Context(), id)), nil
	}
	if openPaths[r.URL.Path] {
		return r, nil // whatever Authorization says: a probe never fails for a stale token
	}
	values := r.Header.Values("Authorization")
	if len(values) == 0 && console.IsPath(r.URL.Path) {
		// A browser on the console carries its token in a cookie (or once in ?token=).
		if secret := console.Credential(r); secret != "" {
			values = []string{"Bearer " + secret}
		}
	}
	if len(values) == 0 {
		if console.IsPath(r.URL.Path) {
			return r, errcode.New(errcode.Unauthenticated, "missing token: open "+console.Prefix+"?token=<a read token> once; the console keeps it in a cookie")
		}
		return r, errcode.New(errcode.Unauthenticated, "missing bearer token: send Authorization: Bearer <token>")
	}
	if len(values) > 1 {
		return r, errcode.New(errcode.Unauthenticated, "more than one Authorization header")
	}
	scheme, secret, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		return r, errcode.New(errcode.Unauthenticated, "Authorization: want the Bearer scheme")
	}
	tok, ok := h.opt.Tokens.Lookup(strings.TrimSpace(secret))
	if !ok {
		return r, errcode.New(errcode.Unauthenticated, "invalid bearer token")
	}
	return r.WithContext(auth.WithIdentity(r.Context(), auth.Identity{Name: tok.Name, Role: tok.Role, Authenticated: true})), nil
}

// authorize checks the caller's role against the one an endpoint needs.
func authorize(r *http.Request, need auth.Role) error {
	if need == auth.None {
		return nil
	}
	id, ok := auth.FromContext(r.Context())
	if !ok {
		return errcode.New(errcode.Unauthenticated, "missing bearer token: send Authorization: Bearer <token>")
	}
	if !id.Role.Allows(need) {
		return errcode.New(errcode.Forbidden, fmt.Sprintf("token %q has role %s; %s %s needs %s", id.Name, id.Role, r.Method, r.URL.Path, need))
	}
	return nil
}
