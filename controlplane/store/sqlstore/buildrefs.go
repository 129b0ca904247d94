package sqlstore

import (
	"context"
	"fmt"
)

// refStep is one change of a kept count (lock_refs, build_refs).
type refStep struct {
	key   string
	delta int
}

// refSteps are the count changes of one environment moving from old to new ("" for none): old
// loses it, new gains it, in key order, so two transactions moving environments in opposite
// directions take the rows in the same order and cannot deadlock.
func refSteps(old, new string) []refStep {
	if old == new {
		return nil
	}
	steps := []refStep{{old, -1}, {new, 1}}
	if new < old {
		steps[0], steps[1] = steps[1], steps[0]
	}
	out := steps[:0]
	for _, st := range steps {
		if st.key != "" {
			out = append(out, st)
		}
	}
	return out
}

// moveBuildRef records that one environment's current build went from old to new ("" for none)
// in build_refs, in the caller's transaction. Build.CurrentEnvs reads it: a count kept, not
// counted, however many environments share a build.
func (s *Store) moveBuildRef(ctx context.Context, r runner, old, new string) error {
	for _, st := range refSteps(old, new) {
		if _, err := r.exec(ctx, `INSERT INTO build_refs (build_id, envs) VALUES ($1, $2)
			ON CONFLICT (build_id) DO UPDATE SET envs = build_refs.envs + $2`, st.key, st.delta); err != nil {
			return fmt.Errorf("count the environments of build %s: %w", st.key, err)
		}
	}
	return nil
}
