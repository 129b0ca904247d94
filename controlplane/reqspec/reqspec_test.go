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
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want an error mentioning %q", tt.in, r, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := r.String(); got != tt.want {
				t.Errorf("Parse(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
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

func TestParseRequirementsFile(t *testing.T) {
	tests := []struct {
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
	}
	for _, tt := range tests {
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
	f.Add("numpy>=1\n-r x\n")
	f.Add("a \\\n>=1 # c\n")
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
