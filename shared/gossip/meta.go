// Package gossip is the fleet's membership layer on memberlist, shared by agents and control
// planes: encrypted gossip from a keyring, a versioned and size-bounded node metadata codec, and a
// Member that joins its seeds, keeps retrying while it is alone, and reports who is alive.
// Gossip says who is alive and how to reach it; the database holds every other truth.
package gossip

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Roles a member can have.
const (
	RoleAgent        = "agent"
	RoleControlPlane = "controlplane"
)

// metaVersion is the first byte of every encoded Meta; a member that cannot read a version refuses
// the peer instead of guessing.
const metaVersion byte = 1

// MaxMetaSize is memberlist's bound on node metadata.
const MaxMetaSize = memberlist.MetaMaxSize

// Meta is what a member tells the fleet about itself. Keys are short because the whole encoding
// must fit in MaxMetaSize bytes.
type Meta struct {
	Role    string   `json:"r"`
	ID      string   `json:"i"`
	URL     string   `json:"u,omitempty"` // an agent's Connect address
	Fleet   string   `json:"f,omitempty"` // the fleet id: the identity its shared storage holds
	Pythons []Python `json:"p,omitempty"` // interpreters it can bind an environment to
	Load    int      `json:"l"`           // operations in flight
	Sandbox string   `json:"s,omitempty"` // the run sandbox tier
	Version string   `json:"v,omitempty"`
}

// Python is one interpreter a host offers, at the absolute path environments are bound to.
type Python struct {
	Version string `json:"v"`
	Path    string `json:"p"`
}

// HasPython reports whether the member offers the interpreter at path.
func (m Meta) HasPython(path string) bool {
	for _, p := range m.Pythons {
		if p.Path == path {
			return true
		}
	}
	return false
}

// PythonFor returns the path of an interpreter whose version matches want ("3.11" matches
// "3.11.7"), or "".
func (m Meta) PythonFor(want string) string {
	for _, p := range m.Pythons {
		if p.Version == want || (len(p.Version) > len(want) && p.Version[:len(want)] == want && p.Version[len(want)] == '.') {
			return p.Path
		}
	}
	return ""
}

// ErrMetaTooLarge is returned by Encode when the metadata does not fit.
var ErrMetaTooLarge = errors.New("node metadata too large")

// Encode returns the version byte followed by the JSON encoding.
func (m Meta) Encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	out := append([]byte{metaVersion}, b...)
	if len(out) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(out), MaxMetaSize)
	}
	return out, nil
}

// Fit encodes m, dropping interpreters from the end until it fits, and reports how many were
// dropped: a host with very many interpreters still joins, offering the first ones.
func (m Meta) Fit() ([]byte, int, error) {
	for dropped := 0; ; dropped++ {
		b, err := m.Encode()
		if err == nil || !errors.Is(err, ErrMetaTooLarge) || len(m.Pythons) == 0 {
			return b, dropped, err
		}
		m.Pythons = m.Pythons[:len(m.Pythons)-1]
	}
}

// DecodeMeta reads what Encode wrote.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, errors.New("no node metadata")
	}
	if b[0] != metaVersion {
		return m, fmt.Errorf("node metadata version %d; this build reads version %d", b[0], metaVersion)
	}
	if err := json.Unmarshal(b[1:], &m); err != nil {
		return m, fmt.Errorf("decode node metadata: %w", err)
	}
	if m.Role != RoleAgent && m.Role != RoleControlPlane {
		return m, fmt.Errorf("node metadata: unknown role %q", m.Role)
	}
	return m, nil
}
