package depintel_test

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/depintel"
	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/osv/osvtest"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/controlplane/store/storetest"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

type fixture struct {
	st  store.Store
	svc *depintel.Service
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "fabric.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir := t.TempDir()
	osvtest.WriteDir(t, dir)
	db, err := osv.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{st: st, svc: depintel.New(st, func() *osv.DB { return db }, "test", log)}
}

// commit makes key's current lock hold direct and indirect ("name==version").
func (f *fixture) commit(t *testing.T, key envid.Key, direct []string, indirect ...string) {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	env, err := f.st.GetEnv(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		if err := f.st.CreateEnv(ctx, store.Env{Key: key, State: store.StateCreating}, now); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	l, err := f.st.AcquireLease(ctx, store.LeaseRequest{Key: key, Mode: store.LeaseChange, Holder: "t", TTL: time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer f.st.ReleaseLease(ctx, l.ID)
	if _, err := f.st.CommitRevision(ctx, store.Commit{Key: key, LeaseID: l.ID, Base: env.Revision, Now: now, State: store.StateActive,
		PyprojectTOML: "pyproject", UvLock: storetest.LockOf(direct, indirect...)}); err != nil {
		t.Fatal(err)
	}
}

func key(wf, node string) envid.Key { return envid.Key{WorkflowID: wf, NodeID: node, VersionID: "v1"} }

func holders(p depintel.HoldersPage) string {
	var out []string
	for _, h := range p.Holders {
		s := h.Key.WorkflowID + "/" + h.Key.NodeID + "=" + h.Version
		if h.Direct {
			s += "*"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// TestFleet: environments with affected and unaffected versions told apart, the package query
// with and without a specifier, and its pages.
func TestFleet(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.commit(t, key("wf1", "a"), []string{"alpha==1.0.0"})                   // GHSA-aaaa (first range)
	f.commit(t, key("wf1", "b"), []string{"alpha==1.1.0"})                   // fixed
	f.commit(t, key("wf1", "c"), []string{"beta==2.0.0"}, "alpha==2.0.0")    // GHSA-aaaa (second range), beta withdrawn
	f.commit(t, key("wf2", "a"), []string{"delta==0.1.0", "gamma==1.0.0"})   // PYSEC-2099-2; gamma fixed
	f.commit(t, key("wf2", "b"), []string{"epsilon==1.0.0"}, "delta==0.2.0") // nothing
	f.commit(t, key("wf2", "c"), []string{"alpha==1.0.0"})                   // the same lock as wf1/a
	f.commit(t, key("wf1", "b"), []string{"alpha==1.1.0", "delta==0.1.0"})   // wf1/b's newer revision

	tests := []struct {
		name, spec, want string
	}{
		{"alpha", "", "wf1/a=1.0.0* wf1/b=1.1.0* wf1/c=2.0.0 wf2/c=1.0.0*"},
		{"Alpha", "<1.1", "wf1/a=1.0.0* wf2/c=1.0.0*"},
		{"alpha", ">=1.1,!=2.*", "wf1/b=1.1.0*"},
		{"alpha", "~=2.0", "wf1/c=2.0.0"},
		{"alpha", "==3.*", ""},
		{"delta", "", "wf1/b=0.1.0* wf2/a=0.1.0* wf2/b=0.2.0"}, // wf1/b's current revision only
		{"nothing", "", ""},
	}
	for _, tt := range tests {
		p, err := f.svc.Holders(ctx, tt.name, tt.spec, envid.Key{}, 100)
		if err != nil {
			t.Fatal(err)
		}
		if got := holders(p); got != tt.want || p.Next != (envid.Key{}) {
			t.Errorf("Holders(%s%s) = %q (next %v); want %q, no next page", tt.name, tt.spec, got, p.Next, tt.want)
		}
	}
	// Pages of two.
	var pages []string
	var after envid.Key
	for {
		p, err := f.svc.Holders(ctx, "alpha", "", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, holders(p))
		if p.Next == (envid.Key{}) {
			break
		}
		after = p.Next
	}
	if got := strings.Join(pages, " | "); got != "wf1/a=1.0.0* wf1/b=1.1.0* | wf1/c=2.0.0 wf2/c=1.0.0*" {
		t.Errorf("pages = %q", got)
	}
	for _, bad := range [][2]string{{"alpha", "=>1"}, {"alpha", "1.0"}, {"../x", ""}} {
		_, err := f.svc.Holders(ctx, bad[0], bad[1], envid.Key{}, 10)
		if errcode.Of(err) != errcode.InvalidRequest {
			t.Errorf("Holders(%q, %q) = %v; want INVALID_REQUEST", bad[0], bad[1], err)
		}
	}

	// The fleet's vulnerabilities.
	page, err := f.svc.Vulnerabilities(ctx, depintel.VulnQuery{Limit: 10, EnvLimit: 100})
	if err != nil {
		t.Fatal(err)
	}
	found := page.Findings
	var got []string
	for _, fd := range found {
		var envs []string
		for _, e := range fd.Envs {
			envs = append(envs, fmt.Sprintf("%s/%s:%s=%s", e.Key.WorkflowID, e.Key.NodeID, e.Package, e.Version))
		}
		got = append(got, fmt.Sprintf("%s %s %d [%s] %v fixed %v", fd.Advisory.ID, fd.Advisory.Severity, fd.EnvCount, strings.Join(envs, " "),
			fd.Packages[0].Versions, fd.Packages[0].Fixed))
	}
	want := []string{
		"GHSA-aaaa-1111-2222 CRITICAL 3 [wf1/a:alpha=1.0.0 wf1/c:alpha=2.0.0 wf2/c:alpha=1.0.0] [1.0.0 2.0.0] fixed [1.1.0]",
		"PYSEC-2099-2 MEDIUM 2 [wf1/b:delta=0.1.0 wf2/a:delta=0.1.0] [0.1.0] fixed [0.2.0]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Vulnerabilities =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	p1, err := f.svc.Vulnerabilities(ctx, depintel.VulnQuery{Limit: 1, EnvLimit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(p1.Findings) != 1 || len(p1.Findings[0].Envs) != 1 || p1.Findings[0].EnvCount != 3 || p1.Next == nil {
		t.Fatalf("a page of 1 advisory with 1 environment: %+v", p1)
	}
	p2, err := f.svc.Vulnerabilities(ctx, depintel.VulnQuery{Limit: 1, EnvLimit: 1, After: *p1.Next})
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Findings) != 1 || p2.Findings[0].Advisory.ID != "PYSEC-2099-2" || p2.Next != nil {
		t.Errorf("the second page: %+v; want PYSEC-2099-2 and no next page", p2)
	}

	// One environment's.
	for k, want := range map[envid.Key]string{
		key("wf1", "a"): "GHSA-aaaa-1111-2222 alpha 1.0.0",
		key("wf1", "b"): "PYSEC-2099-2 delta 0.1.0",
		key("wf1", "c"): "GHSA-aaaa-1111-2222 alpha 2.0.0",
		key("wf2", "b"): "",
	} {
		fs, err := f.svc.EnvVulnerabilities(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, fd := range fs {
			got = append(got, fd.Advisory.ID+" "+fd.Package+" "+fd.Version)
		}
		if strings.Join(got, ",") != want {
			t.Errorf("EnvVulnerabilities(%s) = %q; want %q", k, strings.Join(got, ","), want)
		}
	}
	if _, err := f.svc.EnvVulnerabilities(ctx, key("no", "such")); errcode.Of(err) != errcode.EnvNotFound {
		t.Errorf("EnvVulnerabilities of a missing environment: %v; want ENV_NOT_FOUND", err)
	}

	// The metric: each vulnerable environment under its worst severity.
	counts, err := f.svc.VulnerableEnvs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[osv.Critical] != 3 || counts[osv.Medium] != 2 || counts[osv.High] != 0 || counts[osv.Low] != 0 {
		t.Errorf("VulnerableEnvs = %v; want CRITICAL 3, MEDIUM 2", counts)
	}

	// An upgrade moves the environment out of the advisory, in the next answer (what the view
	// keeps between requests follows the database).
	f.commit(t, key("wf1", "a"), []string{"alpha==1.1.0"})
	page, err = f.svc.Vulnerabilities(ctx, depintel.VulnQuery{Limit: 1, EnvLimit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if fd := page.Findings[0]; fd.EnvCount != 2 || len(fd.Envs) != 2 || fd.Envs[0].Key != key("wf1", "c") {
		t.Errorf("after wf1/a upgraded alpha: %d environments %+v; want wf1/c and wf2/c", fd.EnvCount, fd.Envs)
	}
}
