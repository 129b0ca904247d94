// Package sbomtest validates documents against the official CycloneDX 1.5 JSON schema, pinned in
// testdata/cyclonedx (see its README for the source and the checksums). Import it only from
// _test.go files.
package sbomtest

import (
	"bytes"
	"embed"
	"fmt"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed testdata/cyclonedx/*.json
var schemas embed.FS

// The schema's own URL and those its $refs resolve to (relative to it).
var files = map[string]string{
	"bom-1.5.SNAPSHOT.schema.json":  "http://cyclonedx.org/schema/bom-1.5.schema.json",
	"spdx.SNAPSHOT.schema.json":     "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json",
	"jsf-0.82.SNAPSHOT.schema.json": "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json",
}

var (
	once     sync.Once
	compiled *jsonschema.Schema
	errOnce  error
)

func schema() (*jsonschema.Schema, error) {
	once.Do(func() {
		c := jsonschema.NewCompiler()
		for file, url := range files {
			b, err := schemas.ReadFile("testdata/cyclonedx/" + file)
			if err != nil {
				errOnce = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				errOnce = fmt.Errorf("%s: %w", file, err)
				return
			}
			if err := c.AddResource(url, doc); err != nil {
				errOnce = err
				return
			}
		}
		c.AssertFormat()
		compiled, errOnce = c.Compile(files["bom-1.5.SNAPSHOT.schema.json"])
	})
	return compiled, errOnce
}

// Validate checks doc against the CycloneDX 1.5 schema (formats asserted).
func Validate(t testing.TB, doc []byte) error {
	t.Helper()
	s, err := schema()
	if err != nil {
		t.Fatalf("compiling the CycloneDX schema: %v", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return s.Validate(v)
}
