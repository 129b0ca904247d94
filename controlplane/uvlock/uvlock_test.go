package uvlock

import (
	"os"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	b, err := os.ReadFile("testdata/uv.lock")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if l.Root.Name != "envfabric-env-0123456789abcdef0123456789abcdef" || len(l.Root.Dependencies) != 4 {
		t.Errorf("root = %+v; want the virtual project with 4 dependencies", l.Root)
	}
	var got []string
	for _, p := range l.Packages {
		s := p.Name + "==" + p.Version
		if p.Direct {
			s += "(direct)"
		}
		got = append(got, s)
	}
	want := "certifi==2024.2.2 charset-normalizer==3.3.2 idna==3.6(direct) numpy==1.26.4(direct) numpy==2.0.0(direct) requests==2.31.0(direct) urllib3==2.2.1"
	if g := strings.Join(got, " "); g != want {
		t.Errorf("packages = %q; want %q", g, want)
	}
	idna, _ := l.Resolve(Dependency{Name: "idna"})
	if len(idna.Hashes) != 2 || idna.Hashes[0].Kind != "sdist" || !strings.HasPrefix(idna.Hashes[1].Hash, "sha256:c05567") {
		t.Errorf("idna hashes = %+v; want the sdist's then the wheel's", idna.Hashes)
	}
	if idna.Registry != "http://127.0.0.1:8000/simple" {
		t.Errorf("idna registry = %q", idna.Registry)
	}
	if np, ok := l.Resolve(Dependency{Name: "numpy", Version: "1.26.4"}); !ok || np.Version != "1.26.4" {
		t.Errorf("Resolve(numpy 1.26.4) = %+v, %v", np, ok)
	}
	if _, err := Parse("[[package]\nname="); err == nil {
		t.Error("Parse of broken TOML: no error")
	}
	if l, err := Parse(""); err != nil || len(l.Packages) != 0 {
		t.Errorf("Parse(\"\") = %+v, %v; want an empty lock", l, err)
	}
}
