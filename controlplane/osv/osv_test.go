package osv_test

import (
	"context"
	"log/slog"
	"maps"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/osv/osvtest"
)

func ids(ms []osv.Match) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Advisory.ID)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestAffecting(t *testing.T) {
	dir := t.TempDir()
	osvtest.WriteDir(t, filepath.Join(dir, "records"))
	osvtest.WriteZip(t, filepath.Join(dir, "all.zip"), nil)
	for _, src := range []string{"records", "all.zip"} {
		t.Run(src, func(t *testing.T) {
			db, err := osv.Load(filepath.Join(dir, src))
			if err != nil {
				t.Fatal(err)
			}
			if db.Records != 3 || db.Withdrawn != 2 || len(db.Bad) != 0 {
				t.Errorf("records %d, withdrawn or not PyPI %d, bad %v; want 3, 2, none", db.Records, db.Withdrawn, db.Bad)
			}
			tests := []struct {
				name, version, want string
			}{
				{"alpha", "1.0.0", "GHSA-aaaa-1111-2222"},
				{"ALPHA", "0.9", "GHSA-aaaa-1111-2222"},
				{"alpha", "1.1.0", ""},
				{"alpha", "1.1.0rc1", "GHSA-aaaa-1111-2222"}, // a pre-release of the fix is before it
				{"alpha", "1.9", ""},
				{"alpha", "2.0.0", "GHSA-aaaa-1111-2222"}, // the second range, up to last_affected
				{"alpha", "2.0", "GHSA-aaaa-1111-2222"},   // PEP 440 equality, not string equality
				{"alpha", "2.0.1", ""},
				{"delta", "0.1.0", "PYSEC-2099-2"},
				{"delta", "0.1.5", "PYSEC-2099-2"},
				{"delta", "0.2.0", ""},
				{"delta", "0.0.9", ""},
				{"beta", "1.0.0", ""}, // withdrawn
				{"gamma", "1.0.0", ""},
				{"gamma", "0.9", "PYSEC-2099-4"},
				{"alpha", "not-a-version", ""},
				{"nothing", "1.0", ""},
			}
			for _, tt := range tests {
				if got := ids(db.Affecting(tt.name, tt.version)); got != tt.want {
					t.Errorf("Affecting(%s, %s) = %q; want %q", tt.name, tt.version, got, tt.want)
				}
			}
			a, ok := db.Advisory("GHSA-aaaa-1111-2222")
			if !ok || a.Severity != osv.Critical || a.Score != 9.8 || strings.Join(a.Aliases, ",") != "CVE-2099-0001,PYSEC-2099-1" {
				t.Errorf("GHSA-aaaa-1111-2222 = %+v; want CRITICAL 9.8 with its aliases", a)
			}
			if m := db.Affecting("alpha", "1.0.0"); len(m) != 1 || strings.Join(m[0].Fixed, ",") != "1.1.0" {
				t.Errorf("alpha 1.0.0 fixed = %+v; want [1.1.0]", m)
			}
			if a, _ := db.Advisory("PYSEC-2099-2"); a.Severity != osv.Medium || a.Summary != "delta 0.1.0 leaks memory." {
				t.Errorf("PYSEC-2099-2 = %+v; want MEDIUM from the package's MODERATE, summary from details", a)
			}
			if a, _ := db.Advisory("PYSEC-2099-4"); a.Severity != osv.Low || a.Score != 1.8 {
				t.Errorf("PYSEC-2099-4 = %v %v; want LOW 1.8", a.Severity, a.Score)
			}
		})
	}
}

func TestBadRecordsAreSkipped(t *testing.T) {
	recs := maps.Clone(osvtest.Records)
	recs["broken.json"] = `{"id": `
	recs["noid.json"] = `{"summary": "x"}`
	recs["README.txt"] = `not a record`
	path := filepath.Join(t.TempDir(), "all.zip")
	osvtest.WriteZip(t, path, recs)
	db, err := osv.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if db.Records != 3 || len(db.Bad) != 2 {
		t.Errorf("records %d, bad %v; want 3 and the two broken records", db.Records, db.Bad)
	}
	if _, err := osv.Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Load of a missing path: no error")
	}
}

func TestCVSS3Score(t *testing.T) {
	tests := []struct {
		vector string
		want   float64
	}{
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1},
		{"CVSS:3.1/AV:L/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 6.2}, // CVE-2024-3651 (idna)
		{"CVSS:3.0/AV:N/AC:H/PR:L/UI:N/S:U/C:L/I:N/A:N", 3.1},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O", 9.8},
	}
	for _, tt := range tests {
		got, err := osv.CVSS3Score(tt.vector)
		if err != nil || got != tt.want {
			t.Errorf("CVSS3Score(%q) = %v, %v; want %v", tt.vector, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "CVSS:2.0/AV:N", "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"} {
		if _, err := osv.CVSS3Score(bad); err == nil {
			t.Errorf("CVSS3Score(%q): no error", bad)
		}
	}
}

// TestWatcherReloads: a changed OSV_DATA is loaded again; a broken one keeps what was loaded.
func TestWatcherReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "all.zip")
	osvtest.WriteZip(t, path, nil)
	loads := make(chan *osv.DB, 10)
	w, err := osv.NewWatcher(path, 10*time.Millisecond, func(db *osv.DB) { loads <- db }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	<-loads
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	if got := ids(w.Current().Affecting("beta", "1.0.0")); got != "" {
		t.Fatalf("beta before the change: %q; want none", got)
	}
	recs := maps.Clone(osvtest.Records)
	recs["PYSEC-2099-3.json"] = strings.Replace(recs["PYSEC-2099-3.json"], `"withdrawn": "2099-01-05T00:00:00Z",`, "", 1)
	osvtest.WriteZip(t, path, recs)
	db := <-loads
	if got := ids(db.Affecting("beta", "1.0.0")); got != "PYSEC-2099-3" {
		t.Errorf("beta after the record was reinstated: %q; want PYSEC-2099-3", got)
	}
	if w.Current() != db || w.Reloads() != 1 {
		t.Errorf("Current is not the reloaded DB (reloads %d)", w.Reloads())
	}
	if _, err := osv.NewWatcher(filepath.Join(t.TempDir(), "missing.zip"), time.Second, nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("NewWatcher on a missing path: no error")
	}
}
