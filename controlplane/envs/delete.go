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

// Delete removes an environment from the storage and the database (its audit history stays).
func (s *Service) Delete(ctx context.Context, c Caller, key envid.Key) (DeleteResult, error) {
	return s.remove(ctx, c, key, "delete", nil)
}

func (s *Service) remove(ctx context.Context, c Caller, key envid.Key, kind string, params map[string]any) (DeleteResult, error) {
	var res DeleteResult
	if _, err := s.getEnv(ctx, key); err != nil {
		return res, err
	}
	o := op{key: key, kind: kind, exclusive: true, state: store.StateDeleting, caller: c, need: &Need{}, params: params}
	err := s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		uctx, cancel := s.uvContext(ctx)
		defer cancel()
		freed, err := r.agent.Delete(uctx, key)
		if err != nil {
			s.setStateAfter(ctx, key, err)
			return nil, err
		}
		if err := s.store.DeleteEnv(ctx, key, r.lease.ID); err != nil {
			return nil, dbErr("removing the environment's record", err)
		}
		res = DeleteResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Status: "deleted", BytesFreed: freed, OperationID: r.id}
		return map[string]any{"bytes_freed": freed}, nil
	})
	return res, err
}
