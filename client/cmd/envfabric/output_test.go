package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/client"
)

// TestDepsTable: one row per locked package, the direct ones with what was asked for, matched by
// PEP 503 name whatever the spelling of the request.
func TestDepsTable(t *testing.T) {
	var out bytes.Buffer
	c := &cli{stdout: &out}
	c.printDeps(&client.DepsResult{WorkflowID: "wf", NodeID: "n", VersionID: "v1", Revision: 3, Status: "added",
		Dependencies:   []string{"Scikit_Learn>=1.0", "numpy<2 ; python_version >= '3.9'", "gone==1"},
		LockedVersions: map[string]string{"scikit-learn": "1.5.0", "numpy": "1.26.4", "joblib": "1.4.2"}})
	want := []string{
		"added wf/n/v1: revision 3",
		"PACKAGE       LOCKED  REQUESTED",
		"gone          -       gone==1",
		"joblib        1.4.2   (dependency)",
		"numpy         1.26.4  numpy<2 ; python_version >= '3.9'",
		"scikit-learn  1.5.0   Scikit_Learn>=1.0",
	}
	if got := strings.Split(strings.TrimSpace(out.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 139752: "136.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q; want %q", n, got, want)
		}
	}
}
