// Package envid validates environment identifiers and maps them to directories.
//
// An environment is named by (workflow_id, node_id, version_id). Joining the three with "_", as
// the TRD's example path does, makes ("a_b","c") and ("a","b_c") one directory; here each id is one
// path segment (ENVS_BASE_PATH/<workflow>/<node>/<version>), and an id may not contain a separator
// or be "." or "..", so distinct ids can never share a directory or leave the base.
package envid

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
)

// DefaultVersion is the version_id used when a request omits it, everywhere.
const DefaultVersion = "v1"

// MaxLen bounds every id: a path segment stays far below NAME_MAX and a project name stays short.
const MaxLen = 64

// Key names one environment.
type Key struct {
	WorkflowID string
	NodeID     string
	VersionID  string
}

// String is the key as it appears in logs and messages.
func (k Key) String() string {
	return k.WorkflowID + "/" + k.NodeID + "@" + k.VersionID
}

// InvalidError says which id is wrong and why.
type InvalidError struct {
	Field  string
	Value  string
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// ValidateID checks one id: 1 to MaxLen characters from [A-Za-z0-9._-], starting and ending with
// a letter or digit. The first and last rule keep ".", "..", hidden directories and project names
// that PEP 508 would refuse out.
func ValidateID(field, v string) error {
	if v == "" {
		return &InvalidError{Field: field, Value: v, Reason: "must not be empty"}
	}
	if len(v) > MaxLen {
		return &InvalidError{Field: field, Value: v, Reason: fmt.Sprintf("longer than %d characters", MaxLen)}
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if c == '.' || c == '_' || c == '-' {
			if i == 0 || i == len(v)-1 {
				return &InvalidError{Field: field, Value: v, Reason: "must start and end with a letter or digit"}
			}
			continue
		}
		return &InvalidError{Field: field, Value: v, Reason: "may contain only letters, digits, '.', '_' and '-'"}
	}
	return nil
}

// New validates the three ids and returns the key; an empty version means DefaultVersion.
func New(workflowID, nodeID, versionID string) (Key, error) {
	if versionID == "" {
		versionID = DefaultVersion
	}
	k := Key{WorkflowID: workflowID, NodeID: nodeID, VersionID: versionID}
	return k, k.Validate()
}

// Validate checks all three ids.
func (k Key) Validate() error {
	if err := ValidateID("workflow_id", k.WorkflowID); err != nil {
		return err
	}
	if err := ValidateID("node_id", k.NodeID); err != nil {
		return err
	}
	return ValidateID("version_id", k.VersionID)
}

// Dir is the project directory of k under base. k must be valid.
func (k Key) Dir(base string) string {
	return filepath.Join(base, k.WorkflowID, k.NodeID, k.VersionID)
}

// ProjectNamePrefix starts the reserved [project] name.
const ProjectNamePrefix = "envfabric-env-"

// ProjectName is the [project] name written into every environment's pyproject.toml:
// ProjectNamePrefix and 32 hex digits of a fixed SHA-256.
//
// The name takes part in resolution: uv treats the project as a distribution of that name, so a
// project named after the ids (the TRD's "workflow123-node123") shadows any real distribution of
// the same PEP 503 normalised name (google/api/core made "google-api-core", which
// google-cloud-core needs, and uv settled for a 2017 release that does not). This name is
// already in normalised form (lower case, single hyphens), and a distribution a dependency
// needs would have to be named for a 128-bit digest, so no real project spells it.
//
// It is one constant for every environment, not one per environment (as it was before builds):
// the name is written into pyproject.toml and uv.lock, so only with one name do two environments
// with the same requirements get byte-identical files, share one build (agent/builds) and have
// their contents stored once. No id reaches it, so no choice of ids can make it spell anything.
// The value is ProjectNamePrefix + hex(SHA-256("envfabric environment"))[:32], checked by a test.
const ProjectName = ProjectNamePrefix + "129ca41e96a65137c63403cad160d3b4"

// ProjectName is the reserved project name, the same for every key (kept for callers written
// when each environment had its own).
func (k Key) ProjectName() string { return ProjectName }

// Cursor encodes k as the opaque page cursor of an environment listing (the REST API's
// next_cursor, the console's next page): URL-safe, and read back by ParseCursor.
func (k Key) Cursor() string {
	b, _ := json.Marshal([]string{k.WorkflowID, k.NodeID, k.VersionID})
	return base64.RawURLEncoding.EncodeToString(b)
}

// ErrBadCursor is what ParseCursor returns for anything Cursor did not make.
var ErrBadCursor = errors.New("cursor: not a cursor this API returned")

// ParseCursor reads a cursor made by Key.Cursor; anything else, or one naming an invalid key,
// is ErrBadCursor.
func ParseCursor(c string) (Key, error) {
	if len(c) > 512 {
		return Key{}, ErrBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return Key{}, ErrBadCursor
	}
	var parts []string
	if json.Unmarshal(b, &parts) != nil || len(parts) != 3 {
		return Key{}, ErrBadCursor
	}
	k := Key{WorkflowID: parts[0], NodeID: parts[1], VersionID: parts[2]}
	if k.Validate() != nil {
		return Key{}, ErrBadCursor
	}
	return k, nil
}
