// Package sbom writes the software bill of materials of one environment as CycloneDX 1.5 JSON
// (https://cyclonedx.org/docs/1.5/json/), generated from its uv.lock: one component per locked
// package (purl pkg:pypi/<name>@<version>), each artifact the lock records (sdist, wheels) as a
// distribution reference with its hash, and the dependency graph from the project down.
package sbom

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/uvlock"
)

// SpecVersion is the CycloneDX version written.
const SpecVersion = "1.5"

// Subject names what the SBOM describes.
type Subject struct {
	// Name of the environment ("wf/node@version") and its Revision.
	Name     string
	Revision int64
	// LockDigest identifies the lock; with Name it makes the serial number, so the same
	// revision always gets the same document but for its timestamp.
	LockDigest string
	Tool       string // the generating program's name and version
	ToolVer    string
	Time       time.Time
}

// BOM is the CycloneDX document (the subset written here).
type BOM struct {
	BOMFormat    string       `json:"bomFormat"`
	SpecVersion  string       `json:"specVersion"`
	SerialNumber string       `json:"serialNumber"`
	Version      int          `json:"version"`
	Metadata     Metadata     `json:"metadata"`
	Components   []Component  `json:"components"`
	Dependencies []Dependency `json:"dependencies"`
}

// Metadata is the document's metadata.
type Metadata struct {
	Timestamp string    `json:"timestamp"`
	Tools     Tools     `json:"tools"`
	Component Component `json:"component"`
}

// Tools lists the generating tool (the 1.5 form: tools.components).
type Tools struct {
	Components []Component `json:"components"`
}

// Component is one package, or the environment itself.
type Component struct {
	Type               string        `json:"type"`
	BOMRef             string        `json:"bom-ref,omitempty"`
	Name               string        `json:"name"`
	Version            string        `json:"version,omitempty"`
	PURL               string        `json:"purl,omitempty"`
	Scope              string        `json:"scope,omitempty"`
	Hashes             []Hash        `json:"hashes,omitempty"`
	ExternalReferences []ExternalRef `json:"externalReferences,omitempty"`
	Properties         []Property    `json:"properties,omitempty"`
}

// Hash is one hash of one file.
type Hash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

// ExternalRef is a file the lock records for a package.
type ExternalRef struct {
	Type   string `json:"type"`
	URL    string `json:"url"`
	Hashes []Hash `json:"hashes,omitempty"`
}

// Property is a name/value pair.
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Dependency is one node of the dependency graph.
type Dependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn"`
}

// algs maps the lock's hash names to CycloneDX's.
var algs = map[string]string{"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}

// Generate builds the SBOM of lock.
func Generate(lock uvlock.Lock, s Subject) BOM {
	rootRef := "environment"
	bom := BOM{
		BOMFormat: "CycloneDX", SpecVersion: SpecVersion, SerialNumber: serial(s.Name, s.LockDigest), Version: 1,
		Metadata: Metadata{
			Timestamp: s.Time.UTC().Format(time.RFC3339),
			Tools:     Tools{Components: []Component{{Type: "application", Name: s.Tool, Version: s.ToolVer}}},
			Component: Component{Type: "application", BOMRef: rootRef, Name: s.Name, Version: fmt.Sprintf("revision-%d", s.Revision),
				Properties: []Property{{Name: "envfabric:lock_digest", Value: s.LockDigest}}},
		},
		Components:   []Component{},
		Dependencies: []Dependency{},
	}
	for _, p := range lock.Packages {
		c := Component{Type: "library", BOMRef: ref(p), Name: p.Name, Version: p.Version, PURL: ref(p), Scope: "required"}
		for _, a := range p.Hashes {
			alg, hexsum, ok := strings.Cut(a.Hash, ":")
			name, known := algs[strings.ToLower(alg)]
			if !ok || !known || a.URL == "" {
				continue
			}
			h := Hash{Alg: name, Content: strings.ToLower(hexsum)}
			c.ExternalReferences = append(c.ExternalReferences, ExternalRef{Type: "distribution", URL: a.URL, Hashes: []Hash{h}})
			if len(p.Hashes) == 1 {
				c.Hashes = []Hash{h} // the package is that one file
			}
		}
		if !p.Direct {
			c.Properties = append(c.Properties, Property{Name: "envfabric:direct", Value: "false"})
		} else {
			c.Properties = append(c.Properties, Property{Name: "envfabric:direct", Value: "true"})
		}
		bom.Components = append(bom.Components, c)
	}
	edges := func(deps []uvlock.Dependency) []string {
		out := []string{}
		seen := map[string]bool{}
		for _, d := range deps {
			target, ok := lock.Resolve(d)
			if !ok {
				continue
			}
			if r := ref(target); !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
		return out
	}
	bom.Dependencies = append(bom.Dependencies, Dependency{Ref: rootRef, DependsOn: edges(lock.Root.Dependencies)})
	for _, p := range lock.Packages {
		bom.Dependencies = append(bom.Dependencies, Dependency{Ref: ref(p), DependsOn: edges(p.Dependencies)})
	}
	return bom
}

// JSON is the document, indented.
func (b BOM) JSON() ([]byte, error) { return json.MarshalIndent(b, "", "  ") }

// ref is the package's purl, also its bom-ref: unique, since the lock has one entry per name
// and version.
func ref(p uvlock.Package) string {
	return "pkg:pypi/" + purlEscape(p.Name) + "@" + purlEscape(p.Version)
}

// purlEscape percent-encodes what the purl specification does not allow bare in a name or a
// version (a local version's "+", for one).
func purlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// serial is an RFC 4122 name-based (version 5 layout, SHA-256 truncated) UUID of the subject.
func serial(name, digest string) string {
	sum := sha256.Sum256([]byte("envfabric-sbom\x00" + name + "\x00" + digest))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u)
	return "urn:uuid:" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
