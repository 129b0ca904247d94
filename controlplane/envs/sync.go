package envs

import (
	"context"
	"errors"
	"fmt"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// SyncResult is the TRD's sync response.
type SyncResult struct {
	WorkflowID        string
	NodeID            string
	VersionID         string
	Status            string
	PackagesInstalled int
	Revision          int64
	OperationID       int64
	// BuildID is the build the environment runs on after the sync; Repaired says its build was
	// found damaged and replaced by a fresh one; Rebuilt says the build was materialised (woken
	// from hibernation, repaired, or the first build of an environment of the layout before builds).
	BuildID  string
	Repaired bool
	Rebuilt  bool
}

// Sync makes sure the environment runs on a complete, intact build of its current revision and
// that its project directory points at it: the build of the current files (materialised when
// missing, replaced when damaged), committed when it changed, then switched. It is how an
// environment of the layout before builds moves to builds, how a hibernated one wakes without a
// run, and how a damaged one is repaired. It takes part in the order of changes (the change
// lease; the commit is compare-and-set on the revision read under it).
func (s *Service) Sync(ctx context.Context, c Caller, key envid.Key) (SyncResult, error) {
	var res SyncResult
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	if err := ready(env); err != nil {
		return res, err
	}
	o := op{key: key, kind: "sync", mode: store.LeaseChange, state: store.StateSyncing, caller: c, need: &Need{PythonPath: env.PythonPath}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		out, err := s.syncCurrent(ctx, r, key)
		if err != nil {
			if !r.lost() {
				s.settle(ctx, key)
			}
			return map[string]any{"revision": out.Revision}, err
		}
		if err := s.store.Touch(ctx, key, s.now()); err != nil {
			return nil, dbErr("recording the use", err)
		}
		res = SyncResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Status: "synced",
			PackagesInstalled: out.PackagesInstalled, Revision: out.Revision, OperationID: r.id, BuildID: out.BuildID,
			Repaired: out.Repaired, Rebuilt: out.Rebuilt}
		return map[string]any{"revision": out.Revision, "packages_installed": out.PackagesInstalled, "build_id": out.BuildID,
			"previous_build_id": out.PreviousBuildID, "repaired": out.Repaired, "rebuilt": out.Rebuilt, "damaged": out.Damaged}, nil
	})
	return res, err
}

// synced is what syncCurrent did.
type synced struct {
	Revision          int64
	PackagesInstalled int
	BuildID           string
	PreviousBuildID   string
	Repaired          bool
	Rebuilt           bool
	Damaged           []string // the damaged packages found, by name
}

// syncCurrent builds the current revision (read under r's lease), replacing its build when it is
// damaged, commits the build change if any, and switches the project directory. Sync and the
// repair pass share it.
func (s *Service) syncCurrent(ctx context.Context, r *running, key envid.Key) (synced, error) {
	var out synced
	env, err := s.store.GetEnv(ctx, key)
	if err != nil {
		return out, dbErr("reading the environment", err)
	}
	files, rev, err := s.currentFiles(ctx, key)
	if err != nil {
		return out, err
	}
	out.Revision, out.PreviousBuildID = rev.Number, rev.BuildID
	replace := false
	if rev.BuildID != "" {
		// The database may not know of damage yet (the verifier runs now and then): look.
		ictx, cancel := s.uvContext(ctx)
		disk, err := r.agent.Inspect(ictx, InspectRequest{Key: key, Expected: files, PythonPath: env.PythonPath, Verify: true, ExpectedBuildID: rev.BuildID})
		cancel()
		if err == nil && disk.Check != nil && disk.Check.Complete && !disk.Check.Intact {
			replace = true
			for _, d := range disk.Check.Damaged {
				out.Damaged = append(out.Damaged, d.Name)
			}
		}
		if b, err := s.store.GetBuild(ctx, rev.BuildID); err == nil && b.State == store.BuildDamaged {
			replace = true
		}
	}
	b, err := s.materialise(ctx, r, files, env.PythonPath, replace)
	if err != nil {
		return out, err
	}
	out.BuildID, out.PackagesInstalled, out.Repaired, out.Rebuilt = b.ID, b.PackagesInstalled, replace, b.Created
	// The same files: no new revision; the current revision's build becomes b when it differs.
	n, err := s.publish(ctx, r, store.Commit{Key: key, LeaseID: r.lease.ID, Base: rev.Number, Now: s.now(), OperationID: r.id,
		State: store.StateActive, PyprojectTOML: files.PyprojectTOML, UvLock: files.UvLock, BuildID: b.ID})
	if err != nil {
		return out, err
	}
	out.Revision = n
	return out, nil
}

// Rollback makes revision `to` current again: a new revision with its files and its build
// (materialised again when it was removed or is damaged), audited as "rollback". Instant while
// that build exists: no resolution, no install.
func (s *Service) Rollback(ctx context.Context, c Caller, key envid.Key, to int64) (DepsResult, error) {
	var res DepsResult
	if to < 1 {
		return res, errcode.New(errcode.InvalidRequest, "revision: want a revision number (1 or more)")
	}
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	if err := ready(env); err != nil {
		return res, err
	}
	if _, err := s.store.GetRevision(ctx, key, to); errors.Is(err, store.ErrNotFound) {
		return res, errcode.New(errcode.InvalidRequest, fmt.Sprintf("revision: %s has no revision %d (its current is %d)", key, to, env.Revision))
	} else if err != nil {
		return res, dbErr("reading the revision", err)
	}
	o := op{key: key, kind: "rollback", mode: store.LeaseChange, state: store.StateInstalling, caller: c, need: &Need{PythonPath: env.PythonPath},
		params: map[string]any{"revision": to}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		target, err := s.store.GetRevision(ctx, key, to)
		if err != nil {
			s.settle(ctx, key)
			return nil, dbErr("reading the revision", err)
		}
		_, base, err := s.currentFiles(ctx, key)
		if err != nil {
			s.settle(ctx, key)
			return nil, err
		}
		files := Files{PyprojectTOML: target.PyprojectTOML, UvLock: target.UvLock}
		buildID, rebuilt := target.BuildID, false
		if _, uerr := s.usableBuild(ctx, buildID); uerr != nil {
			b, err := s.materialise(ctx, r, files, env.PythonPath, errors.Is(uerr, errDamaged))
			if err != nil {
				if !r.lost() {
					s.settle(ctx, key)
				}
				return map[string]any{"base_revision": base.Number}, err
			}
			buildID, rebuilt = b.ID, b.Created
		}
		n, err := s.publish(ctx, r, store.Commit{Key: key, LeaseID: r.lease.ID, Base: base.Number, Now: s.now(), OperationID: r.id,
			State: store.StateActive, PyprojectTOML: files.PyprojectTOML, UvLock: files.UvLock, BuildID: buildID})
		if err != nil {
			return map[string]any{"base_revision": base.Number, "build_id": buildID}, err
		}
		res, err = depsOf(key, files, n)
		if err != nil {
			return nil, err
		}
		res.Status, res.OperationID, res.RolledBackTo, res.Rebuilt, res.BuildID = "rolled_back", r.id, to, rebuilt, buildID
		return map[string]any{"base_revision": base.Number, "revision": n, "rolled_back_to": to, "build_id": buildID, "rebuilt": rebuilt}, nil
	})
	return res, err
}
