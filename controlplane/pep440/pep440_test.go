package pep440

import (
	"strings"
	"testing"
)

func TestParseNormalises(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"1.0", "1.0"},
		{"v2.0RC1", "2.0rc1"},
		{"1.0-r1", "1.0.post1"},
		{"1.0-1", "1.0.post1"},
		{"1.0.post", "1.0.post0"},
		{"1.0a", "1.0a0"},
		{"1.0alpha1", "1.0a1"},
		{"1.0.beta.2", "1.0b2"},
		{"1.0c1", "1.0rc1"},
		{"1.0-preview-2", "1.0rc2"},
		{"1.0.dev", "1.0.dev0"},
		{"1.0_dev-3", "1.0.dev3"},
		{"1!2.0", "1!2.0"},
		{"0!1.0", "1.0"},
		{"1.0+ubuntu-1", "1.0+ubuntu.1"},
		{"1.0+Ubuntu_1.2", "1.0+ubuntu.1.2"},
		{" 1.2.3 ", "1.2.3"},
		{"1.0rc1.post2.dev3+local.7", "1.0rc1.post2.dev3+local.7"},
		{"007.08", "7.8"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			v, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := v.String(); got != tt.want {
				t.Errorf("Parse(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, in := range []string{"", "abc", "1.0.", "1..0", "1.0+", "1.0+local!", "1.0 2", "1.*", "==1.0",
		"1.0a1b2", "1" + strings.Repeat(".1", 40), "9999999999999999999"} {
		t.Run(in, func(t *testing.T) {
			if v, err := Parse(in); err == nil {
				t.Errorf("Parse(%q) = %q; want an error", in, v)
			}
		})
	}
}

// TestOrder is PEP 440's own example of the order of versions ("Summary of permitted suffixes
// and relative ordering"), with epochs and local labels added.
func TestOrder(t *testing.T) {
	ordered := []string{
		"1.dev0",
		"1.0.dev456",
		"1.0a1",
		"1.0a2.dev456",
		"1.0a12.dev456",
		"1.0a12",
		"1.0b1.dev456",
		"1.0b2",
		"1.0b2.post345.dev456",
		"1.0b2.post345",
		"1.0rc1.dev456",
		"1.0rc1",
		"1.0",
		"1.0+abc.5",
		"1.0+abc.7",
		"1.0+5",
		"1.0.post456.dev34",
		"1.0.post456",
		"1.0.15",
		"1.1.dev1",
		"1.1",
		"2.0",
		"10.0",
		"1!0.1",
		"1!1.0",
	}
	for i := range ordered {
		for j := range ordered {
			a, b := MustParse(ordered[i]), MustParse(ordered[j])
			want := cmpInt(i, j)
			if got := a.Compare(b); got != want {
				t.Errorf("Compare(%q, %q) = %d; want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	equal := [][2]string{{"1.0", "1.0.0"}, {"1.0", "1.0.0.0"}, {"1.0a1", "1.0.0a1"}, {"1.0.post1", "1.0-1"}, {"0!1.0", "1.0"}, {"1.0+A", "1.0+a"}}
	for _, p := range equal {
		if !MustParse(p[0]).Equal(MustParse(p[1])) {
			t.Errorf("%q and %q are not equal; want equal", p[0], p[1])
		}
	}
}

// TestSpecifierMatches covers each operator with PEP 440's examples ("Version specifiers").
func TestSpecifierMatches(t *testing.T) {
	tests := []struct {
		spec    string
		version string
		want    bool // Installed: by the operators alone, pre-releases included
	}{
		// Compatible release: ~=2.2 is >=2.2,==2.*; ~=1.4.5 is >=1.4.5,==1.4.*.
		{"~=2.2", "2.2", true},
		{"~=2.2", "2.9.1", true},
		{"~=2.2", "3.0", false},
		{"~=2.2", "2.1", false},
		{"~=1.4.5", "1.4.5", true},
		{"~=1.4.5", "1.4.9", true},
		{"~=1.4.5", "1.5.0", false},
		{"~=2.2.post3", "2.2.post3", true},
		{"~=2.2.post3", "2.2", false},
		{"~=2.2.post3", "2.9", true},
		{"~=1.4.5a4", "1.4.5", true},
		{"~=1.4.5a4", "1.4.5a3", false},
		{"~=1.4.5a4", "1.5", false},
		{"~=2.2.0", "2.2.7", true},
		{"~=2.2.0", "2.3", false},
		{"~=1!1.1", "1!1.5", true},
		{"~=1!1.1", "1.5", false},
		// Version matching: "1.1.post1" against ==1.1, ==1.1.post1, ==1.1.*.
		{"==1.1", "1.1.post1", false},
		{"==1.1.post1", "1.1.post1", true},
		{"==1.1.*", "1.1.post1", true},
		{"==1.1", "1.1.0", true},
		{"==1.1.0", "1.1", true},
		{"==1.1.*", "1.10", false},
		{"==1.1.*", "1.1a1", true},
		{"==1.1.*", "1", false},
		{"==1.0.*", "1", true}, // the candidate is padded with zeros
		{"==1.*", "1.9.9", true},
		{"==1.*", "2.0", false},
		{"==2.0.*", "2.0.0.dev1", true},
		{"==1.0", "1.0+local", true}, // a specifier without a local label ignores the candidate's
		{"==1.0+local", "1.0+local", true},
		{"==1.0+local", "1.0", false},
		{"==1.0+local", "1.0+other", false},
		{"==1!1.0.*", "1!1.0.5", true},
		{"==1!1.0.*", "1.0.5", false},
		// Version exclusion.
		{"!=1.1", "1.1.post1", true},
		{"!=1.1.post1", "1.1.post1", false},
		{"!=1.1.*", "1.1.post1", false},
		{"!=1.1.*", "1.2", true},
		// Inclusive ordered comparison: the candidate's local label is ignored.
		{"<=2.0", "2.0", true},
		{"<=2.0", "2.0+local", true},
		{"<=2.0", "2.0.post1", false},
		{">=2.0", "2.0", true},
		{">=2.0", "1.9", false},
		// Exclusive ordered comparison: >1.7 admits 1.7.1 but not 1.7.0.post1; >1.7.post2 admits
		// 1.7.1 and 1.7.0.post3; <3.7 never admits 3.7's own pre-releases.
		{">1.7", "1.7.1", true},
		{">1.7", "1.7.0.post1", false},
		{">1.7", "1.7", false},
		{">1.7", "1.7+local", false},
		{">1.7.post2", "1.7.1", true},
		{">1.7.post2", "1.7.0.post3", true},
		{">1.7.post2", "1.7.0.post2", false},
		{"<3.7", "3.6.9", true},
		{"<3.7", "3.7rc1", false},
		{"<3.7", "3.7.dev0", false},
		{"<3.7", "3.6rc1", true},
		{"<3.7rc2", "3.7rc1", true},
		{"<3.7", "3.7", false},
		// Arbitrary equality: a string comparison.
		{"===1.0", "1.0", true},
		{"===1.0", "1.0.0", false},
		{"===1.0+Local", "1.0+local", true},
		// Sets.
		{">=1.0,<2,!=1.5.*", "1.4", true},
		{">=1.0,<2,!=1.5.*", "1.5.1", false},
		{">=1.0,<2,!=1.5.*", "2.0", false},
		{"", "9.9", true},
	}
	for _, tt := range tests {
		t.Run(tt.spec+" "+tt.version, func(t *testing.T) {
			s, err := ParseSet(tt.spec)
			if err != nil {
				t.Fatalf("ParseSet(%q): %v", tt.spec, err)
			}
			if got := s.Installed(MustParse(tt.version)); got != tt.want {
				t.Errorf("ParseSet(%q).Installed(%q) = %v; want %v", tt.spec, tt.version, got, tt.want)
			}
		})
	}
}

// TestPrereleaseExclusion: pre-releases are implicitly excluded unless the specifier names one,
// and accepted by Filter when they are the only versions that satisfy it.
func TestPrereleaseExclusion(t *testing.T) {
	tests := []struct {
		spec, version string
		want          bool
	}{
		{">=1.0", "1.1a1", false},
		{">=1.0", "1.1.dev1", false},
		{">=1.0", "1.1", true},
		{">=1.0a1", "1.1a1", true},
		{"==1.1a1", "1.1a1", true},
		{"==1.1.*", "1.1a1", false},
		{"~=1.0rc1", "1.1a1", true},
		{"!=1.0a1", "1.1a1", false}, // exclusion names no pre-release it admits
		{"", "1.1a1", false},
	}
	for _, tt := range tests {
		t.Run(tt.spec+" "+tt.version, func(t *testing.T) {
			s, err := ParseSet(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Contains(MustParse(tt.version)); got != tt.want {
				t.Errorf("ParseSet(%q).Contains(%q) = %v; want %v", tt.spec, tt.version, got, tt.want)
			}
		})
	}
	filter := []struct {
		spec     string
		versions []string
		want     string
	}{
		{">=1.0", []string{"0.9", "1.0", "1.1a1", "1.1"}, "1.0 1.1"},
		{">=1.5", []string{"1.0", "2.0a1", "2.0b1"}, "2.0a1 2.0b1"}, // only pre-releases satisfy it
		{">=3.0", []string{"1.0", "2.0a1"}, ""},
	}
	for _, tt := range filter {
		t.Run("filter "+tt.spec, func(t *testing.T) {
			var vs []Version
			for _, v := range tt.versions {
				vs = append(vs, MustParse(v))
			}
			var got []string
			for _, v := range MustSet(t, tt.spec).Filter(vs) {
				got = append(got, v.String())
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("Filter(%q, %v) = %q; want %q", tt.spec, tt.versions, g, tt.want)
			}
		})
	}
}

func MustSet(t *testing.T, s string) Set {
	t.Helper()
	set, err := ParseSet(s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestParseSetRefuses(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1.0", "not a version specifier"},
		{"=1.0", "not a version specifier"},
		{">=1.*", ".* follows only == and !="},
		{"~=1.*", ".* follows only == and !="},
		{"~=1", "two parts"},
		{">=1.0+local", "no local version"},
		{"~=1.0+local", "no local version"},
		{"==1.0+local.*", "public version"},
		{"==1.0.dev1.*", "public version"},
		{"==abc", "not a PEP 440 version"},
		{">=1.0,", "not a version specifier"},
		{">=1.0 <2", "not a version specifier"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseSet(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSet(%q) = %v; want an error containing %q", tt.in, err, tt.want)
			}
		})
	}
	if s := MustSet(t, " >= 1.0 , != 1.5.* ,<2 ").String(); s != ">=1.0,!=1.5.*,<2" {
		t.Errorf("String() = %q; want %q", s, ">=1.0,!=1.5.*,<2")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1.0", "1!2.0rc1.post2.dev3+local.7", "v1.0-r1", "1.0a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			return
		}
		// The normalised form parses back to an equal version with the same form.
		w, err := Parse(v.String())
		if err != nil || !w.Equal(v) || w.String() != v.String() {
			t.Fatalf("%q -> %q -> %q (%v)", s, v.String(), w.String(), err)
		}
	})
}

func FuzzParseSet(f *testing.F) {
	for _, s := range []string{">=1.0,<2", "~=1.4.5", "==1.*", "===x"} {
		f.Add(s, "1.4.6")
	}
	f.Fuzz(func(t *testing.T, spec, version string) {
		s, err := ParseSet(spec)
		if err != nil {
			return
		}
		if v, err := Parse(version); err == nil {
			_ = s.Contains(v)
		}
	})
}
