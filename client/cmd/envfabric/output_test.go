package main

import (
	"bytes"
	"regexp"
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

func ptr(s string) *string { return &s }

// lines is out without trailing spaces on each line (tabwriter pads the last column).
func lines(out string) string {
	ls := strings.Split(strings.TrimSpace(out), "\n")
	for i, l := range ls {
		ls[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(ls, "\n")
}

// TestDryRunTable: every locked package a change would touch, null as "-", and what it is.
func TestDryRunTable(t *testing.T) {
	var out bytes.Buffer
	c := &cli{stdout: &out}
	c.printDryRun("update", &client.DryRunResult{DepsResult: client.DepsResult{WorkflowID: "wf", NodeID: "n", VersionID: "v1", Revision: 4,
		Dependencies: []string{"alpha>=2", "beta"}}, DryRun: true,
		Changes: []client.PackageChange{{Name: "alpha", From: ptr("1.0.0"), To: ptr("2.0.0")}, {Name: "beta", To: ptr("1.0.0")}, {Name: "gamma", From: ptr("0.1")}}})
	want := strings.Join([]string{
		"dry run of update on wf/n/v1: 3 locked packages would change; nothing was changed (revision 4 stays current)",
		"PACKAGE  FROM   TO     CHANGE",
		"alpha    1.0.0  2.0.0  changed",
		"beta     -      1.0.0  added",
		"gamma    0.1    -      removed",
		"dependencies after it: alpha>=2, beta",
	}, "\n")
	if got := lines(out.String()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	out.Reset()
	c.printDryRun("add", &client.DryRunResult{DepsResult: client.DepsResult{WorkflowID: "wf", NodeID: "n", VersionID: "v1", Revision: 2}, DryRun: true})
	if got := lines(out.String()); got != "dry run of add on wf/n/v1: 0 locked packages would change; nothing was changed (revision 2 stays current)\ndependencies after it: (none)" {
		t.Errorf("a dry run that changes nothing printed\n%s", got)
	}
}

// TestStatusBuild: the status table's build rows for each thing verifying can find.
func TestStatusBuild(t *testing.T) {
	tests := []struct {
		name  string
		build *client.Build
		id    string
		want  []string // rows the table has, spaces squeezed
		not   string   // a row it must not have
	}{
		{name: "intact and shared", id: "b1", build: &client.Build{ID: "b1", State: "READY", PackagesInstalled: 2, SharedWith: 9, Verified: true, Intact: true, FilesChecked: 40},
			want: []string{"build b1 (READY), 2 packages, shared with 9 other environments", "build check intact (40 files checked against their RECORD)"}, not: "damaged"},
		{name: "damaged", id: "b2", build: &client.Build{ID: "b2", State: "DAMAGED", PackagesInstalled: 1, Verified: true, FilesChecked: 12,
			Damaged: []client.PackageDamage{{Name: "delta", Version: "0.1.0", Missing: []string{"delta/__init__.py", "delta/a.py", "delta/b.py"}, MissingCount: 5, WrongSize: []string{"delta/c.py"}, WrongSizeCount: 1}}},
			want: []string{"build b2 (DAMAGED), 1 package, shared with 0 other environments",
				"build check DAMAGED: 1 package with missing or wrong-size files (12 files checked); `envfabric sync` replaces the build",
				"damaged delta 0.1.0: 5 missing, 1 wrong size (delta/__init__.py, delta/a.py, delta/b.py, … 3 more)"}},
		{name: "hibernated", id: "b3", build: &client.Build{ID: "b3", State: "REMOVED", SharedWith: 1},
			want: []string{"build b3 (REMOVED), 0 packages, shared with 1 other environment", "build check not verified: the build is not on disk (hibernated"}},
		{name: "the layout before builds", want: []string{"build - (the layout before builds"}, not: "build check"},
	}
	squeeze := regexp.MustCompile(` {2,}`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c := &cli{stdout: &out}
			c.printStatus(&client.Status{EnvView: client.EnvView{WorkflowID: "wf", NodeID: "n", VersionID: "v1", Revision: 2, BuildID: tt.id}, Build: tt.build})
			got := squeeze.ReplaceAllString(out.String(), " ")
			for _, w := range tt.want {
				if !strings.Contains(got, "\n"+w) {
					t.Errorf("no row %q in\n%s", w, got)
				}
			}
			if tt.not != "" && strings.Contains(got, "\n"+tt.not) {
				t.Errorf("a row %q in\n%s", tt.not, got)
			}
		})
	}
}

// TestCleanupBuilds: cleanup's builds after its environments, each line its own bytes.
func TestCleanupBuilds(t *testing.T) {
	var out bytes.Buffer
	c := &cli{stdout: &out}
	c.printCleanup(&client.CleanupResult{IdleHours: 72, BytesFreed: 3 << 20,
		Removed:       []client.CleanupEntry{{WorkflowID: "wf", NodeID: "n", VersionID: "v1", BytesFreed: 1 << 20}},
		BuildsRemoved: []client.BuildEntry{{BuildID: "b1", BytesFreed: 2 << 20}},
		BuildsSkipped: []client.BuildEntry{{BuildID: "b2", CurrentEnvs: 0, Reason: "in_use"}}})
	got := lines(out.String())
	for _, w := range []string{
		"removed 1 environment unused for 72h, freeing 1.0 MiB; skipped 0",
		"removed 1 build no environment's current revision uses, freeing 2.0 MiB; skipped 1 (in all: 3.0 MiB)",
		"BUILD  ENVIRONMENTS  LAST USED  FREED    OUTCOME",
		"b1     0             -          2.0 MiB  removed",
		"b2     0             -          -        skipped: in_use",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("no line %q in\n%s", w, got)
		}
	}
}

func TestSyncOutput(t *testing.T) {
	for _, tt := range []struct {
		r    client.SyncResult
		want string
	}{
		{client.SyncResult{Status: "synced", WorkflowID: "wf", NodeID: "n", VersionID: "v1", Revision: 3, PackagesInstalled: 2, BuildID: "b"},
			"synced wf/n/v1: revision 3, 2 packages installed"},
		{client.SyncResult{Status: "synced", WorkflowID: "wf", NodeID: "n", VersionID: "v1", Revision: 3, PackagesInstalled: 2, BuildID: "b", Repaired: true, Rebuilt: true},
			"synced wf/n/v1: revision 3, 2 packages installed\nrepaired: the build was damaged and was replaced by a fresh one (build b)"},
		{client.SyncResult{Status: "synced", WorkflowID: "wf", NodeID: "n", VersionID: "v1", Revision: 3, PackagesInstalled: 1, BuildID: "b", Rebuilt: true},
			"synced wf/n/v1: revision 3, 1 package installed\nrebuilt: the build was not on disk and was materialised again (build b)"},
	} {
		var out bytes.Buffer
		c := &cli{stdout: &out}
		c.printSync(&tt.r)
		if got := lines(out.String()); got != tt.want {
			t.Errorf("got\n%s\nwant\n%s", got, tt.want)
		}
	}
}

// TestHistoryTable: the revision each operation committed or ran against (what rollback takes),
// and dry runs marked as such.
func TestHistoryTable(t *testing.T) {
	var out bytes.Buffer
	c := &cli{stdout: &out}
	c.printHistory(&client.History{Operations: []client.Operation{
		{ID: 3, Operation: "rollback", Status: "succeeded", Actor: "me", Agent: "a1", Params: map[string]any{"revision": 1.0}, Result: map[string]any{"revision": 3.0}},
		{ID: 2, Operation: "add", Status: "succeeded", Actor: "me", Agent: "a1", Params: map[string]any{"dry_run": true}, Result: map[string]any{"base_revision": 2.0}},
		{ID: 1, Operation: "add", Status: "failed", Actor: "me", ErrorCode: "PACKAGE_RESOLUTION_FAILED"},
	}})
	squeeze := regexp.MustCompile(` {2,}`)
	got := strings.Split(squeeze.ReplaceAllString(lines(out.String()), "|"), "\n")
	want := []string{
		"ID|OPERATION|STATUS|ACTOR|AGENT|STARTED|DURATION|REVISION|ERROR",
		"3|rollback|succeeded|me|a1|",
		"2|add (dry run)|succeeded|me|a1|",
		"1|add|failed|me|-|",
	}
	wantEnd := []string{"", "|0s|3|-", "|0s|-|-", "|0s|-|PACKAGE_RESOLUTION_FAILED"}
	for i := range want {
		if i >= len(got) || !strings.HasPrefix(got[i], want[i]) || !strings.HasSuffix(got[i], wantEnd[i]) {
			t.Fatalf("history table:\n%s\nwant rows starting %q and ending %q", strings.Join(got, "\n"), want, wantEnd)
		}
	}
}

func TestDependencyTables(t *testing.T) {
	var out bytes.Buffer
	c := &cli{stdout: &out}
	c.printHolders("alpha", "<1.1", []client.PackageHolder{{WorkflowID: "wf", NodeID: "old", VersionID: "v1", Version: "1.0.0", Direct: true},
		{WorkflowID: "wf", NodeID: "two", VersionID: "v1", Version: "1.0.0"}})
	want := "alpha <1.1: 2 environments\nWORKFLOW  NODE  VERSION  INSTALLED  DIRECT\nwf        old   v1       1.0.0      yes\nwf        two   v1       1.0.0      no"
	if got := lines(out.String()); got != want {
		t.Errorf("holders:\n%s\nwant\n%s", got, want)
	}

	out.Reset()
	crit := client.Advisory{ID: "GHSA-1", Aliases: []string{"CVE-1"}, Summary: "alpha evaluates input", Severity: "CRITICAL", CVSSScore: 9.8}
	c.printVulnerabilities(5, []client.FleetVulnerability{{Advisory: crit, EnvironmentCount: 3,
		Packages:     []client.AffectedPackage{{Name: "alpha", AffectedVersions: []string{"1.0.0"}, FixedVersions: []string{"1.1.0"}}},
		Environments: []client.InstalledPackage{{WorkflowID: "wf", NodeID: "old", VersionID: "v1", Package: "alpha", Version: "1.0.0"}}},
		{Advisory: client.Advisory{ID: "PYSEC-4", Severity: "LOW"}, EnvironmentCount: 1, Packages: []client.AffectedPackage{{Name: "gamma"}},
			Environments: []client.InstalledPackage{{WorkflowID: "wf", NodeID: "g", VersionID: "v1", Package: "gamma", Version: "0.9"}}}})
	got := lines(out.String())
	for _, w := range []string{
		"2 advisories hit the fleet (5 loaded from OSV_DATA)",
		"ADVISORY  SEVERITY      PACKAGE  INSTALLED  FIXED IN  ENVIRONMENT",
		"GHSA-1    CRITICAL 9.8  alpha    1.0.0      1.1.0     wf/old/v1",
		"GHSA-1    CRITICAL 9.8                                … 2 environments more (--env-limit)",
		"PYSEC-4   LOW           gamma    0.9        no fix    wf/g/v1",
		"GHSA-1: alpha evaluates input (CVE-1)",
		"PYSEC-4:",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("no line %q in\n%s", w, got)
		}
	}

	out.Reset()
	c.printVulnerabilities(0, nil)
	if got := lines(out.String()); !strings.Contains(got, "0 advisories hit the fleet (0 loaded from OSV_DATA)\nno advisories are loaded") {
		t.Errorf("no advisories loaded:\n%s", got)
	}

	out.Reset()
	c.printEnvVulnerabilities(&client.EnvVulnerabilitiesResult{WorkflowID: "wf", NodeID: "old", VersionID: "v1",
		Vulnerabilities: []client.EnvVulnerability{{Advisory: crit, Package: "alpha", Version: "1.0.0", FixedVersions: []string{"1.1.0"}}}})
	want = "wf/old/v1: 1 known vulnerability\nADVISORY  SEVERITY      PACKAGE  INSTALLED  FIXED IN\nGHSA-1    CRITICAL 9.8  alpha    1.0.0      1.1.0\nGHSA-1: alpha evaluates input (CVE-1)"
	if got := lines(out.String()); got != want {
		t.Errorf("an environment's vulnerabilities:\n%s\nwant\n%s", got, want)
	}
}
