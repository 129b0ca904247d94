// Package reqspec parses the package strings users send: PEP 508 requirements restricted to what
// the fabric accepts (a name, extras, version specifiers and an environment marker). Anything uv
// would read as an option, a URL, a local path or a VCS reference is refused: package strings are
// data, never options. It also reads uploaded requirements files without letting them reach uv.
package reqspec

import (
	"bufio"
	"fmt"
	"regexp"
	"strings"

	"github.com/envfabric/envfabric/shared/pyproject"
)

// MaxSpecLen bounds one requirement string.
const MaxSpecLen = 512

// Requirement is one parsed requirement.
type Requirement struct {
	Name      string   // as written
	Extras    []string // as written
	Specifier string   // e.g. ">=1.24,<2"; empty when unconstrained
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
	if r.Marker != "" {
		b.WriteString("; " + r.Marker)
	}
	return b.String()
}

// Bare reports whether the requirement names a package without a version constraint.
func (r Requirement) Bare() bool { return r.Specifier == "" }

var (
	nameRe   = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`)
	clauseRe = regexp.MustCompile(`^\s*(~=|===|==|!=|<=|>=|<|>)\s*([A-Za-z0-9_.*+!-]+)\s*$`)
	markerRe = regexp.MustCompile(`^[A-Za-z0-9_.'" <>=!~()\-]+$`)
)

// Error explains why a requirement was refused.
type Error struct {
	Spec   string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid package %q: %s", e.Spec, e.Reason) }

// Parse parses one requirement string.
func Parse(spec string) (Requirement, error) {
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
	case strings.ContainsAny(s, "\x00\r\n\t"):
		return fail("contains control characters")
	case strings.Contains(s, "://") || strings.Contains(s, "@"):
		return fail("URL and VCS references are not allowed; name a package from the index")
	case strings.ContainsAny(s, `/\`) || strings.HasPrefix(s, "."):
		return fail("local paths are not allowed; name a package from the index")
	case strings.Contains(s, "${"):
		return fail("variable expansion is not allowed")
	}
	var r Requirement
	rest := s
	if i := strings.IndexByte(rest, ';'); i >= 0 {
		r.Marker = strings.TrimSpace(rest[i+1:])
		rest = rest[:i]
		if r.Marker == "" || !markerRe.MatchString(r.Marker) {
			return fail("malformed environment marker")
		}
	}
	rest = strings.TrimSpace(rest)
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
			clauses[i] = m[1] + m[2]
		}
		r.Specifier = strings.Join(clauses, ",")
	}
	return r, nil
}

// ParseAll parses every spec, reporting all the bad ones at once.
func ParseAll(specs []string) ([]Requirement, error) {
	out := make([]Requirement, 0, len(specs))
	var bad []string
	for _, s := range specs {
		r, err := Parse(s)
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

// MaxRequirementsFile bounds an uploaded requirements file.
const MaxRequirementsFile = 256 << 10

// ParseRequirementsFile reads a requirements file: requirement lines, comments, blank lines and
// backslash continuations only. Options (-r, -c, -e, --index-url, ...) are refused, because uv
// would obey them (other files, URLs, other indexes); so are URLs, paths and ${VAR}.
func ParseRequirementsFile(content string) ([]string, error) {
	if len(content) > MaxRequirementsFile {
		return nil, fmt.Errorf("requirements file larger than %d bytes", MaxRequirementsFile)
	}
	var specs []string
	var pending strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(content))
	sc.Buffer(make([]byte, 64<<10), MaxRequirementsFile)
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
		if _, err := Parse(logical); err != nil {
			return nil, fmt.Errorf("requirements file line %d: %w", start, err)
		}
		specs = append(specs, logical)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading requirements file: %w", err)
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("requirements file ends inside a line continuation")
	}
	return specs, nil
}
