// Package osv reads advisories in the Open Source Vulnerability format
// (https://ossf.github.io/osv-schema/) offline: a directory of OSV JSON records, or a zip in
// OSV's export layout (the PyPI ecosystem's all.zip, one record per file). Only what affects
// PyPI packages is kept; withdrawn records are ignored. Versions are evaluated with PEP 440
// semantics (package pep440): ECOSYSTEM ranges by their introduced, fixed and last_affected
// events, and the explicit versions lists.
package osv

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/pep440"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// Severity buckets, highest first. Unknown is an advisory with no severity we can read.
const (
	Critical = "CRITICAL"
	High     = "HIGH"
	Medium   = "MEDIUM"
	Low      = "LOW"
	Unknown  = "UNKNOWN"
)

// Severities lists the buckets from the lowest to the highest.
var Severities = []string{Unknown, Low, Medium, High, Critical}

// Rank orders severities: Unknown 0 < Low < Medium < High < Critical 4; -1 for anything else.
func Rank(s string) int {
	for i, v := range Severities {
		if v == s {
			return i
		}
	}
	return -1
}

// ParseSeverity reads a bucket name, case-insensitively; GitHub's "MODERATE" is Medium.
func ParseSeverity(s string) (string, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if u == "MODERATE" {
		u = Medium
	}
	return u, Rank(u) >= 0
}

// Advisory is one OSV record, reduced to its PyPI packages.
type Advisory struct {
	ID       string
	Aliases  []string
	Summary  string
	Modified time.Time
	// Severity is the bucket; Score the CVSS base score it came from (0 when none).
	Severity string
	Score    float64
	Affected []Affected
}

// Affected is one affected PyPI package of an advisory.
type Affected struct {
	Package  string // PEP 503 normalised
	ranges   [][]event
	versions []pep440.Version
	// Fixed lists the versions of its ranges' fixed events, in order.
	Fixed []string
}

type event struct {
	kind    string // introduced, fixed, last_affected
	version pep440.Version
	zero    bool // introduced "0": before every version
}

// Affects reports whether version v of the package is affected: listed in its versions, or
// inside one of its ranges.
func (a Affected) Affects(v pep440.Version) bool {
	for _, w := range a.versions {
		if w.Equal(v) {
			return true
		}
	}
	for _, r := range a.ranges {
		if inRange(r, v) {
			return true
		}
	}
	return false
}

// inRange is OSV's evaluation of one range: walk its events in version order, introduced
// switching the state on at or after its version, fixed off at or after it, last_affected off
// after it.
func inRange(events []event, v pep440.Version) bool {
	affected := false
	for _, e := range events {
		switch e.kind {
		case "introduced":
			if e.zero || v.Compare(e.version) >= 0 {
				affected = true
			}
		case "fixed":
			if v.Compare(e.version) >= 0 {
				affected = false
			}
		case "last_affected":
			if v.Compare(e.version) > 0 {
				affected = false
			}
		}
	}
	return affected
}

// record is the part of the OSV schema read here.
type record struct {
	ID        string    `json:"id"`
	Modified  time.Time `json:"modified"`
	Withdrawn string    `json:"withdrawn"`
	Aliases   []string  `json:"aliases"`
	Summary   string    `json:"summary"`
	Details   string    `json:"details"`
	Severity  []struct {
		Type  string `json:"type"`
		Score string `json:"score"`
	} `json:"severity"`
	Affected []struct {
		Package struct {
			Ecosystem string `json:"ecosystem"`
			Name      string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Type   string              `json:"type"`
			Events []map[string]string `json:"events"`
		} `json:"ranges"`
		Versions         []string        `json:"versions"`
		DatabaseSpecific json.RawMessage `json:"database_specific"`
	} `json:"affected"`
	DatabaseSpecific json.RawMessage `json:"database_specific"`
}

// parseRecord reads one OSV JSON record. ok is false for a record that is withdrawn or affects
// no PyPI package.
func parseRecord(b []byte) (a *Advisory, ok bool, err error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, false, fmt.Errorf("not an OSV record: %w", err)
	}
	if r.ID == "" {
		return nil, false, fmt.Errorf("not an OSV record: no id")
	}
	if r.Withdrawn != "" {
		return nil, false, nil
	}
	a = &Advisory{ID: r.ID, Aliases: r.Aliases, Summary: r.Summary, Modified: r.Modified}
	if a.Summary == "" {
		a.Summary = firstLine(r.Details)
	}
	for _, aff := range r.Affected {
		// "PyPI", and the ecosystem with a suffix some databases use ("PyPI:..."), never others.
		if eco, _, _ := strings.Cut(aff.Package.Ecosystem, ":"); eco != "PyPI" || aff.Package.Name == "" {
			continue
		}
		out := Affected{Package: pyproject.Normalize(aff.Package.Name)}
		for _, s := range aff.Versions {
			if v, err := pep440.Parse(s); err == nil {
				out.versions = append(out.versions, v)
			}
		}
		for _, rg := range aff.Ranges {
			if rg.Type != "ECOSYSTEM" {
				continue // GIT ranges name commits; SEMVER is not how PyPI versions order
			}
			events, fixed := parseEvents(rg.Events)
			if len(events) > 0 {
				out.ranges = append(out.ranges, events)
			}
			out.Fixed = append(out.Fixed, fixed...)
		}
		if len(out.ranges) == 0 && len(out.versions) == 0 {
			continue
		}
		a.Affected = append(a.Affected, out)
		if a.Severity == "" {
			a.Severity = databaseSeverity(aff.DatabaseSpecific)
		}
	}
	if len(a.Affected) == 0 {
		return nil, false, nil
	}
	a.Score, a.Severity = severityOf(r, a.Severity)
	return a, true, nil
}

// parseEvents sorts a range's events by version ("0" first) and returns the fixed versions.
// Events whose version is not PEP 440 are dropped: such a range cannot be evaluated anyway.
func parseEvents(raw []map[string]string) ([]event, []string) {
	var events []event
	var fixed []string
	for _, m := range raw {
		for _, kind := range []string{"introduced", "fixed", "last_affected"} {
			s, ok := m[kind]
			if !ok {
				continue
			}
			if kind == "introduced" && s == "0" {
				events = append(events, event{kind: kind, zero: true})
				continue
			}
			v, err := pep440.Parse(s)
			if err != nil {
				continue
			}
			events = append(events, event{kind: kind, version: v})
			if kind == "fixed" {
				fixed = append(fixed, v.String())
			}
		}
	}
	sort.SliceStable(events, func(i, j int) bool {
		a, b := events[i], events[j]
		if a.zero || b.zero {
			return a.zero && !b.zero
		}
		return a.version.Compare(b.version) < 0
	})
	return events, fixed
}

// severityOf picks the advisory's severity: the highest CVSS v3 base score computed from a
// CVSS_V3 vector, bucketed as CVSS does (9.0 critical, 7.0 high, 4.0 medium, 0.1 low); without
// one, the database's own rating (GitHub's database_specific.severity, at the record or the
// package level); otherwise Unknown. CVSS v2 and v4 vectors are not scored here.
func severityOf(r record, fromPackage string) (float64, string) {
	best := -1.0
	for _, s := range r.Severity {
		if s.Type != "CVSS_V3" {
			continue
		}
		if score, err := CVSS3Score(s.Score); err == nil && score > best {
			best = score
		}
	}
	if best >= 0 {
		return best, bucket(best)
	}
	if s := databaseSeverity(r.DatabaseSpecific); s != "" {
		return 0, s
	}
	if fromPackage != "" {
		return 0, fromPackage
	}
	return 0, Unknown
}

func databaseSeverity(raw json.RawMessage) string {
	var ds struct {
		Severity string `json:"severity"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &ds) != nil {
		return ""
	}
	if s, ok := ParseSeverity(ds.Severity); ok && s != Unknown {
		return s
	}
	return ""
}

func bucket(score float64) string {
	switch {
	case score >= 9:
		return Critical
	case score >= 7:
		return High
	case score >= 4:
		return Medium
	case score > 0:
		return Low
	}
	return Unknown
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
