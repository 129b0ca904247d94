package check

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/envfabric/envfabric/shared/pyproject"
)

// depSet models an environment's dependencies: normalized name → specifier ("==1.0.0"), as
// pyproject.toml lists them. The harness pins every package, so a set is exact and every
// mutation of it identifiable.
type depSet map[string]string

// parseDep splits a requirement string into its normalized name and its specifier without
// spaces.
func parseDep(req string) (string, string) {
	name := pyproject.RequirementName(req)
	spec := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(req), name))
	return pyproject.Normalize(name), strings.Join(strings.Fields(spec), "")
}

func depsFrom(list []string) depSet {
	d := depSet{}
	for _, r := range list {
		n, s := parseDep(r)
		d[n] = s
	}
	return d
}

func (d depSet) equal(o depSet) bool { return maps.Equal(d, o) }

func (d depSet) String() string {
	names := slices.Sorted(maps.Keys(d))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + d[n]
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// pins is name → version for every "==" specifier: what uv.lock and .venv must hold.
func (d depSet) pins() map[string]string {
	out := map[string]string{}
	for n, s := range d {
		if v, ok := strings.CutPrefix(s, "=="); ok {
			out[n] = v
		}
	}
	return out
}

// apply is the effect of one succeeded audited mutation on d: create starts from nothing, add and
// update set the specifiers they handed uv, remove drops names.
func apply(d depSet, row AuditRow) depSet {
	var out depSet
	if row.Operation == KindCreate {
		out = depSet{}
	} else {
		out = maps.Clone(d)
	}
	for _, p := range row.appliedPackages() {
		n, s := parseDep(p)
		switch row.Operation {
		case KindCreate, KindAdd, KindUpdate:
			out[n] = s
		case KindRemove:
			delete(out, n)
		}
	}
	return out
}

// diff says how got differs from want, for evidence.
func diff(got, want depSet) string {
	var missing, extra, changed []string
	for n, s := range want {
		g, ok := got[n]
		switch {
		case !ok:
			missing = append(missing, n+s)
		case g != s:
			changed = append(changed, fmt.Sprintf("%s%s (want %s)", n, g, s))
		}
	}
	for n, s := range got {
		if _, ok := want[n]; !ok {
			extra = append(extra, n+s)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	slices.Sort(changed)
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+strings.Join(missing, " "))
	}
	if len(extra) > 0 {
		parts = append(parts, "extra "+strings.Join(extra, " "))
	}
	if len(changed) > 0 {
		parts = append(parts, "changed "+strings.Join(changed, " "))
	}
	if len(parts) == 0 {
		return "equal"
	}
	return strings.Join(parts, "; ")
}
