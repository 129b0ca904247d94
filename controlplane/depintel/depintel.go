// Package depintel answers the dependency questions of a whole fleet from the database: which
// environments hold a package (in a PEP 440 range), which are hit by a known advisory (offline
// OSV data), and the SBOM of one environment. It reads the store's package index (one row set
// per distinct lock) and evaluates versions in Go: the distinct versions of a name are few, so
// a specifier or an advisory's ranges are evaluated over them once, and only the environments
// holding a matching version are read, paged by key.
package depintel

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
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
	mu      sync.Mutex
	locks   map[string][]store.LockPackage // lock digest → its index rows (immutable)
	memoDB  *osv.DB
	memo    map[string][]lockHit // lock digest → advisories hitting it, for memoDB
	samples map[string]*sample   // lock digest → its first environments

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
	return &Service{locks: map[string][]store.LockPackage{}, samples: map[string]*sample{}, st: st, current: advisories, version: version, log: log, now: time.Now}
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

// hits is, for the locks of the current environments, the advisories affecting each.
type hits struct {
	// byAdvisory: advisory id → the affected index rows.
	byAdvisory map[string][]store.LockPackage
	adv        map[string]*osv.Advisory
	fixed      map[[2]string][]string // advisory id, package → fixed versions
	// refs: lock digest → the environments whose current lock it is.
	refs map[string]store.LockRef
}

// lockPackages returns the index rows of digests. A lock's content never changes, so its rows
// are cached for the life of the process (bounded: a few thousand distinct locks at most in a
// fleet; the cache is dropped when it grows past maxCachedLocks).
func (s *Service) lockPackages(ctx context.Context, digests []string) (map[string][]store.LockPackage, error) {
	out := make(map[string][]store.LockPackage, len(digests))
	var missing []string
	s.mu.Lock()
	for _, d := range digests {
		if rows, ok := s.locks[d]; ok {
			out[d] = rows
		} else {
			missing = append(missing, d)
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := s.st.LockPackagesOf(ctx, missing)
	if err != nil {
		return nil, dbErr("reading the package index", err)
	}
	loaded := make(map[string][]store.LockPackage, len(missing))
	for _, d := range missing {
		loaded[d] = []store.LockPackage{}
	}
	for _, r := range rows {
		loaded[r.LockDigest] = append(loaded[r.LockDigest], r)
	}
	s.mu.Lock()
	if len(s.locks)+len(loaded) > maxCachedLocks {
		s.locks = map[string][]store.LockPackage{}
	}
	for d, rows := range loaded {
		s.locks[d] = rows
		out[d] = rows
	}
	s.mu.Unlock()
	return out, nil
}

const maxCachedLocks = 20000

// lockHit is one advisory matching one package of a lock.
type lockHit struct {
	row   store.LockPackage
	match osv.Match
}

// lockHits evaluates the advisories against one lock's packages, once per loaded DB: a lock's
// content never changes, so neither does the answer until the advisories are reloaded.
func (s *Service) lockHits(db *osv.DB, digest string, rows []store.LockPackage) []lockHit {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.memoDB != db {
		s.memoDB, s.memo = db, map[string][]lockHit{}
	}
	hs, ok := s.memo[digest]
	if !ok {
		for _, r := range rows {
			for _, m := range db.Affecting(r.Name, r.Version) {
				hs = append(hs, lockHit{row: r, match: m})
			}
		}
		s.memo[digest] = hs
	}
	return hs
}

// fleetHits evaluates every advisory against the locks of the current environments.
func (s *Service) fleetHits(ctx context.Context, db *osv.DB) (hits, error) {
	h := hits{byAdvisory: map[string][]store.LockPackage{}, adv: map[string]*osv.Advisory{}, fixed: map[[2]string][]string{}}
	if db.Len() == 0 {
		return h, nil
	}
	refs, err := s.st.LockRefs(ctx)
	if err != nil {
		return h, dbErr("reading the environments of each lock", err)
	}
	h.refs = refs
	locks, err := s.lockPackages(ctx, sortedKeys(refs))
	if err != nil {
		return h, err
	}
	for d, rows := range locks {
		for _, lh := range s.lockHits(db, d, rows) {
			id := lh.match.Advisory.ID
			h.adv[id] = lh.match.Advisory
			h.byAdvisory[id] = append(h.byAdvisory[id], lh.row)
			h.fixed[[2]string{id, lh.row.Name}] = lh.match.Fixed
		}
	}
	return h, nil
}

// sample is the first environments of one lock by key, read at one generation of it.
type sample struct {
	generation int64
	perLock    int
	keys       []envid.Key
}

// firstEnvs returns the first perLock environments by key of each lock, reading again only the
// locks whose generation moved since they were read (a lock's set of environments changes only
// with its generation).
func (s *Service) firstEnvs(ctx context.Context, refs map[string]store.LockRef, digests []string, perLock int) (map[string][]envid.Key, error) {
	var stale []string
	out := make(map[string][]envid.Key, len(digests))
	s.mu.Lock()
	for _, d := range digests {
		sm, ok := s.samples[d]
		if ok && sm.generation == refs[d].Generation && (sm.perLock >= perLock || len(sm.keys) < sm.perLock) {
			out[d] = sm.keys[:min(perLock, len(sm.keys))]
		} else {
			stale = append(stale, d)
		}
	}
	s.mu.Unlock()
	if len(stale) == 0 {
		return out, nil
	}
	envs, err := s.st.FirstEnvsByLock(ctx, stale, perLock)
	if err != nil {
		return nil, dbErr("reading the package index", err)
	}
	fresh := map[string]*sample{}
	for _, d := range stale {
		fresh[d] = &sample{generation: refs[d].Generation, perLock: perLock}
	}
	for _, e := range envs {
		fresh[e.LockDigest].keys = append(fresh[e.LockDigest].keys, e.Key)
	}
	s.mu.Lock()
	if len(s.samples)+len(fresh) > maxCachedLocks {
		s.samples = map[string]*sample{}
	}
	for d, sm := range fresh {
		// The database's collation may order keys otherwise than bytes do; merging wants bytes.
		slices.SortFunc(sm.keys, compareKeys)
		// A generation read before the sample may be older than the sample: then the next
		// read finds it stale and reads again, never the other way round.
		s.samples[d] = sm
		out[d] = sm.keys
	}
	s.mu.Unlock()
	return out, nil
}

// mergeFirst merges the sorted key lists of locks and returns the first n by key.
func mergeFirst(lists map[string][]envid.Key, locks []string, n int) []store.EnvLock {
	h := &keyHeap{}
	for _, d := range locks {
		if l := lists[d]; len(l) > 0 {
			*h = append(*h, cursor{digest: d, keys: l})
		}
	}
	heap.Init(h)
	var out []store.EnvLock
	for len(out) < n && h.Len() > 0 {
		c := &(*h)[0]
		out = append(out, store.EnvLock{Key: c.keys[0], LockDigest: c.digest})
		if c.keys = c.keys[1:]; len(c.keys) == 0 {
			heap.Pop(h)
		} else {
			heap.Fix(h, 0)
		}
	}
	return out
}

type cursor struct {
	digest string
	keys   []envid.Key
}

type keyHeap []cursor

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return compareKeys(h[i].keys[0], h[j].keys[0]) < 0 }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *keyHeap) Push(x any)        { *h = append(*h, x.(cursor)) }
func (h *keyHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// VulnQuery pages the vulnerabilities view.
type VulnQuery struct {
	Limit    int // advisories per page
	EnvLimit int // environments listed per advisory (EnvCount counts them all)
	// After is the cursor: the last advisory of the previous page.
	After VulnCursor
}

// VulnCursor is a position in the view's order: severity (highest first), then id.
type VulnCursor struct {
	Rank int
	ID   string
}

// VulnPage is one page of the view.
type VulnPage struct {
	Findings []Finding
	Next     *VulnCursor // nil on the last page
}

// Vulnerabilities lists every advisory that hits at least one current environment, the most
// severe first, then by id, each with its first EnvLimit environments by key.
func (s *Service) Vulnerabilities(ctx context.Context, q VulnQuery) (VulnPage, error) {
	q.Limit = min(max(q.Limit, 1), MaxLimit)
	q.EnvLimit = min(max(q.EnvLimit, 0), MaxLimit)
	page := VulnPage{Findings: []Finding{}}
	h, err := s.fleetHits(ctx, s.Advisories())
	if err != nil {
		return page, err
	}
	ids := sortedKeys(h.byAdvisory)
	slices.SortStableFunc(ids, func(a, b string) int {
		return -cmp.Compare(osv.Rank(h.adv[a].Severity), osv.Rank(h.adv[b].Severity))
	})
	if q.After.ID != "" {
		i := 0
		for i < len(ids) {
			r := osv.Rank(h.adv[ids[i]].Severity)
			if r < q.After.Rank || r == q.After.Rank && ids[i] > q.After.ID {
				break
			}
			i++
		}
		ids = ids[i:]
	}
	if len(ids) > q.Limit {
		ids = ids[:q.Limit]
		last := ids[len(ids)-1]
		page.Next = &VulnCursor{Rank: osv.Rank(h.adv[last].Severity), ID: last}
	}
	// The first EnvLimit environments of every lock of the page, in one read: an advisory's
	// first EnvLimit (by key) are among the first EnvLimit of each of its locks.
	var samples map[string][]envid.Key // lock digest → its first environments by key
	if q.EnvLimit > 0 {
		hit := map[string]bool{}
		for _, id := range ids {
			for _, r := range h.byAdvisory[id] {
				hit[r.LockDigest] = true
			}
		}
		envs, err := s.firstEnvs(ctx, h.refs, sortedKeys(hit), q.EnvLimit)
		if err != nil {
			return page, err
		}
		samples = envs
	}
	for _, id := range ids {
		f := Finding{Advisory: h.adv[id], Envs: []Installed{}}
		locks := map[string][]store.LockPackage{}
		pkgs := map[string]map[string]bool{}
		for _, r := range h.byAdvisory[id] {
			locks[r.LockDigest] = append(locks[r.LockDigest], r)
			if pkgs[r.Name] == nil {
				pkgs[r.Name] = map[string]bool{}
			}
			pkgs[r.Name][r.Version] = true
		}
		for d := range locks {
			f.EnvCount += h.refs[d].Envs
		}
		for _, name := range sortedKeys(pkgs) {
			f.Packages = append(f.Packages, AffectedPackage{Name: name, Versions: sortVersions(sortedKeys(pkgs[name])), Fixed: nonNil(h.fixed[[2]string{id, name}])})
		}
		for _, e := range mergeFirst(samples, sortedKeys(locks), q.EnvLimit) {
			for _, p := range locks[e.LockDigest] {
				f.Envs = append(f.Envs, Installed{Key: e.Key, Package: p.Name, Version: p.Version})
			}
		}
		page.Findings = append(page.Findings, f)
	}
	return page, nil
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

// compareKeys orders keys as the store pages them (workflow, node, version; bytewise, as
// both databases compare these ASCII identifiers).
func compareKeys(a, b envid.Key) int {
	return cmp.Or(cmp.Compare(a.WorkflowID, b.WorkflowID), cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.VersionID, b.VersionID))
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// sortVersions orders versions by PEP 440 (strings that are not versions last, as strings),
// each parsed once.
func sortVersions(vs []string) []string {
	type parsed struct {
		s  string
		v  pep440.Version
		ok bool
	}
	ps := make([]parsed, len(vs))
	for i, s := range vs {
		v, err := pep440.Parse(s)
		ps[i] = parsed{s, v, err == nil}
	}
	slices.SortFunc(ps, func(a, b parsed) int {
		switch {
		case a.ok && b.ok:
			return a.v.Compare(b.v)
		case a.ok:
			return -1
		case b.ok:
			return 1
		}
		return cmp.Compare(a.s, b.s)
	})
	for i, p := range ps {
		vs[i] = p.s
	}
	return vs
}
