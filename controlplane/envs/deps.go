package envs

import (
	"context"
	"fmt"
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
func plan(key envid.Key, kind MutationKind, reqs []reqspec.Requirement, specs []string, base Files) (Mutation, error) {
	m := Mutation{Key: key, Kind: kind, Base: base}
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
// Mutations of one environment are linearizable: the base revision is read under the exclusive
// lease, the agent changes the project from that base, and the commit is a compare-and-set on it
// fenced by the lease. A change that cannot be committed is never acknowledged, and while this
// control plane still holds the lease the agent puts the base back before the answer goes out.
func (s *Service) Mutate(ctx context.Context, c Caller, key envid.Key, kind MutationKind, packages []string) (DepsResult, error) {
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
	o := op{key: key, kind: name, exclusive: true, state: store.StateInstalling, caller: c, need: &Need{PythonPath: env.PythonPath},
		params: map[string]any{"packages": packages, "applied_packages": first.Packages, "upgrade": first.Upgrade, "host_constraints_applied": applied}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		files, base, err := s.currentFiles(ctx, key)
		if err != nil {
			s.leaveState(ctx, key, store.StateActive, "") // nothing was touched
			return nil, err
		}
		m, err := plan(key, kind, reqs, specs, files)
		if err != nil {
			s.setStateAfter(ctx, key, err)
			return nil, err
		}
		m.BaseRevision, m.OperationID, m.PythonPath = base.Number, r.id, env.PythonPath
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		out, err := r.agent.Mutate(uctx, m)
		if err != nil {
			err = s.recoverFrom(ctx, r, key, base, env.PythonPath, err)
			if !r.lost() {
				s.setStateAfter(ctx, key, err)
			}
			return map[string]any{"base_revision": base.Number}, err
		}
		n, err := s.store.CommitRevision(ctx, store.Commit{Key: key, LeaseID: r.lease.ID, Base: base.Number, Now: s.now(), OperationID: r.id,
			State: store.StateActive, PyprojectTOML: out.Files.PyprojectTOML, UvLock: out.Files.UvLock})
		if err != nil {
			var ue *UncommittedError
			n, ue = s.uncommitted(ctx, r, key, base, env.PythonPath, err)
			if ue != nil {
				return map[string]any{"base_revision": base.Number, "restored": ue.Restored, "lease_lost": ue.LeaseLost}, ue
			}
		}
		r.committed = true
		res, err = depsOf(key, out.Files, n)
		if err != nil {
			return nil, err
		}
		res.Status, res.Packages, res.HostConstraints, res.OperationID = status, m.Packages, applied, r.id
		if out.Files == files {
			// uv left both files as they were (an update with nothing newer allowed, an add of
			// what is there): say so rather than "updated".
			res.Status = StatusUnchanged
		}
		return map[string]any{"base_revision": base.Number, "revision": n, "packages_installed": out.PackagesInstalled,
			"applied_packages": m.Packages, "upgrade": m.Upgrade}, nil
	})
	return res, err
}
