// Package reqspec parses the package strings users send: PEP 508 requirements restricted to what
// the fabric accepts (a name, extras, PEP 440 version specifiers and an environment marker, each
// checked against its grammar). Anything uv would read as an option, a URL, a local path or a VCS
// reference is refused: package strings are data, never options. An operator may allow direct
// URL references ("name @ url") under listed prefixes. It also reads uploaded requirements files
// without letting them reach uv.
package reqspec

import (
	"bufio"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/envfabric/envfabric/controlplane/pep440"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// MaxSpecLen bounds one requirement string.
const MaxSpecLen = 512

// MaxPackages bounds the requirements of one request, so one request cannot hand uv an unbounded
// resolution problem.
const MaxPackages = 256

// Requirement is one parsed requirement.
type Requirement struct {
	Name      string   // as written
	Extras    []string // as written
	Specifier string   // e.g. ">=1.24,<2"; empty when unconstrained
	URL       string   // a direct reference an operator allowed; empty otherwise
	Marker    string   // e.g. `python_version >= "3.11"`; empty when absent
}

// Normalized is the PEP 503 form of the name, the key for comparing names.
func (r Requirement) Normalized() string { return pyproject.Normalize(r.Name) }

// String renders the requirement in canonical spacing.
func (r Requirement) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	if len(r.Extras) > 0 {
		b.WriteString("[" + strings.Join(r.Extras, ",") + "]")
	}
	b.WriteString(r.Specifier)
	if r.URL != "" {
		b.WriteString(" @ " + r.URL)
		if r.Marker != "" {
			b.WriteString(" ") // PEP 508: a URL needs white space before the marker's ';'
		}
	}
	if r.Marker != "" {
		b.WriteString("; " + r.Marker)
	}
	return b.String()
}

// Bare reports whether the requirement names a package without a version constraint or URL.
func (r Requirement) Bare() bool { return r.Specifier == "" && r.URL == "" }

var (
	nameRe   = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`)
	clauseRe = regexp.MustCompile(`^\s*(~=|===|==|!=|<=|>=|<|>)\s*([A-Za-z0-9_.*+!-]+)\s*$`)
)

// Error explains why a requirement was refused.
type Error struct {
	Spec   string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid package %q: %s", e.Spec, e.Reason) }

// ErrTooLarge is returned (wrapped) for a requirements file over MaxRequirementsFile.
var ErrTooLarge = errors.New("too large")

// Policy is what an operator allows beyond plain index requirements. The zero Policy allows
// nothing more.
type Policy struct {
	// URLPrefixes admits "name @ url" when url starts with one of them (see ValidURLPrefix).
	URLPrefixes []string
}

// Parse parses one requirement string under the strict zero Policy.
func Parse(spec string) (Requirement, error) { return Policy{}.Parse(spec) }

// ParseAll parses every spec under the strict zero Policy.
func ParseAll(specs []string) ([]Requirement, error) { return Policy{}.ParseAll(specs) }

// ParseRequirementsFile reads a requirements file under the strict zero Policy.
func ParseRequirementsFile(content string) ([]string, error) {
	return Policy{}.ParseRequirementsFile(content)
}

// Parse parses one requirement string.
func (p Policy) Parse(spec string) (Requirement, error) {
	fail := func(reason string) (Requirement, error) {
		return Requirement{}, &Error{Spec: spec, Reason: reason}
	}
	s := strings.TrimSpace(spec)
	switch {
	case s == "":
		return fail("empty")
	case len(s) > MaxSpecLen:
		return fail(fmt.Sprintf("longer than %d characters", MaxSpecLen))
	case strings.HasPrefix(s, "-"):
		return fail("looks like a command-line option")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fail("contains control characters")
		} else if c >= 0x80 {
			// Names, versions and markers are ASCII; anything else is a look-alike at best.
			return fail("contains characters outside ASCII")
		}
	}
	if strings.Contains(s, "${") {
		return fail("variable expansion is not allowed")
	}
	var r Requirement
	head := s
	if i := strings.IndexByte(s, ';'); i >= 0 {
		// No quote can come before the marker, so the first ';' ends the requirement.
		head = s[:i]
		r.Marker = strings.TrimSpace(s[i+1:])
		if r.Marker == "" {
			return fail("malformed environment marker: empty")
		}
	}
	if at := strings.IndexByte(head, '@'); at >= 0 {
		u := strings.TrimSpace(head[at+1:])
		if !p.urlAllowed(u) {
			return fail("URL and VCS references are not allowed; name a package from the index")
		}
		r.URL = u
		head = head[:at]
		if r.Marker != "" && !strings.HasSuffix(s[:strings.IndexByte(s, ';')], " ") {
			return fail("a URL must be followed by white space before ';'")
		}
	} else if strings.Contains(s, "://") {
		return fail("URL and VCS references are not allowed; name a package from the index")
	}
	if strings.ContainsAny(head, `/\`) || strings.HasPrefix(head, ".") || strings.HasPrefix(head, "~") || r.URL == "" && strings.ContainsAny(r.Marker, `/\`) {
		return fail("local paths are not allowed; name a package from the index")
	}
	if r.Marker != "" {
		m, err := parseMarker(r.Marker)
		if err != nil {
			return fail("malformed environment marker: " + err.Error())
		}
		r.Marker = m
	}
	rest := strings.TrimSpace(head)
	name := nameRe.FindString(rest)
	if name == "" {
		return fail("must start with a package name")
	}
	r.Name = name
	rest = strings.TrimSpace(rest[len(name):])
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return fail("unclosed extras")
		}
		for _, e := range strings.Split(rest[1:end], ",") {
			e = strings.TrimSpace(e)
			if e == "" || nameRe.FindString(e) != e {
				return fail("malformed extra")
			}
			r.Extras = append(r.Extras, e)
		}
		rest = strings.TrimSpace(rest[end+1:])
	}
	if r.URL != "" {
		if rest != "" {
			return fail("a URL reference takes no version specifier")
		}
		return r, nil
	}
	if strings.HasPrefix(rest, "(") && strings.HasSuffix(rest, ")") {
		rest = strings.TrimSpace(rest[1 : len(rest)-1])
	}
	if rest != "" {
		clauses := strings.Split(rest, ",")
		for i, c := range clauses {
			m := clauseRe.FindStringSubmatch(c)
			if m == nil {
				return fail("malformed version specifier")
			}
			if err := checkVersion(m[1], m[2]); err != nil {
				return fail("malformed version specifier: " + err.Error())
			}
			clauses[i] = m[1] + m[2]
		}
		r.Specifier = strings.Join(clauses, ",")
	}
	return r, nil
}

// checkVersion applies PEP 440's rules for the version an operator may take, through package
// pep440 (the one implementation of PEP 440 in the control plane).
func checkVersion(op, v string) error {
	sp, err := pep440.ParseSpecifier(op + v)
	var pe *pep440.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%q: %s", v, pe.Reason)
	}
	if err != nil {
		return err
	}
	if op == "===" && sp.Version.Release == nil {
		// PEP 440 allows any string here; uv reads it as a version, so a version it must be.
		return fmt.Errorf("%q is not a version", v)
	}
	return nil
}

// ParseAll parses every spec, reporting all the bad ones at once.
func (p Policy) ParseAll(specs []string) ([]Requirement, error) {
	if len(specs) > MaxPackages {
		return nil, fmt.Errorf("%d packages in one request; at most %d", len(specs), MaxPackages)
	}
	out := make([]Requirement, 0, len(specs))
	var bad []string
	for _, s := range specs {
		r, err := p.Parse(s)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		out = append(out, r)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return out, nil
}

// ValidURLPrefix checks an operator's URL prefix: an absolute http(s), git+https or file URL
// ending in '/', so that a prefix names a directory or a host and never half a name, with no
// credentials, query or fragment.
func ValidURLPrefix(prefix string) error {
	u, err := url.Parse(prefix)
	if err != nil {
		return fmt.Errorf("%q: %v", prefix, err)
	}
	switch u.Scheme {
	case "https", "http", "git+https":
		if u.Host == "" {
			return fmt.Errorf("%q: no host", prefix)
		}
	case "file":
	default:
		return fmt.Errorf("%q: scheme must be https, http, git+https or file", prefix)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("%q: want scheme://host/path/ ending in '/', without credentials, query or fragment", prefix)
	}
	if strings.Contains(u.Path, "/../") || strings.Contains(u.Path, "/./") {
		return fmt.Errorf("%q: dot segments", prefix)
	}
	return nil
}

// urlAllowed reports whether u is under one of the operator's prefixes and cannot climb out of it.
func (p Policy) urlAllowed(u string) bool {
	if u == "" || strings.ContainsAny(u, " \t\\") || strings.Contains(u, "%") {
		// Percent-escapes could hide "..", "/" or "@" from the prefix comparison.
		return false
	}
	rest := ""
	for _, pre := range p.URLPrefixes {
		if r, ok := strings.CutPrefix(u, pre); ok {
			rest = r
			break
		}
	}
	if rest == "" {
		return false
	}
	path := rest
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == ".." || seg == "." {
			return false
		}
	}
	return true
}

// MaxRequirementsFile bounds an uploaded requirements file.
const MaxRequirementsFile = 256 << 10

// ParseRequirementsFile reads a requirements file: requirement lines, comments, blank lines and
// backslash continuations only. Options (-r, -c, -e, --index-url, ...) are refused, because uv
// would obey them (other files, URLs, other indexes); so are URLs, paths and ${VAR}. A file over
// MaxRequirementsFile is refused with an error wrapping ErrTooLarge.
func (p Policy) ParseRequirementsFile(content string) ([]string, error) {
	if len(content) > MaxRequirementsFile {
		return nil, fmt.Errorf("requirements file larger than %d bytes: %w", MaxRequirementsFile, ErrTooLarge)
	}
	content = strings.TrimPrefix(content, "\ufeff") // a byte-order mark from some editors
	var specs []string
	var pending strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(content))
	sc.Buffer(make([]byte, 64<<10), MaxRequirementsFile+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if pending.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			pending.WriteString(strings.TrimSuffix(line, `\`))
			continue
		}
		pending.WriteString(line)
		logical := pending.String()
		pending.Reset()
		if i := strings.Index(logical, "#"); i == 0 || i > 0 && (logical[i-1] == ' ' || logical[i-1] == '\t') {
			logical = logical[:i]
		}
		logical = strings.TrimSpace(logical)
		if logical == "" {
			continue
		}
		if strings.HasPrefix(logical, "-") {
			return nil, fmt.Errorf("requirements file line %d: options such as %q are not allowed", start, strings.Fields(logical)[0])
		}
		if _, err := p.Parse(logical); err != nil {
			return nil, fmt.Errorf("requirements file line %d: %w", start, err)
		}
		specs = append(specs, logical)
		if len(specs) > MaxPackages {
			return nil, fmt.Errorf("requirements file: more than %d requirements", MaxPackages)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading requirements file: %w", err)
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("requirements file ends inside a line continuation")
	}
	return specs, nil
}
