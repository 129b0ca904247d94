package hostdeps

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/controlplane/reqspec"
)

func TestApply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pyproject.toml")
	host := `[project]
name = "platform"
dependencies = ["fastapi>=0.128.0", "pydantic>=2,<3", "uvicorn", "tomli>=1; python_version < \"3.11\""]
`
	if err := os.WriteFile(path, []byte(host), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, want string
		applied  bool
	}{
		{in: "fastapi", want: "fastapi>=0.128.0", applied: true},
		{in: "FastAPI", want: "FastAPI>=0.128.0", applied: true},
		{in: "fastapi==0.100.0", want: "fastapi==0.100.0"}, // explicit specifiers win
		{in: "pydantic[email]", want: "pydantic[email]>=2,<3", applied: true},
		{in: "uvicorn", want: "uvicorn"}, // the host does not constrain it
		{in: "numpy", want: "numpy"},
		{in: "tomli", want: `tomli>=1; python_version < "3.11"`, applied: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := reqspec.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got, applied := c.Apply([]reqspec.Requirement{r})
			if got[0] != tt.want {
				t.Errorf("Apply(%q) = %q; want %q", tt.in, got[0], tt.want)
			}
			if (len(applied) == 1) != tt.applied {
				t.Errorf("Apply(%q) reported %v; want applied=%v", tt.in, applied, tt.applied)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	if c, err := Load(""); err != nil || c.Len() != 0 {
		t.Errorf("Load(\"\") = %v, %v; want no constraints", c, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil || !strings.Contains(err.Error(), "reading host pyproject") {
		t.Errorf("got %v; want a read error", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[project\n"), 0o644)
	if _, err := Load(bad); err == nil {
		t.Error("a malformed host pyproject loaded")
	}
}
