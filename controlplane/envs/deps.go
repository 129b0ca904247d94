package envs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/envfabric/envfabric/controlplane/hostdeps"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// StatusUnchanged is the status of a mutation that left the project files as they were.
const StatusUnchanged = "unchanged"

// DepsResult answers every dependency operation: the TRD's deps shape plus what was done.
type DepsResult struct {
	WorkflowID      string
	NodeID          string
	VersionID       string
	Status          string
	Packages        []string
	HostConstraints []hostdeps.Applied
	Dependencies    []string
	LockedVersions  map[string]string
	Revision        int64
	OperationID     int64
	// DryRun: nothing was changed; Changes is the difference between the current lock and the
	// one the change would commit.
	DryRun  bool
	Changes []PackageChange
	// RolledBackTo is the revision a rollback took the files and build of; Rebuilt says its
	// build had to be materialised again.
	RolledBackTo int64
	Rebuilt      bool
	BuildID      string
}

// PackageChange is one locked package a change adds (From nil), removes (To nil) or moves.
type PackageChange struct {
	Name string
	From *string
	To   *string
}

// lockChanges is the difference between two locks, transitive packages included, by name.
func lockChanges(before, after string) ([]PackageChange, error) {
	a, err := pyproject.LockedVersions(before)
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "")
	}
	b, err := pyproject.LockedVersions(after)
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "")
	}
	names := make([]string, 0, len(a)+len(b))
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := []PackageChange{}
	for _, n := range names {
		from, inA := a[n]
		to, inB := b[n]
		if inA && inB && from == to {
			continue
		}
		c := PackageChange{Name: n}
		if inA {
			c.From = &from
		}
		if inB {
			c.To = &to
		}
		out = append(out, c)
	}
	return out, nil
}

func depsOf(key envid.Key, files Files, revision int64) (DepsResult, error) {
	p, err := pyproject.Parse(files.PyprojectTOML)
	if err != nil {
		return DepsResult{}, errcode.Wrap(errcode.Internal, err, "")
	}
	locked, err := pyproject.LockedVersions(files.UvLock)
	if err != nil {
		return DepsResult{}, errcode.Wrap(errcode.Internal, err, "")
	}
	return DepsResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID,
		Dependencies: p.Dependencies, LockedVersions: locked, Revision: revision}, nil
}

// Deps lists an environment's dependencies with their locked versions, from the database.
func (s *Service) Deps(ctx context.Context, key envid.Key) (DepsResult, error) {
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return DepsResult{}, err
	}
	if err := ready(env); err != nil {
		return DepsResult{}, err
	}
	files, rev, err := s.currentFiles(ctx, key)
	if err != nil {
		return DepsResult{}, err
	}
	return depsOf(key, files, rev.Number)
}

// plan turns validated requirements into the uv command's arguments against base: remove and
// update name current dependencies (DEPENDENCY_NOT_FOUND otherwise), a bare update upgrades
// within the current requirement.
func plan(key envid.Key, kind MutationKind, reqs []reqspec.Requirement, specs []string, base Files) (LockRequest, error) {
	m := LockRequest{Key: key, Kind: kind, Base: base}
	if kind == Add {
		m.Packages = specs
		return m, nil
	}
	py, err := pyproject.Parse(base.PyprojectTOML)
	if err != nil {
		return m, errcode.Wrap(errcode.Internal, err, "")
	}
	current := py.DependencyIndex()
	var missing []string
	for _, r := range reqs {
		have, ok := current[r.Normalized()]
		if !ok {
			missing = append(missing, r.Name)
			continue
		}
		switch {
		case kind == Remove && !r.Bare():
			return m, errcode.New(errcode.InvalidPackages, fmt.Sprintf("remove takes package names, not specifiers: %q", r.String()))
		case kind == Remove:
			m.Packages = append(m.Packages, r.Name)
		case r.Bare():
			// Upgrade to the newest version the current requirement allows.
			m.Packages = append(m.Packages, have)
			m.Upgrade = append(m.Upgrade, r.Name)
		default:
			m.Packages = append(m.Packages, r.String())
			m.Upgrade = append(m.Upgrade, r.Name)
		}
	}
	if len(missing) > 0 {
		return m, errcode.New(errcode.DependencyNotFound, fmt.Sprintf("not a dependency of %s: %s", key, strings.Join(missing, ", ")))
	}
	return m, nil
}

// Mutate adds, removes or updates dependencies.
//
// Changes of one environment are linearizable: the base revision is read under the change lease,
// the agent resolves from that base in a staging copy and materialises the new build beside the
// current one, and the commit is a compare-and-set on the base fenced by the lease. Runs go on
// meanwhile on the current build; nothing they use is touched. A change that cannot be committed
// is never acknowledged and leaves nothing to put back. With dryRun only the resolution runs and
// the answer is the difference of the locks.
func (s *Service) Mutate(ctx context.Context, c Caller, key envid.Key, kind MutationKind, packages []string, dryRun bool) (DepsResult, error) {
	var res DepsResult
	name, status := kind.names()
	if len(packages) == 0 {
		return res, errcode.New(errcode.InvalidPackages, "packages: at least one package is required")
	}
	reqs, specs, applied, err := s.parsePackages(packages)
	if err != nil {
		return res, err
	}
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	if err := ready(env); err != nil {
		return res, err
	}
	if kind != Add {
		applied = nil
	}
	// A first plan against the revision read now refuses what cannot work without an audit
	// row (removing a package that is not there); the plan that runs is made again under the lease.
	files, _, err := s.currentFiles(ctx, key)
	if err != nil {
		return res, err
	}
	first, err := plan(key, kind, reqs, specs, files)
	if err != nil {
		return res, err
	}
	params := map[string]any{"packages": packages, "applied_packages": first.Packages, "upgrade": first.Upgrade, "host_constraints_applied": applied}
	if dryRun {
		params["dry_run"] = true
		return s.dryRun(ctx, c, env, kind, reqs, specs, applied, params)
	}
	o := op{key: key, kind: name, mode: store.LeaseChange, state: store.StateInstalling, caller: c, need: &Need{PythonPath: env.PythonPath}, params: params}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		files, base, err := s.currentFiles(ctx, key)
		if err != nil {
			s.settle(ctx, key)
			return nil, err
		}
		m, err := plan(key, kind, reqs, specs, files)
		if err != nil {
			s.settle(ctx, key)
			return nil, err
		}
		m.OperationID, m.PythonPath = r.id, env.PythonPath
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		locked, err := r.agent.Lock(uctx, m)
		if err != nil {
			if !r.lost() {
				s.settle(ctx, key)
			}
			return map[string]any{"base_revision": base.Number}, err
		}
		if kind != Remove { // policy.go: on the new lock, before any build
			if err := s.checkPolicy(locked.Files.UvLock); err != nil {
				s.settle(ctx, key)
				return map[string]any{"base_revision": base.Number, "locked": true, "denied": policyAudit(err)}, err
			}
		}
		b, err := s.materialise(ctx, r, locked.Files, env.PythonPath, false)
		if err != nil {
			if !r.lost() {
				s.settle(ctx, key)
			}
			return map[string]any{"base_revision": base.Number, "locked": true}, err
		}
		n, err := s.publish(ctx, r, store.Commit{Key: key, LeaseID: r.lease.ID, Base: base.Number, Now: s.now(), OperationID: r.id,
			State: store.StateActive, PyprojectTOML: locked.Files.PyprojectTOML, UvLock: locked.Files.UvLock, BuildID: b.ID})
		if err != nil {
			var ue *UncommittedError
			errors.As(err, &ue)
			return map[string]any{"base_revision": base.Number, "build_id": b.ID, "restored": ue != nil && ue.Restored, "lease_lost": ue != nil && ue.LeaseLost}, err
		}
		res, err = depsOf(key, locked.Files, n)
		if err != nil {
			return nil, err
		}
		res.Status, res.Packages, res.HostConstraints, res.OperationID, res.BuildID = status, m.Packages, applied, r.id, b.ID
		if locked.Files == files {
			// uv left both files as they were (an update with nothing newer allowed, an add of
			// what is there): say so rather than "updated".
			res.Status = StatusUnchanged
		}
		return map[string]any{"base_revision": base.Number, "revision": n, "packages_installed": b.PackagesInstalled,
			"applied_packages": m.Packages, "upgrade": m.Upgrade, "build_id": b.ID, "build_created": b.Created}, nil
	})
	return res, err
}

// dryRun resolves a change without committing anything: a Lock in a staging copy from the base
// read in one consistent read (a revision row holds both files), under no lease (it writes
// nothing an environment or a build depends on). It is audited like the change, with
// params.dry_run true and the difference in the result; the environment's state is not touched.
func (s *Service) dryRun(ctx context.Context, c Caller, env store.Env, kind MutationKind, reqs []reqspec.Requirement, specs []string,
	applied []hostdeps.Applied, params map[string]any) (DepsResult, error) {
	var res DepsResult
	name, _ := kind.names()
	key := env.Key
	o := op{key: key, kind: name, noLease: true, caller: c, need: &Need{PythonPath: env.PythonPath}, params: params}
	err := s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		files, base, err := s.currentFiles(ctx, key)
		if err != nil {
			return nil, err
		}
		m, err := plan(key, kind, reqs, specs, files)
		if err != nil {
			return nil, err
		}
		m.OperationID, m.PythonPath = r.id, env.PythonPath
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		locked, err := r.agent.Lock(uctx, m)
		if err != nil {
			return map[string]any{"base_revision": base.Number, "dry_run": true}, err
		}
		if kind != Remove { // a dry run says a change would be refused (policy.go)
			if err := s.checkPolicy(locked.Files.UvLock); err != nil {
				return map[string]any{"base_revision": base.Number, "dry_run": true, "denied": policyAudit(err)}, err
			}
		}
		changes, err := lockChanges(files.UvLock, locked.Files.UvLock)
		if err != nil {
			return nil, err
		}
		res, err = depsOf(key, locked.Files, base.Number)
		if err != nil {
			return nil, err
		}
		res.DryRun, res.Changes, res.Packages, res.HostConstraints, res.OperationID = true, changes, m.Packages, applied, r.id
		return map[string]any{"dry_run": true, "base_revision": base.Number, "changes": changesAudit(changes), "applied_packages": m.Packages}, nil
	})
	return res, err
}

func changesAudit(cs []PackageChange) []map[string]any {
	out := make([]map[string]any, 0, len(cs))
	for _, c := range cs {
		out = append(out, map[string]any{"name": c.Name, "from": c.From, "to": c.To})
	}
	return out
}
