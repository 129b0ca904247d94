package pep440

import (
	"regexp"
	"strings"
)

// Specifier is one clause of a version specifier ("~=1.4.2", "==1.*", "!=2.0").
type Specifier struct {
	Op      string // ~=, ==, !=, <=, >=, <, >, ===
	Version Version
	// Prefix is set for "==V.*" and "!=V.*".
	Prefix bool
	// Arbitrary is the literal string of "===" (compared as a string, case-insensitively).
	Arbitrary string
}

// Set is a comma-separated list of specifiers; a version matches when it matches every one. The
// empty Set matches every version.
type Set []Specifier

var clauseRe = regexp.MustCompile(`^\s*(~=|===|==|!=|<=|>=|<|>)\s*(\S+?)\s*$`)

// ParseSet reads a specifier set such as ">=1.0,<2,!=1.5.*". An empty string is the empty Set.
func ParseSet(s string) (Set, error) {
	if strings.TrimSpace(s) == "" {
		return Set{}, nil
	}
	var out Set
	for _, c := range strings.Split(s, ",") {
		sp, err := ParseSpecifier(c)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, nil
}

// ParseSpecifier reads one clause, applying PEP 440's rules on which versions each operator
// takes: no local label for ordered comparisons or ~=, at least two release components for ~=,
// and ".*" only after == and != with a public version.
func ParseSpecifier(s string) (Specifier, error) {
	m := clauseRe.FindStringSubmatch(s)
	if m == nil {
		return Specifier{}, &ParseError{Input: s, Reason: "not a version specifier (want an operator ~= == != <= >= < > === and a version)"}
	}
	op, vs := m[1], m[2]
	sp := Specifier{Op: op}
	fail := func(reason string) (Specifier, error) { return Specifier{}, &ParseError{Input: s, Reason: reason} }
	if op == "===" {
		if strings.ContainsAny(vs, ",;") {
			return fail("=== takes one string without ',' or ';'")
		}
		sp.Arbitrary = vs
		if v, err := Parse(vs); err == nil {
			sp.Version = v
		}
		return sp, nil
	}
	if base, ok := strings.CutSuffix(vs, ".*"); ok {
		if op != "==" && op != "!=" {
			return fail("not a PEP 440 version (.* follows only == and !=)")
		}
		vs, sp.Prefix = base, true
	}
	v, err := Parse(vs)
	if err != nil {
		return fail("not a PEP 440 version")
	}
	sp.Version = v
	switch {
	case sp.Prefix && (v.Local != nil || v.HasDev):
		return fail("a prefix match takes a public version without a dev release before .*")
	case op == "~=" && len(v.Release) < 2:
		return fail("~= needs a version with at least two parts")
	case op != "==" && op != "!=" && v.Local != nil:
		return fail(op + " takes no local version label")
	}
	return sp, nil
}

// String is the specifier's normalised form.
func (sp Specifier) String() string {
	switch {
	case sp.Op == "===":
		return sp.Op + sp.Arbitrary
	case sp.Prefix:
		return sp.Op + sp.Version.String() + ".*"
	}
	return sp.Op + sp.Version.String()
}

// String is the set's normalised form, clauses in their order, joined by ",".
func (s Set) String() string {
	parts := make([]string, len(s))
	for i, sp := range s {
		parts[i] = sp.String()
	}
	return strings.Join(parts, ",")
}

// Matches reports whether v satisfies sp by its operator alone, pre-releases included (Set
// applies PEP 440's exclusion of pre-releases).
func (sp Specifier) Matches(v Version) bool {
	switch sp.Op {
	case "===":
		return strings.EqualFold(v.raw, sp.Arbitrary) || strings.EqualFold(v.String(), sp.Arbitrary)
	case "==":
		return sp.equal(v)
	case "!=":
		return !sp.equal(v)
	case "~=":
		// ~=V.N is >=V.N together with ==V.*.
		prefix := Specifier{Op: "==", Prefix: true, Version: Version{Epoch: sp.Version.Epoch,
			Release: sp.Version.Release[:len(sp.Version.Release)-1]}}
		return v.Public().Compare(sp.Version) >= 0 && prefix.equal(v)
	case "<=":
		return v.Public().Compare(sp.Version) <= 0
	case ">=":
		return v.Public().Compare(sp.Version) >= 0
	case "<":
		if v.Compare(sp.Version) >= 0 {
			return false
		}
		// <V excludes V's own pre-releases unless V is one itself: <3.7 does not admit 3.7rc1.
		return sp.Version.IsPrerelease() || !v.IsPrerelease() || !v.Base().Equal(sp.Version.Base())
	case ">":
		if v.Compare(sp.Version) <= 0 {
			return false
		}
		// >V excludes V's post-releases unless V is one, and V's local versions.
		if !sp.Version.IsPostrelease() && v.IsPostrelease() && v.Base().Equal(sp.Version.Base()) {
			return false
		}
		return v.Local == nil || !v.Base().Equal(sp.Version.Base())
	}
	return false
}

// equal is == and the complement of !=. Without a local label in the specifier the candidate's
// local label is ignored; with .* the candidate's public version is compared by its leading
// components, the shorter release padded with zeros.
func (sp Specifier) equal(v Version) bool {
	if !sp.Prefix {
		if sp.Version.Local == nil {
			v = v.Public()
		}
		return v.Equal(sp.Version)
	}
	want := tokens(sp.Version)
	have := tokens(v.Public())
	// The candidate's release is padded with zeros to the prefix's length (1 matches ==1.0.*);
	// the prefix is never padded, so ==1.0.* compares the candidate's first two components.
	if wr, hr := len(sp.Version.Release), len(v.Release); wr > hr {
		padded := append([]string{}, have[:1+hr]...)
		for i := hr; i < wr; i++ {
			padded = append(padded, "0")
		}
		have = append(padded, have[1+hr:]...)
	}
	if len(have) < len(want) {
		return false
	}
	for i := range want {
		if have[i] != want[i] {
			return false
		}
	}
	return true
}

// tokens splits a normalised version into epoch, each release component, then the pre-, post-
// and dev-release parts: the units a prefix match compares.
func tokens(v Version) []string {
	s := Version{Epoch: v.Epoch, Release: v.Release}.String()
	epoch := "0"
	if e, rest, ok := strings.Cut(s, "!"); ok {
		epoch, s = e, rest
	}
	out := append([]string{epoch}, strings.Split(s, ".")...)
	if v.PreKind != 0 {
		out = append(out, Version{Release: []uint64{0}, PreKind: v.PreKind, PreNum: v.PreNum}.String()[1:])
	}
	if v.HasPost {
		out = append(out, "post"+Version{Release: []uint64{v.Post}}.String())
	}
	if v.HasDev {
		out = append(out, "dev"+Version{Release: []uint64{v.Dev}}.String())
	}
	return out
}

// Prereleases reports whether the set admits pre-releases by PEP 440's default rule: when one
// of its inclusive clauses (==, ~=, <=, >=, <, >, ===) names a pre-release.
func (s Set) Prereleases() bool {
	for _, sp := range s {
		if sp.Op != "!=" && sp.Version.Release != nil && sp.Version.IsPrerelease() {
			return true
		}
	}
	return false
}

// Contains reports whether v satisfies every clause, excluding pre-releases unless the set
// names one (PEP 440: "pre-releases ... are implicitly excluded from all version specifiers").
// Use Installed for versions already present, which PEP 440 does not exclude.
func (s Set) Contains(v Version) bool {
	if v.IsPrerelease() && !s.Prereleases() {
		return false
	}
	return s.Installed(v)
}

// Installed reports whether v satisfies every clause, pre-releases included: PEP 440 excludes
// pre-releases from what a specifier selects to install, "unless they are already present on
// the system", which is what every question about the locks of the fleet asks.
func (s Set) Installed(v Version) bool {
	for _, sp := range s {
		if !sp.Matches(v) {
			return false
		}
	}
	return true
}

// Filter keeps the versions the set selects, in their order: final releases by Contains, and
// when none matches, the pre-releases that match (PEP 440: pre-releases are accepted "if the only
// available version that satisfies the version specifier is a pre-release").
func (s Set) Filter(vs []Version) []Version {
	var out, pre []Version
	for _, v := range vs {
		switch {
		case s.Contains(v):
			out = append(out, v)
		case v.IsPrerelease() && s.Installed(v):
			pre = append(pre, v)
		}
	}
	if len(out) == 0 {
		return pre
	}
	return out
}
