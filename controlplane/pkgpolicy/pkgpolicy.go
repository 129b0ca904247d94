// Package pkgpolicy is the install policy of PACKAGE_POLICY: deny rules checked against the
// lock a create, add or update would commit, before anything is built. A rule names a package
// with an optional PEP 440 specifier; one more rule may deny every locked version with a known
// advisory (OSV_DATA) of at least a given severity.
//
// The file is TOML:
//
//	[[deny]]
//	package = "requests"          # required; compared by its PEP 503 normalised name
//	specifier = "<2.32"           # optional; without it every version is denied
//	reason = "CVE-2024-35195"     # optional; shown in the refusal
//
//	[advisories]
//	deny_severity = "HIGH"        # optional: LOW, MEDIUM, HIGH or CRITICAL
package pkgpolicy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/pep440"
	"github.com/envfabric/envfabric/controlplane/uvlock"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// Rule is one deny rule.
type Rule struct {
	Package   string // normalised
	Specifier pep440.Set
	Reason    string
}

// String is the rule as the refusal names it: "requests<2.32".
func (r Rule) String() string { return r.Package + r.Specifier.String() }

// Policy is a loaded PACKAGE_POLICY. The zero Policy denies nothing.
type Policy struct {
	Source string
	Rules  []Rule
	// DenySeverity denies versions with a known advisory at least this severe ("" for none).
	DenySeverity string
}

type file struct {
	Deny []struct {
		Package   string `toml:"package"`
		Specifier string `toml:"specifier"`
		Reason    string `toml:"reason"`
	} `toml:"deny"`
	Advisories struct {
		DenySeverity string `toml:"deny_severity"`
	} `toml:"advisories"`
}

// Load reads a policy file; every problem is reported at once. An empty path is the zero Policy.
func Load(path string) (*Policy, error) {
	p := &Policy{Source: path}
	if path == "" {
		return p, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("PACKAGE_POLICY: %w", err)
	}
	var f file
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return nil, fmt.Errorf("PACKAGE_POLICY=%s: unknown keys (want deny.package, deny.specifier, deny.reason, advisories.deny_severity):\n%s", path, strict.String())
		}
		return nil, fmt.Errorf("PACKAGE_POLICY=%s: %w", path, err)
	}
	var errs []error
	for i, d := range f.Deny {
		if !pyproject.IsName(d.Package) {
			errs = append(errs, fmt.Errorf("PACKAGE_POLICY=%s: deny rule %d: package %q is not a package name", path, i+1, d.Package))
			continue
		}
		set, err := pep440.ParseSet(d.Specifier)
		if err != nil {
			errs = append(errs, fmt.Errorf("PACKAGE_POLICY=%s: deny rule %d (%s): specifier: %w", path, i+1, d.Package, err))
			continue
		}
		p.Rules = append(p.Rules, Rule{Package: pyproject.Normalize(d.Package), Specifier: set, Reason: d.Reason})
	}
	if s := f.Advisories.DenySeverity; s != "" {
		sev, ok := osv.ParseSeverity(s)
		if !ok || sev == osv.Unknown {
			errs = append(errs, fmt.Errorf("PACKAGE_POLICY=%s: advisories.deny_severity %q: want LOW, MEDIUM, HIGH or CRITICAL", path, s))
		}
		p.DenySeverity = sev
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// Empty reports whether the policy denies nothing.
func (p *Policy) Empty() bool { return p == nil || len(p.Rules) == 0 && p.DenySeverity == "" }

// Denial is why a lock is refused: the first package version a rule denies.
type Denial struct {
	Rule    string // "requests<2.32", or "advisories: severity >= HIGH"
	Reason  string // the rule's reason, or the advisory's id and severity
	Package string
	Version string
}

func (d *Denial) String() string {
	s := fmt.Sprintf("%s %s is denied by the package policy (rule %q", d.Package, d.Version, d.Rule)
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	return s + ")"
}

// Check returns the first denial of a package locked in lock (nil when none): deny rules in
// file order first, then advisories (db may be nil). Every version in the lock counts, markers
// or not: the lock is installed on whatever host runs it.
func (p *Policy) Check(lock uvlock.Lock, db *osv.DB) *Denial {
	if p.Empty() {
		return nil
	}
	for _, r := range p.Rules {
		for _, pkg := range lock.Packages {
			if pkg.Name != r.Package {
				continue
			}
			v, err := pep440.Parse(pkg.Version)
			// A version that is not PEP 440 matches a rule only without a specifier.
			if err == nil && r.Specifier.Installed(v) || err != nil && len(r.Specifier) == 0 {
				return &Denial{Rule: r.String(), Reason: r.Reason, Package: pkg.Name, Version: pkg.Version}
			}
		}
	}
	if p.DenySeverity == "" || db == nil {
		return nil
	}
	min := osv.Rank(p.DenySeverity)
	for _, pkg := range lock.Packages {
		for _, m := range db.Affecting(pkg.Name, pkg.Version) {
			if osv.Rank(m.Advisory.Severity) >= min {
				reason := fmt.Sprintf("%s, %s", m.Advisory.ID, m.Advisory.Severity)
				if len(m.Fixed) > 0 {
					reason += ", fixed in " + strings.Join(m.Fixed, ", ")
				}
				return &Denial{Rule: "advisories: severity >= " + p.DenySeverity, Reason: reason, Package: pkg.Name, Version: pkg.Version}
			}
		}
	}
	return nil
}
