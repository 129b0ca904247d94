package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
)

// CleanupCursor implements store.Store.
func (s *Store) CleanupCursor(ctx context.Context, name string) (store.CleanupCursor, error) {
	var c store.CleanupCursor
	err := s.read().row(ctx, `SELECT last_used_at, workflow_id, node_id, version_id, build_id
		FROM cleanup_cursors WHERE name = $1`, name).
		Scan(timeCol{s.d, &c.LastUsedAt}, &c.Key.WorkflowID, &c.Key.NodeID, &c.Key.VersionID, &c.BuildID)
	if errors.Is(err, sql.ErrNoRows) {
		return store.CleanupCursor{}, nil
	}
	if err != nil {
		return store.CleanupCursor{}, fmt.Errorf("read the %s cleanup cursor: %w", name, err)
	}
	return c, nil
}

// SaveCleanupCursor implements store.Store.
func (s *Store) SaveCleanupCursor(ctx context.Context, name string, c store.CleanupCursor, now time.Time) error {
	var err error
	if c.IsZero() {
		_, err = s.exec(ctx, `DELETE FROM cleanup_cursors WHERE name = $1`, name)
	} else {
		_, err = s.exec(ctx, `INSERT INTO cleanup_cursors (name, last_used_at, workflow_id, node_id, version_id, build_id, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (name) DO UPDATE SET last_used_at = excluded.last_used_at, workflow_id = excluded.workflow_id,
				node_id = excluded.node_id, version_id = excluded.version_id, build_id = excluded.build_id,
				updated_at = excluded.updated_at`,
			name, s.time(c.LastUsedAt), c.Key.WorkflowID, c.Key.NodeID, c.Key.VersionID, c.BuildID, s.time(orNow(now)))
	}
	if err != nil {
		return fmt.Errorf("save the %s cleanup cursor: %w", name, err)
	}
	return nil
}
