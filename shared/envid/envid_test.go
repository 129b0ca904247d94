package envid

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
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
	}
	for _, tt := range tests {
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
	f.Fuzz(func(t *testing.T, wf, node, version string) {
		k := Key{wf, node, version}
		if k.Validate() != nil {
			return
		}
		dir := k.Dir("/base")
		rel, err := filepath.Rel("/base", dir)
		if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 2 {
			t.Fatalf("valid key %v maps to %q, outside /base/<wf>/<node>/<version>", k, dir)
		}
	})
}
