// Package hostdeps applies the host platform's dependency constraints to node environments (the
// TRD's project_info): when a request names a package without a version and the host project's
// pyproject.toml constrains it, the host's constraint is used, so node environments stay compatible
// with the platform that calls them. Explicit specifiers from the request win.
package hostdeps

import (
	"fmt"
	"os"

	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// Constraints holds the host project's constraints by normalized name.
type Constraints struct {
	Source string
	byName map[string]reqspec.Requirement
}

// Load reads the host pyproject.toml at path; an empty path gives no constraints.
func Load(path string) (*Constraints, error) {
	c := &Constraints{Source: path, byName: map[string]reqspec.Requirement{}}
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading host pyproject %s: %w", path, err)
	}
	p, err := pyproject.Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("host pyproject %s: %w", path, err)
	}
	for _, d := range p.Dependencies {
		r, err := reqspec.Parse(d)
		if err != nil || r.Specifier == "" {
			continue // a host line the fabric would not accept from a user is not inherited either
		}
		c.byName[r.Normalized()] = r
	}
	return c, nil
}

// Len is the number of constrained packages.
func (c *Constraints) Len() int { return len(c.byName) }

// Applied records one inheritance, for the response and the audit.
type Applied struct {
	Requested string `json:"requested"`
	Applied   string `json:"applied"`
}

// Apply returns the requirements to hand to uv: bare names the host constrains get the host's
// specifier (and marker, unless the request has its own).
func (c *Constraints) Apply(reqs []reqspec.Requirement) ([]string, []Applied) {
	out := make([]string, 0, len(reqs))
	var applied []Applied
	for _, r := range reqs {
		h, ok := c.byName[r.Normalized()]
		if !ok || !r.Bare() {
			out = append(out, r.String())
			continue
		}
		n := r
		n.Specifier = h.Specifier
		if n.Marker == "" {
			n.Marker = h.Marker
		}
		out = append(out, n.String())
		applied = append(applied, Applied{Requested: r.String(), Applied: n.String()})
	}
	return out, applied
}
