package sbom_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/sbom"
	"github.com/envfabric/envfabric/controlplane/sbom/sbomtest"
	"github.com/envfabric/envfabric/controlplane/uvlock"
)

func TestGenerateValidates(t *testing.T) {
	b, err := os.ReadFile("../uvlock/testdata/uv.lock")
	if err != nil {
		t.Fatal(err)
	}
	lock, err := uvlock.Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	bom := sbom.Generate(lock, sbom.Subject{Name: "wf/node@v1", Revision: 3, LockDigest: "abc", Tool: "envfabric", ToolVer: "dev",
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	doc, err := bom.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := sbomtest.Validate(t, doc); err != nil {
		t.Fatalf("the SBOM does not validate against CycloneDX 1.5: %v\n%s", err, doc)
	}
	// What a user checks: every locked package with its purl and hashes, and the graph.
	var got sbom.BOM
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	purls := map[string]sbom.Component{}
	for _, c := range got.Components {
		purls[c.PURL] = c
	}
	for _, want := range []string{"pkg:pypi/idna@3.6", "pkg:pypi/numpy@1.26.4", "pkg:pypi/numpy@2.0.0", "pkg:pypi/requests@2.31.0", "pkg:pypi/urllib3@2.2.1"} {
		if _, ok := purls[want]; !ok {
			t.Errorf("no component %s", want)
		}
	}
	if len(got.Components) != 7 {
		t.Errorf("%d components; want the 7 locked packages (not the project itself)", len(got.Components))
	}
	idna := purls["pkg:pypi/idna@3.6"]
	if len(idna.ExternalReferences) != 2 || idna.ExternalReferences[1].Hashes[0] != (sbom.Hash{Alg: "SHA-256", Content: "c05567e9c24a6b9faaa835c4821bad0590fbb9d5779e7caa6e1cc4978e7eb24f"}) {
		t.Errorf("idna's distributions = %+v; want the sdist and the wheel with their SHA-256", idna.ExternalReferences)
	}
	if c := purls["pkg:pypi/certifi@2024.2.2"]; len(c.Hashes) != 1 {
		t.Errorf("certifi (one wheel) hashes = %+v; want the wheel's", c.Hashes)
	}
	deps := map[string][]string{}
	for _, d := range got.Dependencies {
		deps[d.Ref] = d.DependsOn
	}
	if g := strings.Join(deps["environment"], " "); g != "pkg:pypi/idna@3.6 pkg:pypi/numpy@1.26.4 pkg:pypi/numpy@2.0.0 pkg:pypi/requests@2.31.0" {
		t.Errorf("the environment depends on %q", g)
	}
	if g := strings.Join(deps["pkg:pypi/requests@2.31.0"], " "); g != "pkg:pypi/certifi@2024.2.2 pkg:pypi/charset-normalizer@3.3.2 pkg:pypi/idna@3.6 pkg:pypi/urllib3@2.2.1" {
		t.Errorf("requests depends on %q", g)
	}
	// The same revision gets the same serial number.
	again := sbom.Generate(lock, sbom.Subject{Name: "wf/node@v1", LockDigest: "abc"})
	if again.SerialNumber != got.SerialNumber {
		t.Errorf("serial numbers differ: %s, %s", again.SerialNumber, got.SerialNumber)
	}
	// The schema is really checked: a document without its format is refused.
	if err := sbomtest.Validate(t, []byte(`{"bomFormat": "SPDX", "specVersion": "1.5"}`)); err == nil {
		t.Error("a document with a wrong bomFormat validates; the schema is not being applied")
	}
	// An empty lock is a valid, empty SBOM.
	empty, _ := sbom.Generate(uvlock.Lock{}, sbom.Subject{Name: "x"}).JSON()
	if err := sbomtest.Validate(t, empty); err != nil {
		t.Errorf("empty SBOM: %v", err)
	}
}
