package pyproject

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	p, err := Parse(`[project]
name = "wf-node-v1"
requires-python = "==3.11.*"
dependencies = ["alpha>=1.0", "Beta_Pkg"]
`)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.Dependencies, []string{"alpha>=1.0", "Beta_Pkg"}) {
		t.Errorf("got %q", p.Dependencies)
	}
	idx := p.DependencyIndex()
	if idx["beta-pkg"] != "Beta_Pkg" || idx["alpha"] != "alpha>=1.0" {
		t.Errorf("got index %v", idx)
	}
	if _, err := Parse("not toml ["); err == nil {
		t.Error("malformed pyproject parsed")
	}
}

func TestLockedVersions(t *testing.T) {
	lock := `version = 1
revision = 3
requires-python = "==3.11.*"

[[package]]
name = "alpha"
version = "1.0.0"
source = { registry = "http://127.0.0.1/simple" }

[[package]]
name = "numpy"
version = "2.0.0"
source = { registry = "http://127.0.0.1/simple" }

[[package]]
name = "numpy"
version = "1.26.4"
source = { registry = "http://127.0.0.1/simple" }

[[package]]
name = "wf-node-v1"
version = "0.1.0"
source = { virtual = "." }
`
	got, err := LockedVersions(lock)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alpha": "1.0.0", "numpy": "1.26.4, 2.0.0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	if got, err := LockedVersions(""); err != nil || len(got) != 0 {
		t.Errorf("empty lock: got %v, %v", got, err)
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{"Scikit_Learn": "scikit-learn", "zope.interface": "zope-interface", "a--b__c": "a-b-c", "Alpha": "alpha", "Foo.._-Bar": "foo-bar"} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q; want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"numpy>=1.24": "numpy", " pandas [sql] ; x": "pandas", "zope.interface(>=5)": "zope.interface", "-e .": "", "": ""} {
		if got := RequirementName(in); got != want {
			t.Errorf("RequirementName(%q) = %q; want %q", in, got, want)
		}
	}
	for in, want := range map[string]bool{"numpy": true, "a": true, "scikit-learn": true, "numpy>=1": false, "-r": false, "x-": false} {
		if got := IsName(in); got != want {
			t.Errorf("IsName(%q) = %v; want %v", in, got, want)
		}
	}
}

func TestSetName(t *testing.T) {
	const head = "[project]\n"
	tests := []struct {
		name, in, want string
		changed        bool
		wantErr        bool
	}{
		{name: "renames", in: head + "name = \"google-api-core\"\nversion = \"0.1.0\"\n",
			want: head + "name = \"envfabric-env-x\"\nversion = \"0.1.0\"\n", changed: true},
		{name: "keeps comments and other tables", in: "[tool.x]\nname = \"keep\"\n" + head + "  name = 'old' # c\r\ndependencies = []\n",
			want: "[tool.x]\nname = \"keep\"\n" + head + "  name = \"envfabric-env-x\" # c\r\ndependencies = []\n", changed: true},
		{name: "already named", in: head + "name = \"envfabric-env-x\"\n", want: head + "name = \"envfabric-env-x\"\n"},
		{name: "no name", in: head + "version = \"1\"\n", wantErr: true},
		{name: "not toml", in: "[project\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed, err := SetName(tt.in, "envfabric-env-x")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v; want error: %v", err, tt.wantErr)
			}
			if got != tt.want || changed != tt.changed {
				t.Errorf("got %q, %v; want %q, %v", got, changed, tt.want, tt.changed)
			}
		})
	}
}
