package reqspec

import (
	"strings"
	"testing"
)

var parseTests = []struct {
	in      string
	want    string // canonical form; empty means an error is expected
	wantErr string
}{
	{in: "numpy", want: "numpy"},
	{in: "numpy>=1.24.0", want: "numpy>=1.24.0"},
	{in: " pandas >= 2.0 , < 3 ", want: "pandas>=2.0,<3"},
	{in: "requests[socks,security]~=2.31", want: "requests[socks,security]~=2.31"},
	{in: "torch==2.0.0", want: "torch==2.0.0"},
	{in: "scikit-learn>=1.0", want: "scikit-learn>=1.0"},
	{in: "zope.interface(>=5)", want: "zope.interface>=5"},
	{in: `tomli>=1; python_version < "3.11"`, want: `tomli>=1; python_version < "3.11"`},
	{in: "foo===1.0.post1", want: "foo===1.0.post1"},
	{in: "", wantErr: "empty"},
	{in: "--index-url=http://evil", wantErr: "option"},
	{in: "-e .", wantErr: "option"},
	{in: "-rrequirements.txt", wantErr: "option"},
	{in: "pkg @ https://example.invalid/pkg.whl", wantErr: "URL"},
	{in: "git+https://example.invalid/x.git", wantErr: "URL"},
	{in: "./local/pkg", wantErr: "path"},
	{in: "../pkg", wantErr: "path"},
	{in: "/abs/pkg.whl", wantErr: "path"},
	{in: "pkg>=${VERSION}", wantErr: "variable"},
	{in: "numpy>=1;rm -rf /", wantErr: "path"},
	{in: "numpy=1.0", wantErr: "specifier"},
	{in: "numpy 1.0", wantErr: "specifier"},
	{in: "numpy[", wantErr: "extras"},
	{in: "_numpy", wantErr: "package name"},
	{in: "numpy\n--index-url x", wantErr: "control"},
	{in: strings.Repeat("a", MaxSpecLen+1), wantErr: "longer"},
	{in: "numpy; ", wantErr: "marker"},
	// PEP 440 versions, checked.
	{in: "numpy==1.24.*", want: "numpy==1.24.*"},
	{in: "numpy!=1.*", want: "numpy!=1.*"},
	{in: "numpy>=1.0rc1", want: "numpy>=1.0rc1"},
	{in: "numpy==1!2.0.post3.dev4", want: "numpy==1!2.0.post3.dev4"},
	{in: "numpy==1.0+local.7", want: "numpy==1.0+local.7"},
	{in: "numpy>=1.0+local", wantErr: "local version"},
	{in: "numpy>=1.*", wantErr: "not a PEP 440 version"},
	{in: "numpy==abc", wantErr: "not a PEP 440 version"},
	{in: "numpy===arbitrary", wantErr: "not a version"},
	{in: `numpy; python_version === "3.11"`, wantErr: "unknown operator"},
	{in: "numpy~=1", wantErr: "two parts"},
	{in: "numpy==1.0.*.1", wantErr: "specifier"},
	{in: "numpy==99999999999999999999999", wantErr: "not a PEP 440 version"},
	{in: "numpy>=1,", wantErr: "specifier"},
	{in: "numpy>=1 <2", wantErr: "specifier"},
	{in: "numpy[x]junk", wantErr: "specifier"},
	{in: "numpy[x y]", wantErr: "extra"},
	// Markers, checked against PEP 508's grammar.
	{in: `numpy; python_version>="3.8" and (os_name=='posix' or sys_platform != "win32")`, want: `numpy; python_version >= "3.8" and (os_name == "posix" or sys_platform != "win32")`},
	{in: `numpy; "linux" in sys_platform`, want: `numpy; "linux" in sys_platform`},
	{in: `numpy; sys_platform not in "win32 cygwin"`, want: `numpy; sys_platform not in "win32 cygwin"`},
	{in: `numpy; python_version >= "abc"`, wantErr: "marker"},
	{in: `numpy; (((`, wantErr: "marker"},
	{in: `numpy; os_name == "posix" or`, wantErr: "marker"},
	{in: `numpy; os.system == "x"`, wantErr: "unknown marker variable"},
	{in: `numpy; __import__ == "os"`, wantErr: "unknown marker variable"},
	{in: `numpy; os_name == "posix`, wantErr: "unterminated"},
	{in: `numpy; os_name == os_name`, wantErr: "one variable and one string"},
	{in: `numpy; os_name not "x"`, wantErr: "'not' must be followed by 'in'"},
	{in: `numpy; ` + strings.Repeat("(", 10) + `os_name == "a"` + strings.Repeat(")", 10), wantErr: "nested"},
	// Look-alikes and bytes that are not text.
	{in: "nump\u0443", wantErr: "ASCII"},     // Cyrillic у
	{in: "numpy\u200b", wantErr: "ASCII"},    // zero-width space
	{in: "numpy\u00a0>=1", wantErr: "ASCII"}, // no-break space
	{in: "numpy\uff1e=1", wantErr: "ASCII"},  // fullwidth >
	{in: "numpy\xff", wantErr: "ASCII"},      // not UTF-8 at all
	{in: "numpy\x00>=1", wantErr: "control"},
	{in: "numpy\x7f", wantErr: "control"},
	{in: "numpy\t>=1", wantErr: "control"},
	{in: "numpy\u2215pkg", wantErr: "ASCII"}, // division slash
	// Ways to smuggle a source that is not the index.
	{in: "numpy @ file:///etc/passwd", wantErr: "URL"},
	{in: "numpy@git+https://example.invalid/x", wantErr: "URL"},
	{in: "git+ssh://git@example.invalid/x.git", wantErr: "URL"},
	{in: "~/pkg", wantErr: "path"},
	{in: "C:\\pkg.whl", wantErr: "path"},
	{in: "pkg.whl/", wantErr: "path"},
	{in: ".", wantErr: "path"},
	{in: "pkg; os_name == \"a/b\"", wantErr: "path"},
	{in: "--extra-index-url", wantErr: "option"},
	{in: "-", wantErr: "option"},
	{in: "numpy>=$VERSION", wantErr: "specifier"},
}

// checkParse parses in and checks the outcome: an error mentioning wantErr, or the canonical form
// want. ok says whether a requirement came back for further checks.
func checkParse(t *testing.T, parse func(string) (Requirement, error), in, want, wantErr string) (r Requirement, ok bool) {
	t.Helper()
	r, err := parse(in)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("Parse(%q) = %v, %v; want an error mentioning %q", in, r, err, wantErr)
		}
		return r, false
	}
	if err != nil {
		t.Fatalf("Parse(%q): %v", in, err)
	}
	if got := r.String(); got != want {
		t.Errorf("Parse(%q) = %q; want %q", in, got, want)
	}
	return r, true
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.in, func(t *testing.T) {
			checkParse(t, Parse, tt.in, tt.want, tt.wantErr)
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.in)
	}
	for _, tt := range policyTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		out := r.String()
		if strings.HasPrefix(out, "-") || strings.Contains(out, "://") || strings.ContainsAny(out, "/\\@\n") {
			t.Fatalf("Parse(%q) accepted %q, which uv could read as more than a requirement", s, out)
		}
		again, err := Parse(out)
		if err != nil || again.String() != out {
			t.Fatalf("canonical form %q does not parse back to itself: %v %q", out, err, again.String())
		}
	})
}

var requirementsFileTests = []struct {
	name    string
	in      string
	want    []string
	wantErr string
}{
	{name: "plain", in: "numpy>=1.24\n\n# comment\npandas  # trailing\n", want: []string{"numpy>=1.24", "pandas"}},
	{name: "continuation", in: "numpy \\\n  >=1.24\n", want: []string{"numpy   >=1.24"}},
	{name: "include", in: "numpy\n-r other.txt\n", wantErr: "line 2: options such as \"-r\""},
	{name: "constraint", in: "-c constraints.txt\n", wantErr: "\"-c\""},
	{name: "editable", in: "-e ./pkg\n", wantErr: "\"-e\""},
	{name: "index", in: "--index-url https://example.invalid/simple\nnumpy\n", wantErr: "--index-url"},
	{name: "url", in: "pkg @ https://example.invalid/p.whl\n", wantErr: "line 1"},
	{name: "env var", in: "numpy==${V}\n", wantErr: "variable"},
	{name: "dangling continuation", in: "numpy \\", wantErr: "continuation"},
	{name: "too big", in: strings.Repeat("a\n", MaxRequirementsFile), wantErr: "larger"},
	{name: "CRLF and BOM", in: "\ufeffnumpy\r\npandas\r\n", want: []string{"numpy", "pandas"}},
	{name: "hash option", in: "numpy==1.0 --hash=sha256:00\n", wantErr: "specifier"},
	{name: "extra index", in: "--extra-index-url https://example.invalid\n", wantErr: "--extra-index-url"},
	{name: "find links", in: "-f ./wheels\n", wantErr: "\"-f\""},
	{name: "NUL", in: "numpy\x00\n", wantErr: "control"},
	{name: "too many", in: strings.Repeat("numpy\n", MaxPackages+1), wantErr: "more than"},
	{name: "comment only", in: "# nothing\n\n", want: nil},
}

func TestParseRequirementsFile(t *testing.T) {
	for _, tt := range requirementsFileTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequirementsFile(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func FuzzParseRequirementsFile(f *testing.F) {
	for _, tt := range requirementsFileTests {
		if len(tt.in) < 4096 {
			f.Add(tt.in)
		}
	}
	for _, tt := range parseTests {
		f.Add(tt.in + "\n")
	}
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := ParseRequirementsFile(s)
		if err != nil {
			return
		}
		for _, sp := range specs {
			if _, err := Parse(sp); err != nil {
				t.Fatalf("returned %q, which does not parse: %v", sp, err)
			}
		}
	})
}

var policyTests = []struct {
	in      string
	want    string
	wantErr string
}{
	{in: "pkg @ https://wheels.example.invalid/simple/pkg-1.0-py3-none-any.whl", want: "pkg @ https://wheels.example.invalid/simple/pkg-1.0-py3-none-any.whl"},
	{in: "pkg[x]@https://wheels.example.invalid/simple/pkg.whl ; os_name == 'posix'", want: `pkg[x] @ https://wheels.example.invalid/simple/pkg.whl ; os_name == "posix"`},
	{in: "pkg @ git+https://git.example.invalid/team/pkg.git@v1.2#subdirectory=py", want: "pkg @ git+https://git.example.invalid/team/pkg.git@v1.2#subdirectory=py"},
	{in: "pkg @ https://wheels.example.invalid/simple/../private/pkg.whl", wantErr: "URL"},
	{in: "pkg @ https://wheels.example.invalid/simple/%2e%2e/pkg.whl", wantErr: "URL"},
	{in: "pkg @ https://wheels.example.invalid/simplex/pkg.whl", wantErr: "URL"},
	{in: "pkg @ https://wheels.example.invalid@evil.invalid/simple/pkg.whl", wantErr: "URL"},
	{in: "pkg @ https://other.invalid/simple/pkg.whl", wantErr: "URL"},
	{in: "pkg @ https://wheels.example.invalid/simple/", wantErr: "URL"},
	{in: "pkg>=1 @ https://wheels.example.invalid/simple/pkg.whl", wantErr: "no version specifier"},
	{in: "pkg @ https://wheels.example.invalid/simple/pkg.whl; os_name == 'posix'", wantErr: "white space"},
	{in: "pkg @ file:///srv/wheels/pkg.whl", want: "pkg @ file:///srv/wheels/pkg.whl"},
	{in: "pkg @ file:///etc/passwd", wantErr: "URL"},
	{in: "./srv/wheels/pkg.whl", wantErr: "path"},
}

func TestPolicyURLs(t *testing.T) {
	p := Policy{URLPrefixes: []string{"https://wheels.example.invalid/simple/", "git+https://git.example.invalid/team/", "file:///srv/wheels/"}}
	for _, pre := range p.URLPrefixes {
		if err := ValidURLPrefix(pre); err != nil {
			t.Fatalf("ValidURLPrefix(%q): %v", pre, err)
		}
	}
	for _, tt := range policyTests {
		t.Run(tt.in, func(t *testing.T) {
			r, ok := checkParse(t, p.Parse, tt.in, tt.want, tt.wantErr)
			if !ok {
				return
			}
			if again, err := p.Parse(r.String()); err != nil || again.String() != r.String() {
				t.Errorf("canonical form %q does not parse back: %v", r.String(), err)
			}
			if _, err := Parse(tt.in); err == nil {
				t.Errorf("the strict zero Policy accepted %q", tt.in)
			}
		})
	}
}

func TestValidURLPrefix(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"https://wheels.example.invalid/", true},
		{"https://wheels.example.invalid", false}, // would admit wheels.example.invalid.evil
		{"https://user:pw@wheels.example.invalid/", false},
		{"ftp://wheels.example.invalid/", false},
		{"https:///nohost/", false},
		{"https://wheels.example.invalid/a/../b/", false},
		{"https://wheels.example.invalid/?x=1/", false},
	}
	for _, tt := range tests {
		if err := ValidURLPrefix(tt.in); (err == nil) != tt.ok {
			t.Errorf("ValidURLPrefix(%q) = %v; want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestParseAllBounds(t *testing.T) {
	many := make([]string, MaxPackages+1)
	for i := range many {
		many[i] = "numpy"
	}
	if _, err := ParseAll(many); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("got %v; want a refusal of %d packages", err, len(many))
	}
	if _, err := ParseAll(many[:MaxPackages]); err != nil {
		t.Errorf("%d packages: %v", MaxPackages, err)
	}
}

// FuzzPolicyParse: with URLs allowed under a prefix, whatever is accepted stays under it.
func FuzzPolicyParse(f *testing.F) {
	for _, tt := range policyTests {
		f.Add(tt.in)
	}
	for _, tt := range parseTests {
		f.Add(tt.in)
	}
	prefix := "https://wheels.example.invalid/simple/"
	p := Policy{URLPrefixes: []string{prefix}}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := p.Parse(s)
		if err != nil {
			return
		}
		if r.URL != "" {
			if !strings.HasPrefix(r.URL, prefix) || strings.ContainsAny(r.URL, " \t\\%") || strings.Contains(r.URL, "/../") || strings.HasSuffix(r.URL, "/..") {
				t.Fatalf("Parse(%q) accepted the URL %q", s, r.URL)
			}
		}
		out := r.String()
		if strings.HasPrefix(out, "-") {
			t.Fatalf("Parse(%q) = %q, an option", s, out)
		}
		again, err := p.Parse(out)
		if err != nil || again.String() != out {
			t.Fatalf("canonical form %q does not parse back to itself: %v %q", out, err, again.String())
		}
	})
}
