package envs

import (
	"context"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// DeleteResult answers DELETE /envs/{wf}/{node}.
type DeleteResult struct {
	WorkflowID  string
	NodeID      string
	VersionID   string
	Status      string
	BytesFreed  int64
	OperationID int64
}

// Delete removes an environment's project directory and its record (its audit history stays).
// Its build stays: other environments may share it, and cleanup removes it once no environment's
// current revision references it. A delete excludes every other operation, runs included.
func (s *Service) Delete(ctx context.Context, c Caller, key envid.Key) (DeleteResult, error) {
	return s.remove(ctx, c, key, "delete", nil)
}

func (s *Service) remove(ctx context.Context, c Caller, key envid.Key, kind string, params map[string]any) (DeleteResult, error) {
	var res DeleteResult
	env, err := s.getEnv(ctx, key)
	if err != nil {
		return res, err
	}
	o := op{key: key, kind: kind, mode: store.LeaseDelete, state: store.StateDeleting, caller: c, need: &Need{}, params: params}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		freed, err := r.agent.Delete(uctx, key)
		if err != nil {
			if !r.lost() {
				// The directory may be half removed; runs use the build by id meanwhile. Put the
				// directory back (a Switch recreates it) and leave the environment at rest.
				s.settle(ctx, key)
				if env.BuildID != "" {
					if files, rev, ferr := s.currentFiles(ctx, key); ferr == nil {
						s.switchTo(ctx, r.agent, key, files, rev.BuildID, rev.Number, r.id)
					}
				}
			}
			return map[string]any{"build_id": env.BuildID}, err
		}
		if err := s.store.DeleteEnv(ctx, key, r.lease.ID); err != nil {
			return nil, dbErr("removing the environment's record", err)
		}
		res = DeleteResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Status: "deleted", BytesFreed: freed, OperationID: r.id}
		return map[string]any{"bytes_freed": freed, "build_id": env.BuildID}, nil
	})
	return res, err
}
