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
	// From, when set, names the environment whose current files and build revision 1 takes: no
	// resolution, no install (a Build only when that build was removed).
	From *envid.Key
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
	// BuildID is the build the environment runs on.
	BuildID string
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

// Create makes a new environment: Lock (resolve in a staging copy), Build, RecordBuild, then
// CommitRevision with the build, the commit point, and Switch (the project directory).
func (s *Service) Create(ctx context.Context, c Caller, req CreateRequest) (CreatedEnv, error) {
	var res CreatedEnv
	if err := req.Key.Validate(); err != nil {
		return res, errcode.Wrap(errcode.InvalidID, err, "")
	}
	if req.From != nil {
		return s.createFrom(ctx, c, req)
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
	if err := s.refuseExisting(ctx, req.Key); err != nil {
		return res, err
	}
	o := op{key: req.Key, kind: "create", mode: store.LeaseChange, caller: c, need: &Need{PythonVersion: req.PythonVersion}, params: map[string]any{
		"python_version": req.PythonVersion, "packages": req.Packages, "applied_packages": specs, "host_constraints_applied": applied,
	}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		if err := s.recordCreating(ctx, r, req.Key, req.PythonVersion); err != nil {
			return nil, err
		}
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		locked, err := r.agent.Lock(uctx, LockRequest{Key: req.Key, Kind: CreateLock, PythonVersion: req.PythonVersion, Packages: specs, OperationID: r.id})
		if err != nil {
			s.dropCreating(ctx, r, req.Key)
			return nil, err
		}
		if err := s.checkPolicy(locked.Files.UvLock); err != nil { // policy.go: before any build
			s.dropCreating(ctx, r, req.Key)
			return map[string]any{"locked": true, "denied": policyAudit(err)}, err
		}
		b, err := s.materialise(ctx, r, locked.Files, locked.PythonPath, false)
		if err != nil {
			s.dropCreating(ctx, r, req.Key)
			return map[string]any{"locked": true}, err
		}
		envPath := projectDir(req.Key, b.VenvPath)
		rev, err := s.publish(ctx, r, store.Commit{
			Key: req.Key, LeaseID: r.lease.ID, Now: s.now(), OperationID: r.id, State: store.StateActive,
			PyprojectTOML: locked.Files.PyprojectTOML, UvLock: locked.Files.UvLock, BuildID: b.ID,
			PythonVersion: req.PythonVersion, PythonPath: locked.PythonPath, EnvPath: envPath,
		})
		if err != nil {
			return map[string]any{"build_id": b.ID}, err
		}
		full := locked.PythonFullVersion
		if full == "" {
			full = b.PythonFullVersion
		}
		res = CreatedEnv{
			WorkflowID: req.Key.WorkflowID, NodeID: req.Key.NodeID, VersionID: req.Key.VersionID,
			EnvPath: envPath, PythonVersion: req.PythonVersion, PythonFullVersion: full,
			Status: "created", PyprojectTOML: locked.Files.PyprojectTOML, Packages: nonNil(specs),
			HostConstraints: nonNilApplied(applied), PackagesInstalled: b.PackagesInstalled, Revision: rev, OperationID: r.id, BuildID: b.ID,
		}
		return map[string]any{"env_path": envPath, "python_path": locked.PythonPath, "packages_installed": b.PackagesInstalled,
			"revision": rev, "build_id": b.ID, "build_created": b.Created, "resolved": true}, nil
	})
	return res, err
}

// refuseExisting answers ENV_ALREADY_EXISTS for an environment past CREATING.
func (s *Service) refuseExisting(ctx context.Context, key envid.Key) error {
	if env, err := s.store.GetEnv(ctx, key); err == nil && env.State != store.StateCreating {
		return errcode.New(errcode.EnvAlreadyExists, fmt.Sprintf("environment %s already exists", key))
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return dbErr("reading the environment", err)
	}
	return nil
}

// recordCreating writes the CREATING row of a new environment under r's lease.
func (s *Service) recordCreating(ctx context.Context, r *running, key envid.Key, python string) error {
	now := s.now()
	fresh := store.Env{Key: key, State: store.StateCreating, PythonVersion: python, CreatedAt: now, UpdatedAt: now, LastUsedAt: now}
	err := s.store.CreateEnv(ctx, fresh, now)
	if errors.Is(err, store.ErrExists) {
		// A CREATING row while we hold the change lease is the leftover of a create whose holder
		// died: take it over.
		if old, gerr := s.store.GetEnv(ctx, key); gerr == nil && old.State == store.StateCreating {
			if err = s.store.DeleteEnv(ctx, key, r.lease.ID); err == nil {
				err = s.store.CreateEnv(ctx, fresh, now)
			}
		}
	}
	if errors.Is(err, store.ErrExists) {
		return errcode.New(errcode.EnvAlreadyExists, fmt.Sprintf("environment %s already exists", key))
	}
	if err != nil {
		return dbErr("recording the new environment", err)
	}
	return nil
}

// dropCreating removes the record of a create that failed before its commit. Nothing is on the
// storage to remove: the project directory is made only by the Switch after the commit, and a
// build made meanwhile is left for cleanup (another environment may have it already).
func (s *Service) dropCreating(ctx context.Context, r *running, key envid.Key) {
	if r.lost() {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.store.DeleteEnv(dctx, key, r.lease.ID); err != nil {
		s.log.Error("removing the record of a failed create; the repair pass will", "env", key.String(), "err", err)
	}
}

// createFrom makes an environment whose revision 1 is another environment's current files and
// build: no resolution and no install (a Build only when that build is not READY).
func (s *Service) createFrom(ctx context.Context, c Caller, req CreateRequest) (CreatedEnv, error) {
	var res CreatedEnv
	src := *req.From
	if err := src.Validate(); err != nil {
		return res, errcode.Wrap(errcode.InvalidID, fmt.Errorf("from: %w", err), "")
	}
	if len(req.Packages) > 0 || req.Requirements != "" {
		return res, errcode.New(errcode.InvalidRequest, "from: an environment made from another takes its packages; give no packages or requirements")
	}
	if src == req.Key {
		return res, errcode.New(errcode.InvalidRequest, "from: names the environment being created")
	}
	srcEnv, err := s.getEnv(ctx, src)
	if err != nil {
		return res, err
	}
	if err := ready(srcEnv); err != nil {
		return res, err
	}
	if req.PythonVersion != "" && req.PythonVersion != srcEnv.PythonVersion {
		return res, errcode.New(errcode.InvalidRequest, fmt.Sprintf("python_version %q: the environment it is made from has %q", req.PythonVersion, srcEnv.PythonVersion))
	}
	if err := s.refuseExisting(ctx, req.Key); err != nil {
		return res, err
	}
	o := op{key: req.Key, kind: "create", mode: store.LeaseChange, caller: c, need: &Need{PythonPath: srcEnv.PythonPath},
		params: map[string]any{"from": map[string]string{"workflow_id": src.WorkflowID, "node_id": src.NodeID, "version_id": src.VersionID}}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		srcRev, err := s.store.GetRevision(ctx, src, 0)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errcode.New(errcode.EnvNotFound, fmt.Sprintf("from: environment %s does not exist", src))
		}
		if err != nil {
			return nil, dbErr("reading the source's revision", err)
		}
		if err := s.recordCreating(ctx, r, req.Key, srcEnv.PythonVersion); err != nil {
			return nil, err
		}
		files := Files{PyprojectTOML: srcRev.PyprojectTOML, UvLock: srcRev.UvLock}
		buildID, built, installed, full := srcRev.BuildID, false, 0, ""
		if b, err := s.usableBuild(ctx, buildID); err == nil {
			installed, full = b.PackagesInstalled, b.PythonFullVersion
		} else {
			nb, err := s.materialise(ctx, r, files, srcEnv.PythonPath, errors.Is(err, errDamaged))
			if err != nil {
				s.dropCreating(ctx, r, req.Key)
				return nil, err
			}
			buildID, built, installed, full = nb.ID, nb.Created, nb.PackagesInstalled, nb.PythonFullVersion
		}
		envPath := siblingDir(req.Key, src, srcEnv.EnvPath)
		rev, err := s.publish(ctx, r, store.Commit{
			Key: req.Key, LeaseID: r.lease.ID, Now: s.now(), OperationID: r.id, State: store.StateActive,
			PyprojectTOML: files.PyprojectTOML, UvLock: files.UvLock, BuildID: buildID,
			PythonVersion: srcEnv.PythonVersion, PythonPath: srcEnv.PythonPath, EnvPath: envPath,
		})
		if err != nil {
			return map[string]any{"build_id": buildID}, err
		}
		deps, _ := depsOf(req.Key, files, rev)
		res = CreatedEnv{
			WorkflowID: req.Key.WorkflowID, NodeID: req.Key.NodeID, VersionID: req.Key.VersionID,
			EnvPath: envPath, PythonVersion: srcEnv.PythonVersion, PythonFullVersion: full,
			Status: "created", PyprojectTOML: files.PyprojectTOML, Packages: nonNil(deps.Dependencies),
			HostConstraints: []hostdeps.Applied{}, PackagesInstalled: installed, Revision: rev, OperationID: r.id, BuildID: buildID,
		}
		return map[string]any{"env_path": envPath, "python_path": srcEnv.PythonPath, "revision": rev, "build_id": buildID,
			"resolved": false, "rebuilt": built, "from_revision": srcRev.Number}, nil
	})
	return res, err
}

// errDamaged says a build is recorded DAMAGED (usableBuild).
var errDamaged = errors.New("the build is damaged")

// usableBuild returns the recorded build id if it is READY; otherwise an error (errDamaged for a
// damaged one) says it must be materialised again. The layout before builds has none.
func (s *Service) usableBuild(ctx context.Context, id string) (store.Build, error) {
	if id == "" {
		return store.Build{}, store.ErrNotFound
	}
	b, err := s.store.GetBuild(ctx, id)
	if err != nil {
		return b, err
	}
	switch b.State {
	case store.BuildReady:
		return b, nil
	case store.BuildDamaged:
		return b, errDamaged
	}
	return b, fmt.Errorf("build %s is %s", id, b.State)
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
