package client

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/controlplane/api"
	"github.com/envfabric/envfabric/controlplane/hostdeps"
)

// jsonFields are the JSON names of a struct's fields, embedded structs flattened as encoding/json
// does.
func jsonFields(t reflect.Type) []string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestWireTypesMatchTheAPI: the client defines the API's answers again (it must not link the
// control plane), so this keeps each one's JSON fields those of the server's type. A field added
// to a response in controlplane/api fails here until the client has it too.
func TestWireTypesMatchTheAPI(t *testing.T) {
	pairs := []struct {
		server, client any
	}{
		{api.CreatedEnv{}, CreatedEnv{}},
		{api.DepsResult{}, DepsResult{}},
		{api.DryRunResult{}, DryRunResult{}},
		{api.PackageChange{}, PackageChange{}},
		{api.RollbackResult{}, RollbackResult{}},
		{api.PreloadResult{}, PreloadResult{}},
		{api.SyncResult{}, SyncResult{}},
		{api.ExportResult{}, ExportResult{}},
		{api.RunResponse{}, runWire{}},
		{api.DeleteResult{}, DeleteResult{}},
		{api.EnvView{}, EnvView{}},
		{api.Status{}, Status{}},
		{api.Disk{}, Disk{}},
		{api.Build{}, Build{}},
		{api.PackageDamage{}, PackageDamage{}},
		{api.ListResult{}, ListResult{}},
		{api.OperationView{}, Operation{}},
		{api.History{}, History{}},
		{api.CleanupEntry{}, CleanupEntry{}},
		{api.CleanupResult{}, CleanupResult{}},
		{api.BuildEntry{}, BuildEntry{}},
		{api.AgentsResponse{}, Agents{}},
		{api.AgentEntry{}, Agent{}},
		{api.Interpreter{}, Interpreter{}},
		{hostdeps.Applied{}, HostConstraint{}},
	}
	for _, p := range pairs {
		st, ct := reflect.TypeOf(p.server), reflect.TypeOf(p.client)
		t.Run(st.String(), func(t *testing.T) {
			if got, want := jsonFields(ct), jsonFields(st); !slices.Equal(got, want) {
				t.Errorf("client.%s has fields %q;\nthe API's %s has %q", ct.Name(), got, st, want)
			}
		})
	}
}

// TestWireTypesMatchTheDocument: the answers and request bodies whose server types are not
// exported are checked against controlplane/api/openapi.json instead (which the API's own tests
// keep true to what it serves): each client type has the JSON fields of its schema.
func TestWireTypesMatchTheDocument(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "controlplane", "api", "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	// at walks from a named schema through properties ("name") and array items ("name[]").
	at := func(t *testing.T, path string) []string {
		t.Helper()
		parts := strings.Split(path, ".")
		s, ok := doc.Components.Schemas[parts[0]]
		if !ok {
			t.Fatalf("openapi.json has no schema %s", parts[0])
		}
		for _, p := range parts[1:] {
			name, items := strings.CutSuffix(p, "[]")
			props, _ := s["properties"].(map[string]any)
			if s, ok = props[name].(map[string]any); !ok {
				t.Fatalf("%s: no property %s", path, name)
			}
			if items {
				if s, ok = s["items"].(map[string]any); !ok {
					t.Fatalf("%s: %s is not an array", path, name)
				}
			}
		}
		props, _ := s["properties"].(map[string]any)
		names := slices.Sorted(maps.Keys(props))
		if len(names) == 0 {
			t.Fatalf("%s: no properties", path)
		}
		return names
	}
	pairs := []struct {
		schema string
		client any
		drop   []string // the schema's fields the client sends another way
	}{
		{schema: "CreateJSON", client: CreateRequest{}},
		{schema: "CreateJSON.from", client: Env{}},
		{schema: "PackagesBody", client: packagesBody{}, drop: []string{"version_id"}}, // sent as ?version_id=
		{schema: "PackageEnvironments", client: HoldersResult{}},
		{schema: "PackageEnvironments.environments[]", client: PackageHolder{}},
		{schema: "FleetVulnerabilities", client: VulnerabilitiesResult{}},
		{schema: "FleetVulnerabilities.vulnerabilities[]", client: FleetVulnerability{}},
		{schema: "FleetVulnerabilities.vulnerabilities[].packages[]", client: AffectedPackage{}},
		{schema: "FleetVulnerabilities.vulnerabilities[].environments[]", client: InstalledPackage{}},
		{schema: "EnvVulnerabilities", client: EnvVulnerabilitiesResult{}},
		{schema: "EnvVulnerabilities.vulnerabilities[]", client: EnvVulnerability{}},
		{schema: "Error.error.denied", client: Denial{}},
	}
	for _, p := range pairs {
		t.Run(p.schema, func(t *testing.T) {
			want := slices.DeleteFunc(at(t, p.schema), func(f string) bool { return slices.Contains(p.drop, f) })
			if got := jsonFields(reflect.TypeOf(p.client)); !slices.Equal(got, want) {
				t.Errorf("%T has fields %q;\nopenapi.json's %s has %q", p.client, got, p.schema, want)
			}
		})
	}
}
