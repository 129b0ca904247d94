// Package pep440 parses, orders and matches Python package versions and version specifiers as
// PEP 440 defines them (https://peps.python.org/pep-0440/), the way the packaging library reads
// them: epochs, pre-, post- and development releases, local versions, and the specifier
// operators ~=, ==, ==x.*, !=, <=, >=, <, > and ===, with the implicit exclusion of pre-releases.
// It is the one implementation of these rules in the control plane: the package index, the
// advisory ranges and the install policy all evaluate through it.
package pep440

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Pre-release kinds, in their order.
const (
	PreAlpha = 1 // a
	PreBeta  = 2 // b
	PreRC    = 3 // rc
)

// Version is one parsed PEP 440 version. The zero Version is not valid; use Parse.
type Version struct {
	Epoch   uint64
	Release []uint64 // at least one component
	PreKind int      // 0 when not a pre-release, else PreAlpha, PreBeta or PreRC
	PreNum  uint64
	HasPost bool
	Post    uint64
	HasDev  bool
	Dev     uint64
	// Local is the local version label's segments ("ubuntu", "1"), lower case; nil when absent.
	Local []string
	raw   string
}

// versionRe is PEP 440's "permissive" pattern (Appendix B), as packaging uses it. Numbers are
// bounded so none overflows uint64.
var versionRe = regexp.MustCompile(`(?i)^\s*v?` +
	`(?:([0-9]{1,18})!)?` + // epoch
	`([0-9]{1,18}(?:\.[0-9]{1,18})*)` + // release
	`(?:[-_.]?(alpha|a|beta|b|preview|pre|c|rc)[-_.]?([0-9]{1,18})?)?` + // pre-release
	`(?:-([0-9]{1,18})|[-_.]?(post|rev|r)[-_.]?([0-9]{1,18})?)?` + // post-release
	`(?:[-_.]?(dev)[-_.]?([0-9]{1,18})?)?` + // dev release
	`(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$`) // local version

// maxRelease bounds the release components, so a hostile string cannot make comparison costly.
const maxRelease = 32

// ParseError explains why a string is not a version or a specifier.
type ParseError struct {
	Input  string
	Reason string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%q: %s", e.Input, e.Reason) }

// Parse reads a version in any of the spellings PEP 440 normalises ("1.0-r1", "v2.0RC1", "1.0a").
func Parse(s string) (Version, error) {
	m := versionRe.FindStringSubmatch(s)
	if m == nil {
		return Version{}, &ParseError{Input: s, Reason: "not a PEP 440 version"}
	}
	num := func(t string) uint64 {
		if t == "" {
			return 0
		}
		n, _ := strconv.ParseUint(t, 10, 64) // at most 18 digits: never overflows
		return n
	}
	v := Version{Epoch: num(m[1]), raw: strings.TrimSpace(s)}
	parts := strings.Split(m[2], ".")
	if len(parts) > maxRelease {
		return Version{}, &ParseError{Input: s, Reason: fmt.Sprintf("more than %d release components", maxRelease)}
	}
	v.Release = make([]uint64, len(parts))
	for i, p := range parts {
		v.Release[i] = num(p)
	}
	switch strings.ToLower(m[3]) {
	case "":
	case "a", "alpha":
		v.PreKind = PreAlpha
	case "b", "beta":
		v.PreKind = PreBeta
	default: // c, rc, pre, preview
		v.PreKind = PreRC
	}
	v.PreNum = num(m[4])
	switch {
	case m[5] != "": // the implicit post-release "1.0-1"
		v.HasPost, v.Post = true, num(m[5])
	case m[6] != "":
		v.HasPost, v.Post = true, num(m[7])
	}
	if m[8] != "" {
		v.HasDev, v.Dev = true, num(m[9])
	}
	if m[10] != "" {
		v.Local = strings.FieldsFunc(strings.ToLower(m[10]), func(r rune) bool { return r == '.' || r == '-' || r == '_' })
	}
	return v, nil
}

// MustParse is Parse for constants in tests and tables; it panics on a bad version.
func MustParse(s string) Version {
	v, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return v
}

// IsPrerelease reports whether v is a pre-release or a development release.
func (v Version) IsPrerelease() bool { return v.PreKind != 0 || v.HasDev }

// IsPostrelease reports whether v is a post-release.
func (v Version) IsPostrelease() bool { return v.HasPost }

// Public is v without its local label.
func (v Version) Public() Version {
	v.Local = nil
	return v
}

// Base is v's epoch and release only.
func (v Version) Base() Version {
	return Version{Epoch: v.Epoch, Release: v.Release}
}

// String is v's normalised form ("1!2.0rc1.post2.dev3+local.7").
func (v Version) String() string {
	var b strings.Builder
	if v.Epoch != 0 {
		fmt.Fprintf(&b, "%d!", v.Epoch)
	}
	for i, r := range v.Release {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.FormatUint(r, 10))
	}
	if v.PreKind != 0 {
		b.WriteString([]string{"", "a", "b", "rc"}[v.PreKind])
		b.WriteString(strconv.FormatUint(v.PreNum, 10))
	}
	if v.HasPost {
		b.WriteString(".post" + strconv.FormatUint(v.Post, 10))
	}
	if v.HasDev {
		b.WriteString(".dev" + strconv.FormatUint(v.Dev, 10))
	}
	if v.Local != nil {
		b.WriteString("+" + strings.Join(v.Local, "."))
	}
	return b.String()
}

// Compare orders two versions: -1 when v < w, 0 when they are equal, +1 when v > w. Trailing
// zeros of the release do not count (1.0 == 1.0.0).
func (v Version) Compare(w Version) int {
	if c := cmpUint(v.Epoch, w.Epoch); c != 0 {
		return c
	}
	n := max(len(v.Release), len(w.Release))
	for i := 0; i < n; i++ {
		if c := cmpUint(at(v.Release, i), at(w.Release, i)); c != 0 {
			return c
		}
	}
	if c := cmpInt(v.preKey(), w.preKey()); c != 0 {
		return c
	}
	if v.PreKind != 0 && w.PreKind != 0 {
		if c := cmpUint(v.PreNum, w.PreNum); c != 0 {
			return c
		}
	}
	// No post-release sorts before any post-release.
	if c := cmpBool(v.HasPost, w.HasPost); c != 0 {
		return c
	}
	if c := cmpUint(v.Post, w.Post); v.HasPost && c != 0 {
		return c
	}
	// No dev release sorts after any dev release.
	if c := cmpBool(!v.HasDev, !w.HasDev); c != 0 {
		return c
	}
	if c := cmpUint(v.Dev, w.Dev); v.HasDev && c != 0 {
		return c
	}
	return compareLocal(v.Local, w.Local)
}

// Equal reports whether v and w compare equal.
func (v Version) Equal(w Version) bool { return v.Compare(w) == 0 }

// preKey places the pre-release phase: a bare dev release (1.0.dev1) before any pre-release of
// the same release, pre-releases by kind, and a final or post release after all of them.
func (v Version) preKey() int {
	switch {
	case v.PreKind != 0:
		return v.PreKind
	case v.HasDev && !v.HasPost:
		return -1
	default:
		return 100
	}
}

// compareLocal orders local labels: none sorts first; segment by segment, numbers after
// strings, numbers numerically and strings lexically; a shorter label that is a prefix first.
func compareLocal(a, b []string) int {
	if c := cmpBool(a != nil, b != nil); c != 0 || a == nil {
		return c
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		an, aerr := strconv.ParseUint(a[i], 10, 64)
		bn, berr := strconv.ParseUint(b[i], 10, 64)
		switch {
		case aerr == nil && berr == nil:
			if c := cmpUint(an, bn); c != 0 {
				return c
			}
		case aerr == nil:
			return 1
		case berr == nil:
			return -1
		default:
			if c := strings.Compare(a[i], b[i]); c != 0 {
				return c
			}
		}
	}
	return cmpInt(len(a), len(b))
}

func at(r []uint64, i int) uint64 {
	if i < len(r) {
		return r[i]
	}
	return 0
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}
