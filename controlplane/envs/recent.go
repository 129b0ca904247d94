package envs

import (
	"context"

	"github.com/envfabric/envfabric/shared/envid"
)

// FleetOperation is one audit row with the environment it was on, for fleet-wide views.
type FleetOperation struct {
	Key envid.Key
	OperationView
}

// RecentCleanups returns the cleanup removals recorded on every environment (scheduled and
// asked for), newest first; before > 0 pages on (operation ids below it).
func (s *Service) RecentCleanups(ctx context.Context, before int64, limit int) ([]FleetOperation, error) {
	ops, err := s.store.ListOperationsOfKind(ctx, "cleanup", before, limit)
	if err != nil {
		return nil, dbErr("reading cleanups", err)
	}
	out := make([]FleetOperation, 0, len(ops))
	for _, o := range ops {
		out = append(out, FleetOperation{Key: o.Key, OperationView: operationView(o)})
	}
	return out, nil
}
