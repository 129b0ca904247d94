package pkgpolicy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/osv/osvtest"
	"github.com/envfabric/envfabric/controlplane/pkgpolicy"
	"github.com/envfabric/envfabric/controlplane/store/storetest"
	"github.com/envfabric/envfabric/controlplane/uvlock"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheck(t *testing.T) {
	pol, err := pkgpolicy.Load(write(t, `
[[deny]]
package = "Requests"
specifier = "<2.32"
reason = "CVE-2024-35195"

[[deny]]
package = "evil"

[advisories]
deny_severity = "high"
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	osvtest.WriteDir(t, dir)
	db, err := osv.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		lock   []string
		want   string // the rule; "" for allowed
		reason string
	}{
		{"allowed", []string{"requests==2.32.0", "alpha==1.1.0", "delta==0.1.0"}, "", ""},
		{"specifier", []string{"idna==3.7", "requests==2.31.0"}, "requests<2.32", "CVE-2024-35195"},
		{"a locked pre-release counts", []string{"requests==2.31.0rc1"}, "requests<2.32", "CVE-2024-35195"},
		{"<2.32 does not take 2.32's own pre-releases (PEP 440)", []string{"requests==2.32.0rc1"}, "", ""},
		{"every version", []string{"evil==0.0.1"}, "evil", ""},
		{"advisory at least high", []string{"alpha==1.0.0"}, "advisories: severity >= HIGH", "GHSA-aaaa-1111-2222, CRITICAL, fixed in 1.1.0"},
		{"advisory below the bar", []string{"delta==0.1.0", "gamma==0.5"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lock, err := uvlock.Parse(storetest.LockOf(tt.lock[:1], tt.lock[1:]...))
			if err != nil {
				t.Fatal(err)
			}
			d := pol.Check(lock, db)
			switch {
			case tt.want == "" && d != nil:
				t.Errorf("Check = %s; want allowed", d)
			case tt.want != "" && (d == nil || d.Rule != tt.want || d.Reason != tt.reason):
				t.Errorf("Check = %+v; want rule %q, reason %q", d, tt.want, tt.reason)
			}
		})
	}
	var zero *pkgpolicy.Policy
	if d := zero.Check(uvlock.Lock{}, db); d != nil || !zero.Empty() {
		t.Errorf("the nil policy denies %v", d)
	}
}

func TestLoadRefuses(t *testing.T) {
	tests := []struct{ body, want string }{
		{"[[deny]]\npackage = \"../x\"\n", "not a package name"},
		{"[[deny]]\npackage = \"x\"\nspecifier = \"=>1\"\n", "specifier"},
		{"[[deny]]\npackage = \"x\"\nversion = \"1\"\n", "version"},
		{"[advisories]\ndeny_severity = \"SEVERE\"\n", "deny_severity"},
		{"[[deny]\n", "PACKAGE_POLICY"},
	}
	for _, tt := range tests {
		if _, err := pkgpolicy.Load(write(t, tt.body)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%q) = %v; want an error about %q", tt.body, err, tt.want)
		}
	}
	if _, err := pkgpolicy.Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("Load of a missing file: no error")
	}
	if p, err := pkgpolicy.Load(""); err != nil || !p.Empty() {
		t.Errorf("Load(\"\") = %v, %v; want the empty policy", p, err)
	}
}
