package client

import (
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
