package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

const envCols = `workflow_id, node_id, version_id, state, python_version, python_path, env_path, revision,
	build_id, disk_revision, last_error, created_at, updated_at, last_used_at, preload`

func (s *Store) scanEnv(r scanner) (store.Env, error) {
	var e store.Env
	var preload string
	err := r.Scan(&e.Key.WorkflowID, &e.Key.NodeID, &e.Key.VersionID, &e.State, &e.PythonVersion, &e.PythonPath,
		&e.EnvPath, &e.Revision, &e.BuildID, &e.DiskRevision, &e.LastError, s.scanTime(&e.CreatedAt), s.scanTime(&e.UpdatedAt), s.scanTime(&e.LastUsedAt), &preload)
	if err == nil {
		e.Preload, err = decodePreload(preload)
	}
	return e, err
}

// CreateEnv implements store.Store. Under the key's lock it looks at the row in the way: none, or
// a CREATING one whose creator holds no live lease (it died), which is replaced.
func (s *Store) CreateEnv(ctx context.Context, env store.Env, now time.Time) error {
	now = orNow(now)
	k := env.Key
	used := env.LastUsedAt
	if used.IsZero() {
		used = now
	}
	err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
		if err := s.d.LockKey(ctx, tx, envLockKey(k)...); err != nil {
			return err
		}
		var state string
		err := r.row(ctx, `SELECT state FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
			k.WorkflowID, k.NodeID, k.VersionID).Scan(&state)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case state != store.StateCreating:
			return store.ErrExists
		default:
			var live bool
			if err := r.row(ctx, `SELECT EXISTS (SELECT 1 FROM env_leases
				WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND expires_at > $4)`,
				k.WorkflowID, k.NodeID, k.VersionID, s.time(now)).Scan(&live); err != nil {
				return err
			}
			if live {
				return store.ErrExists
			}
			s.log.Info("replacing environment abandoned while creating", "env", k.String())
			if _, err := r.exec(ctx, `DELETE FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
				k.WorkflowID, k.NodeID, k.VersionID); err != nil {
				return err
			}
		}
		preload, err := encodePreload(env.Preload)
		if err != nil {
			return err
		}
		_, err = r.exec(ctx, `INSERT INTO envs (`+envCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14)`,
			k.WorkflowID, k.NodeID, k.VersionID, env.State, env.PythonVersion, env.PythonPath, env.EnvPath,
			env.Revision, env.BuildID, env.DiskRevision, env.LastError, s.time(now), s.time(used), preload)
		if s.d.IsUniqueViolation(err) {
			// The key's lock makes this unreachable; should a writer bypass it, the answer stays true.
			return store.ErrExists
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create environment %s: %w", k, err)
	}
	return nil
}

// GetEnv implements store.Store.
func (s *Store) GetEnv(ctx context.Context, key envid.Key) (store.Env, error) {
	e, err := s.scanEnv(s.read().row(ctx, `SELECT `+envCols+` FROM envs
		WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`, key.WorkflowID, key.NodeID, key.VersionID))
	if err != nil {
		return store.Env{}, fmt.Errorf("get environment %s: %w", key, notFound(err))
	}
	return e, nil
}

// ListEnvs implements store.Store.
func (s *Store) ListEnvs(ctx context.Context, f store.ListFilter) ([]store.Env, error) {
	a := f.After
	q := `SELECT ` + envCols + ` FROM envs WHERE (workflow_id, node_id, version_id) > ($1, $2, $3)`
	args := []any{a.WorkflowID, a.NodeID, a.VersionID}
	if f.WorkflowID != "" {
		// One workflow is an equality on the key's first column and a range on the rest, so that
		// both databases read that workflow's rows only, wherever it lies among the others (an
		// "any workflow or this one" condition is read from the cursor to the end).
		switch {
		case a.WorkflowID < f.WorkflowID:
			a = envid.Key{WorkflowID: f.WorkflowID}
		case a.WorkflowID > f.WorkflowID:
			return []store.Env{}, nil
		}
		q = `SELECT ` + envCols + ` FROM envs WHERE workflow_id = $1 AND (node_id, version_id) > ($2, $3)`
		args = []any{f.WorkflowID, a.NodeID, a.VersionID}
	}
	rows, err := s.read().query(ctx, q+` ORDER BY workflow_id, node_id, version_id LIMIT $4`, append(args, sqlLimit(f.Limit))...)
	envs, err := collect(rows, err, s.scanEnv)
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	return envs, nil
}

// IdleEnvs implements store.Store.
func (s *Store) IdleEnvs(ctx context.Context, cutoff time.Time, limit int) ([]store.Env, error) {
	return s.IdleEnvsAfter(ctx, cutoff, store.CleanupCursor{}, limit)
}

// IdleEnvsAfter implements store.Store. The row comparison and the order are those of the
// envs_idle index, so a page reads limit rows of it wherever it starts.
func (s *Store) IdleEnvsAfter(ctx context.Context, cutoff time.Time, after store.CleanupCursor, limit int) ([]store.Env, error) {
	q := `SELECT ` + envCols + ` FROM envs WHERE last_used_at < $1`
	args := []any{s.time(cutoff), sqlLimit(limit)}
	if !after.IsZero() {
		k := after.Key
		q += ` AND (last_used_at, workflow_id, node_id, version_id) > ($3, $4, $5, $6)`
		args = append(args, s.time(after.LastUsedAt), k.WorkflowID, k.NodeID, k.VersionID)
	}
	rows, err := s.read().query(ctx, q+` ORDER BY last_used_at, workflow_id, node_id, version_id LIMIT $2`, args...)
	envs, err := collect(rows, err, s.scanEnv)
	if err != nil {
		return nil, fmt.Errorf("list idle environments: %w", err)
	}
	return envs, nil
}

// CountIdleEnvs counts the ACTIVE environments last used before unusedSince: the ones the API
// reports IDLE (the metrics' IDLE series).
func (s *Store) CountIdleEnvs(ctx context.Context, unusedSince time.Time) (int, error) {
	var n int
	if err := s.read().row(ctx, `SELECT count(*) FROM envs WHERE state = $1 AND last_used_at < $2`,
		store.StateActive, s.time(unusedSince)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count idle envs: %w", err)
	}
	return n, nil
}

// CountEnvs implements store.Store.
func (s *Store) CountEnvs(ctx context.Context) (map[string]int, error) {
	counts, err := s.countByState(ctx, "envs")
	if err != nil {
		return nil, fmt.Errorf("count envs: %w", err)
	}
	return counts, nil
}

// countByState counts the rows of table (envs or builds: a constant, never input) by state.
func (s *Store) countByState(ctx context.Context, table string) (map[string]int, error) {
	rows, err := s.read().query(ctx, `SELECT state, count(*) FROM `+table+` GROUP BY state`)
	type count struct {
		state string
		n     int
	}
	counts, err := collect(rows, err, func(r scanner) (c count, err error) { return c, r.Scan(&c.state, &c.n) })
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(counts))
	for _, c := range counts {
		out[c.state] = c.n
	}
	return out, nil
}

// SetState implements store.Store.
func (s *Store) SetState(ctx context.Context, key envid.Key, state, lastError string, now time.Time) error {
	res, err := s.exec(ctx, `UPDATE envs SET state = $1, last_error = $2, updated_at = $3
		WHERE workflow_id = $4 AND node_id = $5 AND version_id = $6`,
		state, lastError, s.time(orNow(now)), key.WorkflowID, key.NodeID, key.VersionID)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("set state of %s to %s: %w", key, state, err)
	}
	return nil
}

// Touch implements store.Store. CASE rather than GREATEST or max(): the one both databases have.
// Two statements, not one transaction: each only moves a time forward, and holding the
// environment's row while waiting for the build's would invert the order SetBuildState locks
// them in (build, then its environments).
func (s *Store) Touch(ctx context.Context, key envid.Key, t time.Time) error {
	at := s.time(orNow(t))
	res, err := s.exec(ctx, `UPDATE envs SET last_used_at = CASE WHEN last_used_at < $1 THEN $1 ELSE last_used_at END
		WHERE workflow_id = $2 AND node_id = $3 AND version_id = $4`,
		at, key.WorkflowID, key.NodeID, key.VersionID)
	if err == nil {
		err = oneRow(res)
	}
	if err == nil {
		_, err = s.exec(ctx, `UPDATE builds SET last_used_at = CASE WHEN last_used_at < $1 THEN $1 ELSE last_used_at END
			WHERE id = (SELECT build_id FROM envs WHERE workflow_id = $2 AND node_id = $3 AND version_id = $4)`,
			at, key.WorkflowID, key.NodeID, key.VersionID)
	}
	if err != nil {
		return fmt.Errorf("touch %s: %w", key, err)
	}
	return nil
}

// CommitRevision implements store.Store: fenced on the lease, then a compare-and-set on the base
// revision with the environment's row locked until the end. The files go into contents once
// each; the revision references their digests.
func (s *Store) CommitRevision(ctx context.Context, c store.Commit) (int64, error) {
	now := orNow(c.Now)
	k := c.Key
	pd, ld := store.Digest(c.PyprojectTOML), store.Digest(c.UvLock)
	var rev int64
	err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
		if err := s.fence(ctx, r, k, c.LeaseID, now); err != nil {
			return err
		}
		// The build's row before the environment's: the order SetBuildState and RecordBuild
		// lock them in, so that hibernating the build and committing it cannot deadlock, and a
		// commit never misses the build's removal.
		var buildState string
		if c.BuildID != "" {
			err := r.row(ctx, `SELECT state FROM builds WHERE id = $1`+s.d.RowLock("FOR SHARE"), c.BuildID).Scan(&buildState)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("build %s: %w", c.BuildID, store.ErrUnknownBuild)
			}
			if err != nil {
				return err
			}
		}
		var (
			disk                  int64
			curPyproject, curLock sql.NullString
			curBuild              sql.NullString
			envBuild              string
		)
		err := r.row(ctx, `SELECT e.revision, e.disk_revision, r.pyproject_digest, r.lock_digest, r.build_id, e.build_id FROM envs e
			LEFT JOIN env_revisions r ON r.workflow_id = e.workflow_id AND r.node_id = e.node_id
				AND r.version_id = e.version_id AND r.revision = e.revision
			WHERE e.workflow_id = $1 AND e.node_id = $2 AND e.version_id = $3`+s.d.RowLock("FOR UPDATE OF e"),
			k.WorkflowID, k.NodeID, k.VersionID).Scan(&rev, &disk, &curPyproject, &curLock, &curBuild, &envBuild)
		if err != nil {
			return notFound(err)
		}
		if rev != c.Base {
			return &store.StaleBaseError{Key: k, Base: c.Base, Current: rev}
		}
		switch {
		case curPyproject.Valid && curPyproject.String == pd && curLock.String == ld:
			// The same files: no new revision, but the current one may be installed as another
			// build now (a fresh interpreter), which the directory does not show yet.
			if curBuild.String != c.BuildID {
				if _, err := r.exec(ctx, `UPDATE env_revisions SET build_id = $1
					WHERE workflow_id = $2 AND node_id = $3 AND version_id = $4 AND revision = $5`,
					c.BuildID, k.WorkflowID, k.NodeID, k.VersionID, rev); err != nil {
					return err
				}
				disk = min(disk, rev-1)
			}
		default:
			if err := s.putContents(ctx, tx, r, map[string]string{pd: c.PyprojectTOML, ld: c.UvLock}); err != nil {
				return err
			}
			if err := s.indexLock(ctx, r, ld, c.UvLock); err != nil { // packages.go
				return err
			}
			if err := s.moveLockRef(ctx, r, curLock.String, ld); err != nil { // packages.go
				return err
			}
			rev++
			if _, err := r.exec(ctx, `INSERT INTO env_revisions (workflow_id, node_id, version_id, revision,
				pyproject_digest, lock_digest, build_id, operation_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				k.WorkflowID, k.NodeID, k.VersionID, rev, pd, ld, c.BuildID, c.OperationID, s.time(now)); err != nil {
				return err
			}
		}
		if c.BuildID == "" {
			disk = rev // installed in place (the layout before builds): the directory is the revision
		}
		if err := s.moveBuildRef(ctx, r, envBuild, c.BuildID); err != nil { // buildrefs.go
			return err
		}
		state := c.State
		if buildState == store.BuildRemoved && (state == store.StateActive || state == store.StateIdle) {
			state = store.StateHibernated
		}
		_, err = r.exec(ctx, `UPDATE envs SET state = COALESCE(NULLIF($1, ''), state), revision = $2,
			python_version = COALESCE(NULLIF($3, ''), python_version), python_path = COALESCE(NULLIF($4, ''), python_path),
			env_path = COALESCE(NULLIF($5, ''), env_path), last_error = '', updated_at = $6,
			build_id = $7, disk_revision = $8, lock_digest = $12
			WHERE workflow_id = $9 AND node_id = $10 AND version_id = $11`,
			state, rev, c.PythonVersion, c.PythonPath, c.EnvPath, s.time(now), c.BuildID, disk,
			k.WorkflowID, k.NodeID, k.VersionID, ld)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("commit revision of %s: %w", k, err)
	}
	return rev, nil
}

// putContents stores each body under its digest unless stored already. Each digest's key lock
// is held to the end of the transaction, so that DeleteEnv, which removes contents no revision
// references under the same locks, cannot remove one this transaction is about to reference.
func (s *Store) putContents(ctx context.Context, tx *sql.Tx, r runner, bodies map[string]string) error {
	if err := s.lockContents(ctx, tx, slices.Collect(maps.Keys(bodies))); err != nil {
		return err
	}
	for digest, body := range bodies {
		if _, err := r.exec(ctx, `INSERT INTO contents (digest, body) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING`,
			digest, body); err != nil {
			return fmt.Errorf("store contents %s: %w", digest, err)
		}
	}
	return nil
}

// lockContents takes the key locks of digests in one order (sorted), so that two transactions
// taking several never deadlock.
func (s *Store) lockContents(ctx context.Context, tx *sql.Tx, digests []string) error {
	slices.Sort(digests)
	for _, d := range slices.Compact(digests) {
		if err := s.d.LockKey(ctx, tx, "contents", d); err != nil {
			return err
		}
	}
	return nil
}

// GetRevision implements store.Store.
func (s *Store) GetRevision(ctx context.Context, key envid.Key, n int64) (store.Revision, error) {
	r := store.Revision{Key: key}
	err := s.read().row(ctx, `SELECT r.revision, p.body, l.body, r.operation_id, r.build_id, r.created_at
		FROM env_revisions r JOIN envs e ON e.workflow_id = r.workflow_id AND e.node_id = r.node_id
			AND e.version_id = r.version_id
		JOIN contents p ON p.digest = r.pyproject_digest
		JOIN contents l ON l.digest = r.lock_digest
		WHERE r.workflow_id = $1 AND r.node_id = $2 AND r.version_id = $3
			AND r.revision = CASE WHEN CAST($4 AS bigint) = 0 THEN e.revision ELSE $4 END`,
		key.WorkflowID, key.NodeID, key.VersionID, n).Scan(&r.Number, &r.PyprojectTOML, &r.UvLock, &r.OperationID,
		&r.BuildID, s.scanTime(&r.CreatedAt))
	if err != nil {
		return store.Revision{}, fmt.Errorf("get revision %d of %s: %w", n, key, notFound(err))
	}
	return r, nil
}

// DeleteEnv implements store.Store. The revisions go with the row (ON DELETE CASCADE); then the
// contents they referenced that no other revision does, under the contents' key locks (see
// putContents).
func (s *Store) DeleteEnv(ctx context.Context, key envid.Key, leaseID string) error {
	err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
		if err := s.fence(ctx, r, key, leaseID, time.Now()); err != nil {
			return err
		}
		rows, err := r.query(ctx, `SELECT pyproject_digest FROM env_revisions
				WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3
			UNION SELECT lock_digest FROM env_revisions WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
			key.WorkflowID, key.NodeID, key.VersionID)
		digests, err := collect(rows, err, func(r scanner) (d string, err error) { return d, r.Scan(&d) })
		if err != nil {
			return err
		}
		if err := s.lockContents(ctx, tx, digests); err != nil {
			return err
		}
		var lock, build string
		if err := r.row(ctx, `SELECT lock_digest, build_id FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
			key.WorkflowID, key.NodeID, key.VersionID).Scan(&lock, &build); err != nil {
			return notFound(err)
		}
		res, err := r.exec(ctx, `DELETE FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
			key.WorkflowID, key.NodeID, key.VersionID)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return err
		}
		if err := s.moveLockRef(ctx, r, lock, ""); err != nil { // packages.go
			return err
		}
		if err := s.moveBuildRef(ctx, r, build, ""); err != nil { // buildrefs.go
			return err
		}
		for _, d := range digests {
			if _, err := r.exec(ctx, `DELETE FROM contents WHERE digest = $1
				AND NOT EXISTS (SELECT 1 FROM env_revisions WHERE pyproject_digest = $1)
				AND NOT EXISTS (SELECT 1 FROM env_revisions WHERE lock_digest = $1)`, d); err != nil {
				return fmt.Errorf("remove contents %s: %w", d, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete environment %s: %w", key, err)
	}
	return nil
}

// MarkOnDisk implements store.Store.
func (s *Store) MarkOnDisk(ctx context.Context, key envid.Key, revision int64, now time.Time) error {
	res, err := s.exec(ctx, `UPDATE envs SET disk_revision = CASE
			WHEN disk_revision < $1 AND $1 <= revision THEN $1 ELSE disk_revision END
		WHERE workflow_id = $2 AND node_id = $3 AND version_id = $4`,
		revision, key.WorkflowID, key.NodeID, key.VersionID)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("mark revision %d of %s on disk: %w", revision, key, err)
	}
	return nil
}

// EnvsBehindDisk implements store.Store. "disk_revision < revision" is the partial index's
// predicate, written the same so that the planners use it. The leases in the way are those a
// change would meet (store.LeaseMode.Conflicts): switching the directory is a change's work.
func (s *Store) EnvsBehindDisk(ctx context.Context, updatedBefore, now time.Time, limit int) ([]store.Env, error) {
	in, modes := modeIn(4, store.LeaseChange.ConflictingModes())
	args := append([]any{s.time(updatedBefore), s.time(orNow(now)), sqlLimit(limit)}, modes...)
	rows, err := s.read().query(ctx, `SELECT `+envCols+` FROM envs e
		WHERE disk_revision < revision AND updated_at < $1
			AND NOT EXISTS (SELECT 1 FROM env_leases l WHERE l.workflow_id = e.workflow_id AND l.node_id = e.node_id
				AND l.version_id = e.version_id AND l.expires_at > $2 AND l.mode IN (`+in+`))
		ORDER BY updated_at, workflow_id, node_id, version_id LIMIT $3`, args...)
	envs, err := collect(rows, err, s.scanEnv)
	if err != nil {
		return nil, fmt.Errorf("list environments behind their revision on disk: %w", err)
	}
	return envs, nil
}

// EnvsToRepair implements store.Store.
func (s *Store) EnvsToRepair(ctx context.Context, updatedBefore, now time.Time, limit int) ([]store.Env, error) {
	// An IN list of placeholders: the one form of "state is one of these" both dialects take.
	args := make([]any, 0, len(store.RepairStates)+3)
	marks := make([]string, 0, len(store.RepairStates))
	for i, st := range store.RepairStates {
		args = append(args, st)
		marks = append(marks, fmt.Sprintf("$%d", i+1))
	}
	n := len(store.RepairStates)
	args = append(args, s.time(updatedBefore), s.time(orNow(now)), sqlLimit(limit))
	rows, err := s.read().query(ctx, fmt.Sprintf(`SELECT `+envCols+` FROM envs e
		WHERE state IN (%s) AND updated_at < $%d
			AND NOT EXISTS (SELECT 1 FROM env_leases l WHERE l.workflow_id = e.workflow_id AND l.node_id = e.node_id
				AND l.version_id = e.version_id AND l.expires_at > $%d)
		ORDER BY updated_at, workflow_id, node_id, version_id LIMIT $%d`, strings.Join(marks, ", "), n+1, n+2, n+3), args...)
	envs, err := collect(rows, err, s.scanEnv)
	if err != nil {
		return nil, fmt.Errorf("list environments to repair: %w", err)
	}
	return envs, nil
}
