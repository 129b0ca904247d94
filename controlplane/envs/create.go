package envs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/controlplane/hostdeps"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// CreateRequest is POST /envs.
type CreateRequest struct {
	Key           envid.Key
	PythonVersion string
	Packages      []string
	// Requirements is an uploaded requirements file, validated under the same policy as Packages
	// and added to them.
	Requirements string
}

// CreatedEnv is the TRD's create response.
type CreatedEnv struct {
	WorkflowID        string
	NodeID            string
	VersionID         string
	EnvPath           string
	PythonVersion     string
	PythonFullVersion string
	Status            string
	PyprojectTOML     string
	Packages          []string
	HostConstraints   []hostdeps.Applied
	PackagesInstalled int
	// Revision is the environment's first revision, the one the create committed.
	Revision    int64
	OperationID int64
}

// parsePackages validates request packages and applies the host's constraints.
func (s *Service) parsePackages(specs []string) ([]reqspec.Requirement, []string, []hostdeps.Applied, error) {
	reqs, err := s.opt.Packages.ParseAll(specs)
	if err != nil {
		return nil, nil, nil, errcode.Wrap(errcode.InvalidPackages, err, "")
	}
	out, applied := s.host.Apply(reqs)
	return reqs, out, applied, nil
}

// Create makes a new environment.
func (s *Service) Create(ctx context.Context, c Caller, req CreateRequest) (CreatedEnv, error) {
	var res CreatedEnv
	if err := req.Key.Validate(); err != nil {
		return res, errcode.Wrap(errcode.InvalidID, err, "")
	}
	if req.PythonVersion == "" {
		req.PythonVersion = s.opt.DefaultPython
	}
	if !pythonVersionRe.MatchString(req.PythonVersion) {
		return res, errcode.New(errcode.InvalidRequest, fmt.Sprintf("python_version %q: want a version like 3.11 or 3.11.7", req.PythonVersion))
	}
	if req.Requirements != "" {
		fromFile, err := s.opt.Packages.ParseRequirementsFile(req.Requirements)
		if errors.Is(err, reqspec.ErrTooLarge) {
			return res, errcode.Wrap(errcode.RequestTooLarge, err, "")
		}
		if err != nil {
			return res, errcode.Wrap(errcode.InvalidPackages, err, "")
		}
		req.Packages = append(req.Packages, fromFile...)
	}
	_, specs, applied, err := s.parsePackages(req.Packages)
	if err != nil {
		return res, err
	}
	if env, err := s.store.GetEnv(ctx, req.Key); err == nil && env.State != store.StateCreating {
		return res, errcode.New(errcode.EnvAlreadyExists, fmt.Sprintf("environment %s already exists", req.Key))
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return res, dbErr("reading the environment", err)
	}
	o := op{key: req.Key, kind: "create", exclusive: true, caller: c, need: &Need{PythonVersion: req.PythonVersion}, params: map[string]any{
		"python_version": req.PythonVersion, "packages": req.Packages, "applied_packages": specs, "host_constraints_applied": applied,
	}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		now := s.now()
		fresh := store.Env{Key: req.Key, State: store.StateCreating, PythonVersion: req.PythonVersion, CreatedAt: now, UpdatedAt: now, LastUsedAt: now}
		err := s.store.CreateEnv(ctx, fresh, now)
		if errors.Is(err, store.ErrExists) {
			// A CREATING row while we hold the exclusive lease is the leftover of a create whose
			// holder died: take it over.
			if old, gerr := s.store.GetEnv(ctx, req.Key); gerr == nil && old.State == store.StateCreating {
				if err = s.store.DeleteEnv(ctx, req.Key, r.lease.ID); err == nil {
					err = s.store.CreateEnv(ctx, fresh, now)
				}
			}
		}
		if errors.Is(err, store.ErrExists) {
			return nil, errcode.New(errcode.EnvAlreadyExists, fmt.Sprintf("environment %s already exists", req.Key))
		}
		if err != nil {
			return nil, dbErr("recording the new environment", err)
		}
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		created, err := r.agent.Create(uctx, req.Key, req.PythonVersion, specs, r.id)
		if err != nil {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer dcancel()
			s.clearAfterDeadAgent(dctx, r, req.Key, err)
			if derr := s.store.DeleteEnv(dctx, req.Key, r.lease.ID); derr != nil {
				s.log.Error("removing the record of a failed create", "env", req.Key.String(), "err", derr)
			}
			return nil, err
		}
		rev, err := s.store.CommitRevision(ctx, store.Commit{
			Key: req.Key, LeaseID: r.lease.ID, Now: s.now(), OperationID: r.id, State: store.StateActive,
			PyprojectTOML: created.Files.PyprojectTOML, UvLock: created.Files.UvLock,
			PythonVersion: req.PythonVersion, PythonPath: created.PythonPath, EnvPath: created.EnvPath,
		})
		if err != nil {
			return nil, s.uncommittedCreate(ctx, r, req.Key, err)
		}
		r.committed = true
		res = CreatedEnv{
			WorkflowID: req.Key.WorkflowID, NodeID: req.Key.NodeID, VersionID: req.Key.VersionID,
			EnvPath: created.EnvPath, PythonVersion: req.PythonVersion, PythonFullVersion: created.PythonFullVersion,
			Status: "created", PyprojectTOML: created.Files.PyprojectTOML, Packages: nonNil(specs),
			HostConstraints: nonNilApplied(applied), PackagesInstalled: created.PackagesInstalled, Revision: rev, OperationID: r.id,
		}
		return map[string]any{"env_path": created.EnvPath, "python_path": created.PythonPath, "packages_installed": created.PackagesInstalled,
			"revision": rev}, nil
	})
	return res, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilApplied(a []hostdeps.Applied) []hostdeps.Applied {
	if a == nil {
		return []hostdeps.Applied{}
	}
	return a
}

// uncommittedCreate handles a create whose commit failed after the agent made the project:
// nothing was acknowledged, so while the lease is held the project and its record go (a failed
// removal is left to the repair pass, which removes creates that never committed).
func (s *Service) uncommittedCreate(ctx context.Context, r *running, key envid.Key, cause error) error {
	e := &UncommittedError{Key: key, Err: cause}
	if errors.Is(cause, store.ErrLeaseLost) || r.lost() {
		e.LeaseLost = true
		return e
	}
	uctx, cancel := s.uvContext(ctx)
	defer cancel()
	if _, err := r.agent.Delete(uctx, key); err != nil {
		s.log.Error("removing the project of a create that could not be recorded", "env", key.String(), "err", err)
		return e
	}
	if err := s.store.DeleteEnv(ctx, key, r.lease.ID); err != nil {
		s.log.Error("removing the record of a create that could not be recorded; the repair pass will", "env", key.String(), "err", err)
	}
	e.Restored = true // back to no environment at all
	return e
}
