// Package auth holds the REST API's callers: bearer tokens with a name and a role, how they are
// written in configuration, and the constant-time lookup of the token a request presents.
//
// Three roles, each including the one before it:
//
//	read   GET of environments, dependencies, exports, history, agents and metrics
//	write  everything that changes one environment: create, add/remove/update, sync, run, delete
//	admin  fleet-wide actions: cleanup
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Role is what a token may do.
type Role int

// The roles, in increasing power; a token may do what its role and every lower role may.
const (
	None Role = iota // not a valid token role: "nothing allowed", the zero value
	Read
	Write
	Admin
)

var roleNames = map[Role]string{Read: "read", Write: "write", Admin: "admin"}

func (r Role) String() string {
	if s, ok := roleNames[r]; ok {
		return s
	}
	return "none"
}

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	for r, name := range roleNames {
		if s == name {
			return r, nil
		}
	}
	return None, fmt.Errorf("role %q: want read, write or admin", s)
}

// Allows reports whether a caller with role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r >= need && r > None }

// MinSecretLen keeps guessable secrets out of the configuration.
const MinSecretLen = 16

// Token is one configured caller.
type Token struct {
	Name   string // recorded as the actor in the audit
	Role   Role
	Secret string
}

// ParseToken reads "name:role:secret". The name is what the audit shows, so it is held to the
// same small alphabet as ids; the secret may contain ':' but no spaces or commas (the separator
// of API_TOKENS).
func ParseToken(s string) (Token, error) {
	parts := strings.SplitN(strings.TrimSpace(s), ":", 3)
	if len(parts) != 3 {
		return Token{}, errors.New("want name:role:secret")
	}
	name, roleName, secret := parts[0], parts[1], parts[2]
	if !validName(name) {
		return Token{}, fmt.Errorf("token name %q: 1-64 characters of A-Z a-z 0-9 . _ -", name)
	}
	role, err := ParseRole(roleName)
	if err != nil {
		return Token{}, fmt.Errorf("token %q: %w", name, err)
	}
	if len(secret) < MinSecretLen {
		return Token{}, fmt.Errorf("token %q: secret shorter than %d characters", name, MinSecretLen)
	}
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; c <= ' ' || c >= 0x7f || c == ',' {
			return Token{}, fmt.Errorf("token %q: secret must be printable ASCII without spaces or commas", name)
		}
	}
	return Token{Name: name, Role: role, Secret: secret}, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Set is the configured tokens, ready for lookup.
type Set struct {
	tokens []Token
	hashes [][32]byte
}

// NewSet checks that names and secrets are unique; a repeated secret would make the audit's actor
// ambiguous.
func NewSet(tokens []Token) (*Set, error) {
	s := &Set{}
	names := map[string]bool{}
	secrets := map[string]bool{}
	var errs []error
	for _, t := range tokens {
		if names[t.Name] {
			errs = append(errs, fmt.Errorf("token name %q given twice", t.Name))
		}
		if secrets[t.Secret] {
			errs = append(errs, fmt.Errorf("token %q: its secret is another token's too", t.Name))
		}
		names[t.Name], secrets[t.Secret] = true, true
		s.tokens = append(s.tokens, t)
		s.hashes = append(s.hashes, sha256.Sum256([]byte(t.Secret)))
	}
	return s, errors.Join(errs...)
}

// Enabled reports whether any token is configured; without one the API is open.
func (s *Set) Enabled() bool { return s != nil && len(s.tokens) > 0 }

// Lookup finds the token whose secret is presented. Every configured secret is compared, each in
// constant time over fixed-length digests, so neither the position of a match nor the length of a
// secret shows in the timing.
func (s *Set) Lookup(presented string) (Token, bool) {
	h := sha256.Sum256([]byte(presented))
	found := -1
	for i := range s.hashes {
		if subtle.ConstantTimeCompare(h[:], s.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Token{}, false
	}
	return s.tokens[found], true
}

// Identity is the authenticated caller of one request.
type Identity struct {
	Name string
	Role Role
	// Authenticated is false when the API runs without tokens; Name is then what the caller
	// claims (X-Actor) and Role is Admin.
	Authenticated bool
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity the authentication middleware put in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
