package sqlstore

import (
	"context"
	"fmt"
)

// moveBuildRef records that one environment's current build went from old to new ("" for
// none) in build_refs, in the caller's transaction, the rows updated in id order (as
// moveLockRef does, so two commits cannot deadlock). Build.CurrentEnvs reads it: a count kept,
// not counted, however many environments share a build.
func (s *Store) moveBuildRef(ctx context.Context, r runner, old, new string) error {
	if old == new {
		return nil
	}
	steps := [][2]any{{old, -1}, {new, 1}}
	if new < old {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, st := range steps {
		if st[0] == "" {
			continue
		}
		if _, err := r.exec(ctx, `INSERT INTO build_refs (build_id, envs) VALUES ($1, $2)
			ON CONFLICT (build_id) DO UPDATE SET envs = build_refs.envs + $2`, st[0], st[1]); err != nil {
			return fmt.Errorf("count the environments of build %s: %w", st[0], err)
		}
	}
	return nil
}
