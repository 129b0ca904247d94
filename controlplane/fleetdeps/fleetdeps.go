// Package fleetdeps answers the dependency questions of a whole fleet from the database: which
// environments hold a package (in a PEP 440 range), which are hit by a known advisory (offline
// OSV data), and the SBOM of one environment. It reads the store's package index (one row set
// per distinct lock) and evaluates versions in Go: the distinct versions of a name are few, so
// a specifier or an advisory's ranges are evaluated over them once, and only the environments
// holding a matching version are read, paged by key.
package fleetdeps

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/pep440"
	"github.com/envfabric/envfabric/controlplane/sbom"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/uvlock"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// Store is what the service reads.
type Store interface {
	store.PackageIndex
	GetEnv(ctx context.Context, key envid.Key) (store.Env, error)
	GetRevision(ctx context.Context, key envid.Key, n int64) (store.Revision, error)
}

// Service answers the questions. It is safe for concurrent use.
type Service struct {
	st      Store
	current func() *osv.DB
	version string
	log     *slog.Logger
	now     func() time.Time
}

// New makes a Service; advisories returns the advisories loaded now (nil: none), version is the
// control plane's, written into SBOMs.
func New(st Store, advisories func() *osv.DB, version string, log *slog.Logger) *Service {
	if advisories == nil {
		empty := osv.Empty()
		advisories = func() *osv.DB { return empty }
	}
	return &Service{st: st, current: advisories, version: version, log: log, now: time.Now}
}

// Advisories is the advisory DB loaded now.
func (s *Service) Advisories() *osv.DB {
	if db := s.current(); db != nil {
		return db
	}
	return osv.Empty()
}

func dbErr(what string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	return errcode.Wrap(errcode.DBAuditError, err, what+": the database failed: "+err.Error())
}

// Holder is one environment holding a package.
type Holder struct {
	Key     envid.Key
	Version string
	Direct  bool
}

// HoldersPage is one page of the environments holding a package.
type HoldersPage struct {
	Name    string // normalised
	Holders []Holder
	// Next is the cursor of the next page (the last environment of this one); zero when this
	// page is the last.
	Next envid.Key
}

// MaxLimit bounds a page.
const MaxLimit = 1000

// Holders pages the environments whose current lock holds package name in a version matching
// specifier (every version when empty), by key after after. Versions already locked are what
// is asked about, so pre-releases match as PEP 440 says of versions "already present on the
// system" (>=1.0 matches an installed 1.1rc1). An environment whose lock holds the name at
// several matching versions (markers) has one entry per version.
func (s *Service) Holders(ctx context.Context, name, specifier string, after envid.Key, limit int) (HoldersPage, error) {
	if !pyproject.IsName(name) {
		return HoldersPage{}, errcode.New(errcode.InvalidRequest, fmt.Sprintf("%q is not a package name", name))
	}
	set, err := pep440.ParseSet(specifier)
	if err != nil {
		return HoldersPage{}, errcode.Wrap(errcode.InvalidRequest, err, "specifier: "+err.Error())
	}
	limit = min(max(limit, 1), MaxLimit)
	page := HoldersPage{Name: pyproject.Normalize(name), Holders: []Holder{}}
	rows, err := s.st.PackageLocks(ctx, []string{page.Name})
	if err != nil {
		return page, dbErr("reading the package index", err)
	}
	// Each distinct version is evaluated once.
	match := map[string]bool{}
	byLock := map[string][]store.LockPackage{}
	for _, r := range rows {
		ok, seen := match[r.Version]
		if !seen {
			v, err := pep440.Parse(r.Version)
			ok = err == nil && set.Installed(v) || err != nil && len(set) == 0
			match[r.Version] = ok
		}
		if ok {
			byLock[r.LockDigest] = append(byLock[r.LockDigest], r)
		}
	}
	if len(byLock) == 0 {
		return page, nil
	}
	envs, err := s.st.EnvsByLock(ctx, sortedKeys(byLock), after, limit+1)
	if err != nil {
		return page, dbErr("reading the package index", err)
	}
	more := len(envs) > limit
	if more {
		envs = envs[:limit]
		page.Next = envs[len(envs)-1].Key
	}
	for _, e := range envs {
		for _, p := range byLock[e.LockDigest] {
			page.Holders = append(page.Holders, Holder{Key: e.Key, Version: p.Version, Direct: p.Direct})
		}
	}
	return page, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Installed is one environment holding an affected version.
type Installed struct {
	Key     envid.Key
	Package string
	Version string
}

// AffectedPackage is one package of an advisory as the fleet holds it.
type AffectedPackage struct {
	Name string
	// Versions are the affected versions held in the fleet; Fixed the versions that fix it.
	Versions []string
	Fixed    []string
}

// Finding is one advisory hitting the fleet.
type Finding struct {
	Advisory *osv.Advisory
	Packages []AffectedPackage
	// EnvCount is how many current environments hold an affected version; Envs the first of
	// them by key (at most the limit asked for).
	EnvCount int
	Envs     []Installed
}

// hits is, for the fleet's package versions, the advisories affecting each lock.
type hits struct {
	// byAdvisory: advisory id → the affected index rows.
	byAdvisory map[string][]store.LockPackage
	adv        map[string]*osv.Advisory
	fixed      map[[2]string][]string // advisory id, package → fixed versions
}

// fleetHits evaluates every advisory against the distinct package versions of the index.
func (s *Service) fleetHits(ctx context.Context, db *osv.DB) (hits, error) {
	h := hits{byAdvisory: map[string][]store.LockPackage{}, adv: map[string]*osv.Advisory{}, fixed: map[[2]string][]string{}}
	names := db.Packages()
	if len(names) == 0 {
		return h, nil
	}
	versions, err := s.st.PackageVersions(ctx, nil)
	if err != nil {
		return h, dbErr("reading the package index", err)
	}
	affected := map[[2]string][]osv.Match{} // (name, version) → advisories
	var wanted []string
	for name, vs := range versions {
		for _, v := range vs {
			if ms := db.Affecting(name, v); len(ms) > 0 {
				if _, ok := affected[[2]string{name, ""}]; !ok {
					affected[[2]string{name, ""}] = nil
					wanted = append(wanted, name)
				}
				affected[[2]string{name, v}] = ms
			}
		}
	}
	if len(wanted) == 0 {
		return h, nil
	}
	sort.Strings(wanted)
	rows, err := s.st.PackageLocks(ctx, wanted)
	if err != nil {
		return h, dbErr("reading the package index", err)
	}
	for _, r := range rows {
		for _, m := range affected[[2]string{r.Name, r.Version}] {
			id := m.Advisory.ID
			h.adv[id] = m.Advisory
			h.byAdvisory[id] = append(h.byAdvisory[id], r)
			h.fixed[[2]string{id, r.Name}] = m.Fixed
		}
	}
	return h, nil
}

// Vulnerabilities lists every advisory that hits at least one current environment, the most
// severe first (then the most environments), each with up to envLimit environments by key.
func (s *Service) Vulnerabilities(ctx context.Context, envLimit int) ([]Finding, error) {
	envLimit = min(max(envLimit, 0), MaxLimit)
	h, err := s.fleetHits(ctx, s.Advisories())
	if err != nil {
		return nil, err
	}
	if len(h.byAdvisory) == 0 {
		return []Finding{}, nil
	}
	counts, err := s.st.LockEnvCounts(ctx)
	if err != nil {
		return nil, dbErr("counting environments by lock", err)
	}
	out := []Finding{}
	for id, rows := range h.byAdvisory {
		f := Finding{Advisory: h.adv[id], Envs: []Installed{}}
		locks := map[string][]store.LockPackage{}
		pkgs := map[string]map[string]bool{}
		for _, r := range rows {
			if counts[r.LockDigest] == 0 {
				continue // a lock no current environment has
			}
			locks[r.LockDigest] = append(locks[r.LockDigest], r)
			if pkgs[r.Name] == nil {
				pkgs[r.Name] = map[string]bool{}
			}
			pkgs[r.Name][r.Version] = true
		}
		if len(locks) == 0 {
			continue
		}
		for d := range locks {
			f.EnvCount += counts[d]
		}
		for _, name := range sortedKeys(pkgs) {
			f.Packages = append(f.Packages, AffectedPackage{Name: name, Versions: sortVersions(sortedKeys(pkgs[name])), Fixed: nonNil(h.fixed[[2]string{id, name}])})
		}
		if envLimit > 0 {
			envs, err := s.st.EnvsByLock(ctx, sortedKeys(locks), envid.Key{}, envLimit)
			if err != nil {
				return nil, dbErr("reading the package index", err)
			}
			for _, e := range envs {
				for _, p := range locks[e.LockDigest] {
					f.Envs = append(f.Envs, Installed{Key: e.Key, Package: p.Name, Version: p.Version})
				}
			}
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Finding) int {
		return cmp.Or(-cmp.Compare(osv.Rank(a.Advisory.Severity), osv.Rank(b.Advisory.Severity)),
			-cmp.Compare(a.EnvCount, b.EnvCount), cmp.Compare(a.Advisory.ID, b.Advisory.ID))
	})
	return out, nil
}

// EnvFinding is one advisory hitting one environment.
type EnvFinding struct {
	Advisory *osv.Advisory
	Package  string
	Version  string
	Fixed    []string
}

// EnvVulnerabilities lists the advisories hitting key's current lock, the most severe first.
func (s *Service) EnvVulnerabilities(ctx context.Context, key envid.Key) ([]EnvFinding, error) {
	if _, err := s.env(ctx, key); err != nil {
		return nil, err
	}
	pkgs, err := s.st.EnvPackages(ctx, key)
	if err != nil {
		return nil, s.keyErr(key, "reading the package index", err)
	}
	db := s.Advisories()
	out := []EnvFinding{}
	for _, p := range pkgs {
		for _, m := range db.Affecting(p.Name, p.Version) {
			out = append(out, EnvFinding{Advisory: m.Advisory, Package: p.Name, Version: p.Version, Fixed: nonNil(m.Fixed)})
		}
	}
	slices.SortFunc(out, func(a, b EnvFinding) int {
		return cmp.Or(-cmp.Compare(osv.Rank(a.Advisory.Severity), osv.Rank(b.Advisory.Severity)),
			cmp.Compare(a.Advisory.ID, b.Advisory.ID), cmp.Compare(a.Package, b.Package))
	})
	return out, nil
}

// SBOM is the CycloneDX document of key's current lock.
func (s *Service) SBOM(ctx context.Context, key envid.Key) (sbom.BOM, error) {
	if _, err := s.env(ctx, key); err != nil {
		return sbom.BOM{}, err
	}
	rev, err := s.st.GetRevision(ctx, key, 0)
	if err != nil {
		return sbom.BOM{}, s.keyErr(key, "reading the current revision", err)
	}
	lock, err := uvlock.Parse(rev.UvLock)
	if err != nil {
		return sbom.BOM{}, errcode.Wrap(errcode.Internal, err, fmt.Sprintf("the uv.lock of %s revision %d: %v", key, rev.Number, err))
	}
	return sbom.Generate(lock, sbom.Subject{Name: key.String(), Revision: rev.Number, LockDigest: store.Digest(rev.UvLock),
		Tool: "envfabric-controlplane", ToolVer: s.version, Time: s.now()}), nil
}

// env reads key: ENV_NOT_FOUND when there is none, ENV_NOT_READY while it has no revision.
func (s *Service) env(ctx context.Context, key envid.Key) (store.Env, error) {
	e, err := s.st.GetEnv(ctx, key)
	if err != nil {
		return e, s.keyErr(key, "reading the environment", err)
	}
	if e.Revision == 0 {
		return e, errcode.New(errcode.EnvNotReady, fmt.Sprintf("environment %s has no revision yet (%s)", key, e.State))
	}
	return e, nil
}

func (s *Service) keyErr(key envid.Key, what string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errcode.Wrap(errcode.EnvNotFound, err, fmt.Sprintf("environment %s not found", key))
	}
	return dbErr(what, err)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// sortVersions orders versions by PEP 440 (strings that are not versions last, as strings).
func sortVersions(vs []string) []string {
	slices.SortFunc(vs, func(a, b string) int {
		va, ea := pep440.Parse(a)
		vb, eb := pep440.Parse(b)
		switch {
		case ea == nil && eb == nil:
			return va.Compare(vb)
		case ea == nil:
			return -1
		case eb == nil:
			return 1
		}
		return cmp.Compare(a, b)
	})
	return vs
}
