// Package pyproject reads the two files that make an environment reproducible, pyproject.toml and
// uv.lock, and compares package names the way PEP 503 does. The control plane answers deps and
// export from these files as its database holds them; the agent checks a removal against them.
package pyproject

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

var (
	separators = regexp.MustCompile(`[-_.]+`)
	leadName   = regexp.MustCompile(`^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)`)
	bareName   = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$`)
)

// Normalize returns the PEP 503 normalized form of a project name.
func Normalize(name string) string {
	return strings.ToLower(separators.ReplaceAllString(name, "-"))
}

// IsName reports whether s is a bare project name.
func IsName(s string) bool { return bareName.MatchString(s) }

// RequirementName is the project name a requirement string starts with, or "" when it starts with
// none.
func RequirementName(req string) string {
	if m := leadName.FindStringSubmatch(req); m != nil {
		return m[1]
	}
	return ""
}

type pyproject struct {
	Project struct {
		Name           string   `toml:"name"`
		RequiresPython string   `toml:"requires-python"`
		Dependencies   []string `toml:"dependencies"`
	} `toml:"project"`
}

// Pyproject is what the fabric needs from a pyproject.toml.
type Pyproject struct {
	Name           string
	RequiresPython string
	Dependencies   []string
}

// Parse reads a pyproject.toml.
func Parse(content string) (Pyproject, error) {
	var p pyproject
	if err := toml.Unmarshal([]byte(content), &p); err != nil {
		return Pyproject{}, fmt.Errorf("parsing pyproject.toml: %w", err)
	}
	deps := p.Project.Dependencies
	if deps == nil {
		deps = []string{}
	}
	return Pyproject{Name: p.Project.Name, RequiresPython: p.Project.RequiresPython, Dependencies: deps}, nil
}

// DependencyIndex maps each dependency's normalized name to the requirement string as written.
func (p Pyproject) DependencyIndex() map[string]string {
	idx := make(map[string]string, len(p.Dependencies))
	for _, d := range p.Dependencies {
		idx[Normalize(RequirementName(d))] = d
	}
	return idx
}

type lockFile struct {
	Package []struct {
		Name    string         `toml:"name"`
		Version string         `toml:"version"`
		Source  map[string]any `toml:"source"`
	} `toml:"package"`
}

// LockedVersions returns name → version for every package uv.lock pins, leaving out the project
// itself (its source is virtual or editable). A name locked at several versions (the lock is
// universal, so markers may fork it) lists them comma-separated, lowest first.
func LockedVersions(lock string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(lock) == "" {
		return out, nil
	}
	var l lockFile
	if err := toml.Unmarshal([]byte(lock), &l); err != nil {
		return nil, fmt.Errorf("parsing uv.lock: %w", err)
	}
	multi := map[string][]string{}
	for _, p := range l.Package {
		if _, ok := p.Source["virtual"]; ok {
			continue
		}
		if _, ok := p.Source["editable"]; ok {
			continue
		}
		multi[p.Name] = append(multi[p.Name], p.Version)
	}
	for name, vs := range multi {
		sort.Strings(vs)
		out[name] = strings.Join(vs, ", ")
	}
	return out, nil
}

var (
	tableHeader = regexp.MustCompile(`^\s*\[`)
	projectHead = regexp.MustCompile(`^\s*\[\s*project\s*\]\s*(#.*)?$`)
	nameLine    = regexp.MustCompile(`^(\s*name\s*=\s*)("[^"\\]*"|'[^']*')(\s*(#.*)?)$`)
)

// SetName returns content with the [project] name set to name, changing only that line (the
// rest of the file stays byte for byte), and whether anything changed. name must be a bare
// project name; content must have a [project] table with a one-line string name.
func SetName(content, name string) (string, bool, error) {
	if !IsName(name) {
		return "", false, fmt.Errorf("%q is not a project name", name)
	}
	p, err := Parse(content)
	if err != nil {
		return "", false, err
	}
	if p.Name == name {
		return content, false, nil
	}
	lines := strings.SplitAfter(content, "\n")
	inProject := false
	for i, l := range lines {
		body := strings.TrimRight(l, "\r\n")
		switch {
		case projectHead.MatchString(body):
			inProject = true
			continue
		case tableHeader.MatchString(body):
			inProject = false
			continue
		}
		if m := nameLine.FindStringSubmatch(body); inProject && m != nil {
			lines[i] = m[1] + `"` + name + `"` + m[3] + l[len(body):]
			out := strings.Join(lines, "")
			if q, err := Parse(out); err != nil || q.Name != name {
				return "", false, fmt.Errorf("setting the project name: the edited file does not read back with name %q", name)
			}
			return out, true, nil
		}
	}
	return "", false, fmt.Errorf("pyproject.toml has no one-line name in its [project] table")
}
