package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/envfabric/envfabric/shared/envid"
)

// SetPreload implements store.Store.
func (s *Store) SetPreload(ctx context.Context, key envid.Key, modules []string) error {
	v, err := encodePreload(modules)
	if err != nil {
		return err
	}
	res, err := s.exec(ctx, `UPDATE envs SET preload = $4
		WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`, key.WorkflowID, key.NodeID, key.VersionID, v)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("set the preload list of %s: %w", key, err)
	}
	return nil
}

// encodePreload stores a list as a JSON array, and none as the empty string (the column's default), so the
// environments without one cost a byte.
func encodePreload(modules []string) (string, error) {
	if len(modules) == 0 {
		return "", nil
	}
	b, err := json.Marshal(modules)
	if err != nil {
		return "", fmt.Errorf("encode preload list: %w", err)
	}
	return string(b), nil
}

func decodePreload(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	var out []string
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, fmt.Errorf("decode preload list %q: %w", v, err)
	}
	return out, nil
}
