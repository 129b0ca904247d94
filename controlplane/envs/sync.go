package envs

import (
	"context"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
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
}

// Sync rebuilds the .venv from the recorded uv.lock, rewriting the project files first if the
// disk disagrees with the database. It takes part in the order of mutations: the revision is
// read under the exclusive lease, and the state is settled by a commit fenced by that lease and
// compare-and-set on that revision, so a sync never writes an older revision over a newer one.
func (s *Service) Sync(ctx context.Context, c Caller, key envid.Key) (SyncResult, error) {
	var res SyncResult
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	if err := ready(env); err != nil {
		return res, err
	}
	o := op{key: key, kind: "sync", exclusive: true, state: store.StateSyncing, caller: c, need: &Need{PythonPath: env.PythonPath}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		n, rev, err := s.syncCurrent(ctx, r, key, env.PythonPath)
		if err != nil {
			return map[string]any{"revision": rev.Number}, err
		}
		if err := s.store.Touch(ctx, key, s.now()); err != nil {
			return nil, dbErr("recording the use", err)
		}
		res = SyncResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Status: "synced",
			PackagesInstalled: n, Revision: rev.Number, OperationID: r.id}
		return map[string]any{"revision": rev.Number, "packages_installed": n}, nil
	})
	return res, err
}

// syncCurrent puts the environment's current revision, read under r's lease, on disk and
// records it ACTIVE. Sync and the repair pass share it.
func (s *Service) syncCurrent(ctx context.Context, r *running, key envid.Key, pythonPath string) (int, store.Revision, error) {
	files, rev, err := s.currentFiles(ctx, key)
	if err != nil {
		return 0, rev, err
	}
	uctx, cancel := s.uvContext(ctx)
	defer cancel()
	n, err := r.agent.Sync(uctx, SyncRequest{Key: key, Files: files, Revision: rev.Number, OperationID: r.id, PythonPath: pythonPath})
	if err != nil {
		err = s.recoverFrom(ctx, r, key, rev, pythonPath, err)
		if !r.lost() {
			s.setStateAfter(ctx, key, err)
		}
		return 0, rev, err
	}
	// The same files: no new revision, only the state, fenced by the lease.
	if _, err := s.store.CommitRevision(ctx, store.Commit{Key: key, LeaseID: r.lease.ID, Base: rev.Number, Now: s.now(), OperationID: r.id,
		State: store.StateActive, PyprojectTOML: files.PyprojectTOML, UvLock: files.UvLock}); err != nil {
		return 0, rev, dbErr("recording the state", err)
	}
	return n, rev, nil
}
