// Package uvlock reads what the dependency index, the SBOM and the install policy need from a
// uv.lock: every locked package with its version, source, artifact hashes and dependencies, and
// which of them the project declares directly. The lock is universal: one name may be locked at
// several versions under different markers, and each is a package of its own.
package uvlock

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/envfabric/envfabric/shared/pyproject"
)

// Lock is a parsed uv.lock.
type Lock struct {
	// Root is the project itself (source virtual or editable); its Name is "" when the lock has
	// none.
	Root Package
	// Packages are the locked packages, the project left out, sorted by name then version.
	Packages []Package
}

// Package is one [[package]] entry.
type Package struct {
	Name    string // PEP 503 normalised
	Version string // as locked
	// Registry is the index the package comes from ("" for other sources).
	Registry string
	// Direct is set when the project lists the package in its dependencies.
	Direct       bool
	Dependencies []Dependency
	// Hashes of its artifacts (sdist first, then the wheels), as "sha256:<hex>".
	Hashes []Artifact
}

// Artifact is one file the lock records for a package.
type Artifact struct {
	URL  string
	Hash string // "<alg>:<hex>"
	Size int64
	Kind string // "sdist" or "wheel"
}

// Dependency names another locked package; Version is set when the name is locked at several
// versions and the lock says which.
type Dependency struct {
	Name    string
	Version string
	Marker  string
}

type rawDep struct {
	Name    string `toml:"name"`
	Version string `toml:"version"`
	Marker  string `toml:"marker"`
}

type rawArtifact struct {
	URL  string `toml:"url"`
	Path string `toml:"path"`
	Hash string `toml:"hash"`
	Size int64  `toml:"size"`
}

type rawLock struct {
	Package []struct {
		Name         string         `toml:"name"`
		Version      string         `toml:"version"`
		Source       map[string]any `toml:"source"`
		Dependencies []rawDep       `toml:"dependencies"`
		Sdist        *rawArtifact   `toml:"sdist"`
		Wheels       []rawArtifact  `toml:"wheels"`
	} `toml:"package"`
}

// Parse reads lock. An empty lock is an empty Lock.
func Parse(lock string) (Lock, error) {
	var out Lock
	if strings.TrimSpace(lock) == "" {
		return out, nil
	}
	var raw rawLock
	if err := toml.Unmarshal([]byte(lock), &raw); err != nil {
		return out, fmt.Errorf("parsing uv.lock: %w", err)
	}
	for _, p := range raw.Package {
		pkg := Package{Name: pyproject.Normalize(p.Name), Version: p.Version}
		if r, ok := p.Source["registry"].(string); ok {
			pkg.Registry = r
		}
		for _, d := range p.Dependencies {
			pkg.Dependencies = append(pkg.Dependencies, Dependency{Name: pyproject.Normalize(d.Name), Version: d.Version, Marker: d.Marker})
		}
		if p.Sdist != nil && p.Sdist.Hash != "" {
			pkg.Hashes = append(pkg.Hashes, Artifact{URL: orPath(*p.Sdist), Hash: p.Sdist.Hash, Size: p.Sdist.Size, Kind: "sdist"})
		}
		for _, w := range p.Wheels {
			if w.Hash != "" {
				pkg.Hashes = append(pkg.Hashes, Artifact{URL: orPath(w), Hash: w.Hash, Size: w.Size, Kind: "wheel"})
			}
		}
		_, virtual := p.Source["virtual"]
		_, editable := p.Source["editable"]
		if (virtual || editable) && out.Root.Name == "" {
			out.Root = pkg
			continue
		}
		out.Packages = append(out.Packages, pkg)
	}
	direct := map[string]bool{}
	for _, d := range out.Root.Dependencies {
		direct[d.Name] = true
	}
	for i := range out.Packages {
		out.Packages[i].Direct = direct[out.Packages[i].Name]
	}
	sort.SliceStable(out.Packages, func(i, j int) bool {
		a, b := out.Packages[i], out.Packages[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Version < b.Version
	})
	return out, nil
}

func orPath(a rawArtifact) string {
	if a.URL != "" {
		return a.URL
	}
	return a.Path
}

// Resolve finds the locked package a dependency names: by name, and by version when the lock
// gives one. ok is false when the lock has no such package.
func (l Lock) Resolve(d Dependency) (Package, bool) {
	for _, p := range l.Packages {
		if p.Name == d.Name && (d.Version == "" || p.Version == d.Version) {
			return p, true
		}
	}
	return Package{}, false
}
