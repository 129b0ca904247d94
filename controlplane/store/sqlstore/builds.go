package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
)

// buildCols are a build's columns, then how many environments' current revision references it
// (envs.build_id, indexed).
const buildCols = `b.id, b.python_path, b.python_full_version, b.lock_digest, b.state, b.packages_installed, b.bytes,
	b.created_at, b.last_used_at, COALESCE((SELECT f.envs FROM build_refs f WHERE f.build_id = b.id), 0)`

func (s *Store) scanBuild(r scanner) (store.Build, error) {
	var b store.Build
	err := r.Scan(&b.ID, &b.PythonPath, &b.PythonFullVersion, &b.LockDigest, &b.State, &b.PackagesInstalled, &b.Bytes,
		s.scanTime(&b.CreatedAt), s.scanTime(&b.LastUsedAt), &b.CurrentEnvs)
	return b, err
}

// validBuildState refuses a state that is not one of the store's build states.
func validBuildState(state string) error {
	switch state {
	case store.BuildReady, store.BuildRemoved, store.BuildDamaged:
		return nil
	}
	return fmt.Errorf("unknown build state %q", state)
}

// RecordBuild implements store.Store.
func (s *Store) RecordBuild(ctx context.Context, b store.Build, now time.Time) error {
	now = orNow(now)
	if b.ID == "" {
		return fmt.Errorf("record build: no id")
	}
	if err := validBuildState(b.State); err != nil {
		return fmt.Errorf("record build %s: %w", b.ID, err)
	}
	used, created, keepCreated := b.LastUsedAt, b.CreatedAt, b.CreatedAt.IsZero()
	if used.IsZero() {
		used = now
	}
	if keepCreated {
		created = now
	}
	err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
		// The build's row first, then its environments: the order every transaction locks them in.
		if _, err := r.exec(ctx, `INSERT INTO builds (id, python_path, python_full_version, lock_digest, state,
				packages_installed, bytes, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (id) DO UPDATE SET python_path = excluded.python_path,
				python_full_version = excluded.python_full_version, lock_digest = excluded.lock_digest,
				state = excluded.state, packages_installed = excluded.packages_installed, bytes = excluded.bytes,
				created_at = CASE WHEN $10 THEN builds.created_at ELSE excluded.created_at END,
				last_used_at = CASE WHEN builds.last_used_at < excluded.last_used_at THEN excluded.last_used_at
					ELSE builds.last_used_at END`,
			b.ID, b.PythonPath, b.PythonFullVersion, b.LockDigest, b.State, b.PackagesInstalled, b.Bytes,
			s.time(created), s.time(used), keepCreated); err != nil {
			return err
		}
		return s.buildEnvsFollow(ctx, r, b.ID, b.State, now)
	})
	if err != nil {
		return fmt.Errorf("record build %s: %w", b.ID, err)
	}
	return nil
}

// buildEnvsFollow moves the environments whose current build is id to the state the build's
// state implies: HIBERNATED (from ACTIVE or IDLE) when it is removed, ACTIVE (from HIBERNATED)
// when it is ready. Environments mid-change or in ERROR keep their state.
func (s *Store) buildEnvsFollow(ctx context.Context, r runner, id, state string, now time.Time) error {
	var q string
	var args []any
	switch state {
	case store.BuildRemoved:
		q = `UPDATE envs SET state = $1, updated_at = $2 WHERE build_id = $3 AND state IN ($4, $5)`
		args = []any{store.StateHibernated, s.time(now), id, store.StateActive, store.StateIdle}
	case store.BuildReady:
		q = `UPDATE envs SET state = $1, updated_at = $2 WHERE build_id = $3 AND state = $4`
		args = []any{store.StateActive, s.time(now), id, store.StateHibernated}
	default:
		return nil
	}
	if _, err := r.exec(ctx, q, args...); err != nil {
		return fmt.Errorf("move the environments of build %s: %w", id, err)
	}
	return nil
}

// GetBuild implements store.Store.
func (s *Store) GetBuild(ctx context.Context, id string) (store.Build, error) {
	b, err := s.scanBuild(s.read().row(ctx, `SELECT `+buildCols+` FROM builds b WHERE b.id = $1`, id))
	if err != nil {
		return store.Build{}, fmt.Errorf("get build %s: %w", id, notFound(err))
	}
	return b, nil
}

// CountBuilds implements store.Store.
func (s *Store) CountBuilds(ctx context.Context) (map[string]int, error) {
	counts, err := s.countByState(ctx, "builds")
	if err != nil {
		return nil, fmt.Errorf("count builds: %w", err)
	}
	return counts, nil
}

// ListBuilds implements store.Store. Only the filters asked for are in the query, so that the
// planner sees "state = $1" and uses builds_state_used.
func (s *Store) ListBuilds(ctx context.Context, f store.BuildFilter) ([]store.Build, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.State != "" {
		where = append(where, "b.state = "+arg(f.State))
	}
	if f.OnDisk {
		where = append(where, "b.state <> "+arg(store.BuildRemoved))
	}
	if !f.UnusedBefore.IsZero() {
		where = append(where, "b.last_used_at < "+arg(s.time(f.UnusedBefore)))
	}
	if f.Unreferenced {
		// build_refs, not envs: the planner may answer an anti-join with envs by reading its
		// build index whole (TestPlans saw it choose a merge join); build_refs has a row a build.
		where = append(where, "NOT EXISTS (SELECT 1 FROM build_refs f WHERE f.build_id = b.id AND f.envs > 0)")
	}
	if !f.After.IsZero() {
		where = append(where, "(b.last_used_at, b.id) > ("+arg(s.time(f.After.LastUsedAt))+", "+arg(f.After.BuildID)+")")
	}
	q := `SELECT ` + buildCols + ` FROM builds b`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY b.last_used_at, b.id LIMIT " + arg(sqlLimit(f.Limit))
	rows, err := s.read().query(ctx, q, args...)
	builds, err := collect(rows, err, s.scanBuild)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	return builds, nil
}

// SetBuildState implements store.Store. The build's row is locked before its environments' (as
// in CommitRevision), so a commit onto the build either precedes the change and is moved with
// the others, or follows it and sees the new state.
func (s *Store) SetBuildState(ctx context.Context, id, state string, now time.Time) error {
	now = orNow(now)
	if err := validBuildState(state); err != nil {
		return fmt.Errorf("set state of build %s: %w", id, err)
	}
	err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
		res, err := r.exec(ctx, `UPDATE builds SET state = $1 WHERE id = $2`, state, id)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return err
		}
		return s.buildEnvsFollow(ctx, r, id, state, now)
	})
	if err != nil {
		return fmt.Errorf("set state of build %s to %s: %w", id, state, err)
	}
	return nil
}
