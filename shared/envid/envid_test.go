package envid

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var validateTests = []struct {
	in      string
	wantErr string
}{
	{in: "workflow123"},
	{in: "a"},
	{in: "wf_1.node-2"},
	{in: strings.Repeat("x", MaxLen)},
	{in: "", wantErr: "empty"},
	{in: strings.Repeat("x", MaxLen+1), wantErr: "longer"},
	{in: ".", wantErr: "start and end"},
	{in: "..", wantErr: "start and end"},
	{in: ".hidden", wantErr: "start and end"},
	{in: "trailing-", wantErr: "start and end"},
	{in: "a/b", wantErr: "only letters"},
	{in: `a\b`, wantErr: "only letters"},
	{in: "a b", wantErr: "only letters"},
	{in: "a\x00b", wantErr: "only letters"},
	{in: "naïve", wantErr: "only letters"},
	{in: "ｗｆ", wantErr: "only letters"}, // full-width look-alikes
	{in: "wа", wantErr: "only letters"}, // Cyrillic a
	{in: "wf\u200b", wantErr: "only letters"},
	{in: "wf\u202e", wantErr: "only letters"},
	{in: "wf\xff", wantErr: "only letters"},
	{in: "a\nb", wantErr: "only letters"},
	{in: "a:b", wantErr: "only letters"},
	{in: "-rf", wantErr: "start and end"},
	{in: "~root", wantErr: "only letters"},
	{in: "$HOME", wantErr: "only letters"},
	{in: "a%2Fb", wantErr: "only letters"},
}

func TestValidateID(t *testing.T) {
	for _, tt := range validateTests {
		t.Run(tt.in, func(t *testing.T) {
			err := ValidateID("workflow_id", tt.in)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("ValidateID(%q) = %v; want nil", tt.in, err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ValidateID(%q) = %v; want an error mentioning %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestDirNeverCollides(t *testing.T) {
	// The TRD's "_"-joined layout maps these to one directory; here they must differ.
	a := Key{"a_b", "c", "v1"}.Dir("/envs")
	b := Key{"a", "b_c", "v1"}.Dir("/envs")
	if a == b {
		t.Fatalf("%q and %q collide", a, b)
	}
	k, err := New("wf", "node", "")
	if err != nil || k.VersionID != DefaultVersion {
		t.Fatalf("New with no version = %v, %v; want version %q", k, err, DefaultVersion)
	}
	if got := k.Dir("/envs"); got != filepath.Join("/envs", "wf", "node", DefaultVersion) {
		t.Errorf("Dir = %q", got)
	}
}

func FuzzKeyDir(f *testing.F) {
	f.Add("wf", "node", "v1")
	f.Add("..", "a/b", ".")
	for _, tt := range validateTests {
		f.Add(tt.in, "node", "v1")
		f.Add("wf", tt.in, "")
	}
	f.Fuzz(func(t *testing.T, wf, node, version string) {
		k := Key{wf, node, version}
		if k.Validate() != nil {
			return
		}
		for _, id := range []string{wf, node, version} {
			for i := 0; i < len(id); i++ {
				if c := id[i]; c >= 0x80 || c <= ' ' || strings.IndexByte(`/\:%~$`, c) >= 0 {
					t.Fatalf("valid id %q holds %q", id, c)
				}
			}
			if len(id) > MaxLen || strings.Contains(id, "..") && (id == ".." || strings.HasPrefix(id, ".")) {
				t.Fatalf("valid id %q", id)
			}
		}
		dir := k.Dir("/base")
		rel, err := filepath.Rel("/base", dir)
		if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 2 {
			t.Fatalf("valid key %v maps to %q, outside /base/<wf>/<node>/<version>", k, dir)
		}
	})
}

// TestProjectName: the reserved project name is in PEP 503 normal form, is what its comment says
// it is, is the same for every key (so identical requirements give identical files), and is never
// the ids' own spelling (which could be a real distribution a dependency needs).
func TestProjectName(t *testing.T) {
	normalize := func(s string) string {
		return strings.ToLower(regexp.MustCompile(`[-_.]+`).ReplaceAllString(s, "-"))
	}
	sum := sha256.Sum256([]byte("envfabric environment"))
	if want := ProjectNamePrefix + hex.EncodeToString(sum[:16]); ProjectName != want {
		t.Errorf("ProjectName = %q; want %q", ProjectName, want)
	}
	if ProjectName != normalize(ProjectName) {
		t.Errorf("got %q; want a name already in PEP 503 normal form", ProjectName)
	}
	tests := []struct {
		key      Key
		shadowed string // a real distribution the old wf-node-version name spelled
	}{
		{Key{"google", "api", "core"}, "google-api-core"},
		{Key{"google", "cloud", "storage"}, "google-cloud-storage"},
		{Key{"Google", "API", "Core"}, "google-api-core"},
		{Key{"a_b", "c", "v1"}, "a-b-c-v1"},
		{Key{"a", "b_c", "v1"}, "a-b-c-v1"},
	}
	for _, tt := range tests {
		t.Run(tt.key.String(), func(t *testing.T) {
			if got := tt.key.ProjectName(); got != ProjectName {
				t.Errorf("got %q; want the one reserved name %q", got, ProjectName)
			}
			if normalize(ProjectName) == tt.shadowed {
				t.Errorf("%q normalises to the distribution %s", ProjectName, tt.shadowed)
			}
		})
	}
}
