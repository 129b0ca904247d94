// Package postgres implements store.Store on PostgreSQL through a pgx connection pool, for
// control planes that share one database (DATABASE_URL).
//
// Migrations run under a session advisory lock on one pinned connection, each in its own
// transaction with its version row. Lease acquisition, environment creation and fenced commits
// take a transaction-scoped advisory lock on the environment's key, so they are atomic across
// every control plane sharing the database. Advisory-lock keys are FNV-64a hashes of namespaced
// strings, never hashtext.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the PostgreSQL store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

var _ store.Store = (*Store)(nil)

// Open connects to url, applies the migrations and checks the connection.
func Open(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL pool: %w", err)
	}
	s := &Store{pool: pool, log: logger}
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate PostgreSQL database: %w", err)
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping runs SELECT 1.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping PostgreSQL: %w", err)
	}
	return nil
}

// lockKey is a 64-bit advisory-lock key for name in the envfabric namespace.
func lockKey(parts ...string) int64 {
	h := fnv.New64a()
	h.Write([]byte("envfabric"))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return int64(h.Sum64())
}

var migrateLock = lockKey("migrate")

func envLock(k envid.Key) int64 { return lockKey("env", k.WorkflowID, k.NodeID, k.VersionID) }

// migrate applies each embedded migration not yet recorded in schema_migrations, each in its own
// transaction with its version row, holding a session advisory lock on one connection throughout.
func (s *Store) migrate(ctx context.Context) (err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		if _, uerr := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", migrateLock); uerr != nil {
			conn.Conn().Close(ctx) // closing the session drops the lock; the pool discards the connection
			err = errors.Join(err, fmt.Errorf("release migration lock: %w", uerr))
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	ms, err := store.LoadMigrations(migrations)
	if err != nil {
		return err
	}
	for _, m := range ms {
		applied := false
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`,
				m.Version).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			applied = true
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return fmt.Errorf("apply migration %s: %w", m.Name, err)
		}
		if applied {
			s.log.Info("applied migration", "version", m.Version, "name", m.Name)
		}
	}
	return nil
}

// lockEnv takes the transaction-scoped advisory lock on key.
func lockEnv(ctx context.Context, tx pgx.Tx, key envid.Key) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", envLock(key))
	return err
}

func (s *Store) BeginOperation(ctx context.Context, op store.Operation) (int64, error) {
	if op.Status == "" {
		op.Status = store.OpRunning
	}
	if len(op.Params) == 0 {
		op.Params = json.RawMessage("{}")
	}
	k := op.Key
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO env_operations (workflow_id, node_id, version_id, operation,
		status, error_code, error_message, actor, request_id, agent, params, result, started_at, finished_at,
		duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id`,
		k.WorkflowID, k.NodeID, k.VersionID, op.Kind, op.Status, op.ErrorCode, op.ErrorMessage, op.Actor,
		op.RequestID, op.Agent, string(op.Params), store.NullJSON(op.Result), store.OrNow(op.StartedAt),
		nullTime(op.FinishedAt), op.DurationMS).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record %s operation on %s: %w", op.Kind, k, err)
	}
	return id, nil
}

func (s *Store) FinishOperation(ctx context.Context, id int64, out store.Outcome) error {
	tag, err := s.pool.Exec(ctx, `UPDATE env_operations SET status = $1, error_code = $2, error_message = $3,
		agent = COALESCE(NULLIF($4, ''), agent), result = $5, finished_at = $6, duration_ms = $7 WHERE id = $8`,
		out.Status, out.ErrorCode, out.ErrorMessage, out.Agent, store.NullJSON(out.Result), store.OrNow(out.FinishedAt),
		out.DurationMS, id)
	if err == nil {
		err = oneRow(tag)
	}
	if err != nil {
		return fmt.Errorf("finish operation %d: %w", id, err)
	}
	return nil
}

const opCols = `id, workflow_id, node_id, version_id, operation, status, error_code, error_message, actor,
	request_id, agent, params, result, started_at, finished_at, duration_ms`

func scanOp(r pgx.Row) (store.Operation, error) {
	var (
		op       store.Operation
		params   []byte
		result   []byte
		finished *time.Time
	)
	err := r.Scan(&op.ID, &op.Key.WorkflowID, &op.Key.NodeID, &op.Key.VersionID, &op.Kind, &op.Status,
		&op.ErrorCode, &op.ErrorMessage, &op.Actor, &op.RequestID, &op.Agent, &params, &result, &op.StartedAt,
		&finished, &op.DurationMS)
	op.Params, op.StartedAt = params, op.StartedAt.UTC()
	if result != nil {
		op.Result = result
	}
	if finished != nil {
		op.FinishedAt = finished.UTC()
	}
	return op, err
}

func (s *Store) ListOperations(ctx context.Context, key envid.Key, beforeID int64, limit int) ([]store.Operation, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+opCols+` FROM env_operations
		WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND ($4::bigint <= 0 OR id < $4)
		ORDER BY id DESC LIMIT $5`, key.WorkflowID, key.NodeID, key.VersionID, beforeID, sqlLimit(limit))
	ops, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Operation, error) { return scanOp(r) })
	if err != nil {
		return nil, fmt.Errorf("list operations on %s: %w", key, err)
	}
	return ops, nil
}

func (s *Store) GetOperation(ctx context.Context, id int64) (store.Operation, error) {
	op, err := scanOp(s.pool.QueryRow(ctx, `SELECT `+opCols+` FROM env_operations WHERE id = $1`, id))
	if err != nil {
		return store.Operation{}, fmt.Errorf("get operation %d: %w", id, notFound(err))
	}
	return op, nil
}

// AbandonOperations runs under the key's advisory lock, so that it sees every lease granted before it.
func (s *Store) AbandonOperations(ctx context.Context, key envid.Key, except int64, now time.Time) (int, error) {
	now = store.OrNow(now)
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockEnv(ctx, tx, key); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE env_operations SET status = $1, error_code = $2, error_message = $3,
				finished_at = $4,
				duration_ms = GREATEST(0, floor(EXTRACT(EPOCH FROM ($4::timestamptz - started_at)) * 1000))::bigint
			WHERE workflow_id = $5 AND node_id = $6 AND version_id = $7 AND status = $8 AND id <> $9
				AND id NOT IN (SELECT operation_id FROM env_leases
					WHERE workflow_id = $5 AND node_id = $6 AND version_id = $7 AND expires_at > $4)`,
			store.OpFailed, store.ErrorCodeInterrupted, store.InterruptedMessage, now,
			key.WorkflowID, key.NodeID, key.VersionID, store.OpRunning, except)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations on %s: %w", key, err)
	}
	return int(n), nil
}

const leaseCols = `id, workflow_id, node_id, version_id, exclusive, holder, operation, operation_id, acquired_at, expires_at`

func scanLease(r pgx.Row) (store.Lease, error) {
	var l store.Lease
	err := r.Scan(&l.ID, &l.Key.WorkflowID, &l.Key.NodeID, &l.Key.VersionID, &l.Exclusive, &l.Holder,
		&l.Operation, &l.OperationID, &l.AcquiredAt, &l.ExpiresAt)
	l.AcquiredAt, l.ExpiresAt = l.AcquiredAt.UTC(), l.ExpiresAt.UTC()
	return l, err
}

func (s *Store) AcquireLease(ctx context.Context, req store.LeaseRequest) (store.Lease, error) {
	now := pgTime(store.OrNow(req.Now))
	k := req.Key
	l := store.Lease{
		ID: store.NewLeaseID(), Key: k, Exclusive: req.Exclusive, Holder: req.Holder, Operation: req.Operation,
		OperationID: req.OperationID, AcquiredAt: now, ExpiresAt: pgTime(now.Add(req.TTL)),
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockEnv(ctx, tx, k); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM env_leases
			WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND expires_at <= $4`,
			k.WorkflowID, k.NodeID, k.VersionID, now); err != nil {
			return err
		}
		// An exclusive request conflicts with any lease, a shared one only with an exclusive one.
		held, err := scanLease(tx.QueryRow(ctx, `SELECT `+leaseCols+` FROM env_leases
			WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND ($4 OR exclusive)
			ORDER BY exclusive DESC, acquired_at LIMIT 1`, k.WorkflowID, k.NodeID, k.VersionID, req.Exclusive))
		if err == nil {
			return &store.LockedError{Held: held}
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO env_leases (`+leaseCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			l.ID, k.WorkflowID, k.NodeID, k.VersionID, l.Exclusive, l.Holder, l.Operation, l.OperationID,
			l.AcquiredAt, l.ExpiresAt)
		return err
	})
	if err != nil {
		return store.Lease{}, fmt.Errorf("acquire lease on %s: %w", k, err)
	}
	return l, nil
}

func (s *Store) RenewLease(ctx context.Context, id string, now time.Time, ttl time.Duration) error {
	now = store.OrNow(now)
	tag, err := s.pool.Exec(ctx, `UPDATE env_leases SET expires_at = $1 WHERE id = $2 AND expires_at > $3`,
		now.Add(ttl), id, now)
	if err == nil {
		err = oneRow(tag)
	}
	if errors.Is(err, store.ErrNotFound) {
		err = store.ErrLeaseLost
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", id, err)
	}
	return nil
}

func (s *Store) ReleaseLease(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM env_leases WHERE id = $1`, id); err != nil {
		return fmt.Errorf("release lease %s: %w", id, err)
	}
	return nil
}

func (s *Store) ListLeases(ctx context.Context, key envid.Key, now time.Time) ([]store.Lease, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+leaseCols+` FROM env_leases
		WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND expires_at > $4 ORDER BY acquired_at, id`,
		key.WorkflowID, key.NodeID, key.VersionID, store.OrNow(now))
	leases, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Lease, error) { return scanLease(r) })
	if err != nil {
		return nil, fmt.Errorf("list leases on %s: %w", key, err)
	}
	return leases, nil
}

// fence returns ErrLeaseLost unless leaseID is a live lease on key at now, and holds the lease row
// until the transaction ends so that it cannot be released under the caller.
func fence(ctx context.Context, tx pgx.Tx, key envid.Key, leaseID string, now time.Time) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM env_leases
		WHERE id = $1 AND workflow_id = $2 AND node_id = $3 AND version_id = $4 AND expires_at > $5 FOR SHARE`,
		leaseID, key.WorkflowID, key.NodeID, key.VersionID, now).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrLeaseLost
	}
	return err
}

const envCols = `workflow_id, node_id, version_id, state, python_version, python_path, env_path, revision,
	last_error, created_at, updated_at, last_used_at`

func scanEnv(r pgx.Row) (store.Env, error) {
	var e store.Env
	err := r.Scan(&e.Key.WorkflowID, &e.Key.NodeID, &e.Key.VersionID, &e.State, &e.PythonVersion, &e.PythonPath,
		&e.EnvPath, &e.Revision, &e.LastError, &e.CreatedAt, &e.UpdatedAt, &e.LastUsedAt)
	e.CreatedAt, e.UpdatedAt, e.LastUsedAt = e.CreatedAt.UTC(), e.UpdatedAt.UTC(), e.LastUsedAt.UTC()
	return e, err
}

func collectEnvs(rows pgx.Rows) ([]store.Env, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Env, error) { return scanEnv(r) })
}

func (s *Store) CreateEnv(ctx context.Context, env store.Env, now time.Time) error {
	now = store.OrNow(now)
	k := env.Key
	used := env.LastUsedAt
	if used.IsZero() {
		used = now
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockEnv(ctx, tx, k); err != nil {
			return err
		}
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
			k.WorkflowID, k.NodeID, k.VersionID).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		case state != store.StateCreating:
			return store.ErrExists
		default:
			var live bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM env_leases
				WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND expires_at > $4)`,
				k.WorkflowID, k.NodeID, k.VersionID, now).Scan(&live); err != nil {
				return err
			}
			if live {
				return store.ErrExists
			}
			s.log.Info("replacing environment abandoned while creating", "env", k.String())
			if _, err := tx.Exec(ctx, `DELETE FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
				k.WorkflowID, k.NodeID, k.VersionID); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO envs (`+envCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)`,
			k.WorkflowID, k.NodeID, k.VersionID, env.State, env.PythonVersion, env.PythonPath, env.EnvPath,
			env.Revision, env.LastError, now, used)
		return err
	})
	if err != nil {
		return fmt.Errorf("create environment %s: %w", k, err)
	}
	return nil
}

func (s *Store) GetEnv(ctx context.Context, key envid.Key) (store.Env, error) {
	e, err := scanEnv(s.pool.QueryRow(ctx, `SELECT `+envCols+` FROM envs
		WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`, key.WorkflowID, key.NodeID, key.VersionID))
	if err != nil {
		return store.Env{}, fmt.Errorf("get environment %s: %w", key, notFound(err))
	}
	return e, nil
}

func (s *Store) ListEnvs(ctx context.Context, f store.ListFilter) ([]store.Env, error) {
	a := f.After
	rows, _ := s.pool.Query(ctx, `SELECT `+envCols+` FROM envs
		WHERE ($1 = '' OR workflow_id = $1) AND (workflow_id, node_id, version_id) > ($2, $3, $4)
		ORDER BY workflow_id, node_id, version_id LIMIT $5`,
		f.WorkflowID, a.WorkflowID, a.NodeID, a.VersionID, sqlLimit(f.Limit))
	envs, err := collectEnvs(rows)
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	return envs, nil
}

func (s *Store) SetState(ctx context.Context, key envid.Key, state, lastError string, now time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE envs SET state = $1, last_error = $2, updated_at = $3
		WHERE workflow_id = $4 AND node_id = $5 AND version_id = $6`,
		state, lastError, store.OrNow(now), key.WorkflowID, key.NodeID, key.VersionID)
	if err == nil {
		err = oneRow(tag)
	}
	if err != nil {
		return fmt.Errorf("set state of %s to %s: %w", key, state, err)
	}
	return nil
}

func (s *Store) Touch(ctx context.Context, key envid.Key, t time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE envs SET last_used_at = GREATEST(last_used_at, $1)
		WHERE workflow_id = $2 AND node_id = $3 AND version_id = $4`,
		store.OrNow(t), key.WorkflowID, key.NodeID, key.VersionID)
	if err == nil {
		err = oneRow(tag)
	}
	if err != nil {
		return fmt.Errorf("touch %s: %w", key, err)
	}
	return nil
}

func (s *Store) CommitRevision(ctx context.Context, c store.Commit) (int64, error) {
	now := store.OrNow(c.Now)
	k := c.Key
	var rev int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := fence(ctx, tx, k, c.LeaseID, now); err != nil {
			return err
		}
		var pyproject, lock *string
		err := tx.QueryRow(ctx, `SELECT e.revision, r.pyproject_toml, r.uv_lock FROM envs e
			LEFT JOIN env_revisions r ON r.workflow_id = e.workflow_id AND r.node_id = e.node_id
				AND r.version_id = e.version_id AND r.revision = e.revision
			WHERE e.workflow_id = $1 AND e.node_id = $2 AND e.version_id = $3 FOR UPDATE OF e`,
			k.WorkflowID, k.NodeID, k.VersionID).Scan(&rev, &pyproject, &lock)
		if err != nil {
			return notFound(err)
		}
		if rev != c.Base {
			return &store.StaleBaseError{Key: k, Base: c.Base, Current: rev}
		}
		if pyproject == nil || *pyproject != c.PyprojectTOML || *lock != c.UvLock {
			rev++
			if _, err := tx.Exec(ctx, `INSERT INTO env_revisions (workflow_id, node_id, version_id, revision,
				pyproject_toml, uv_lock, operation_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
				k.WorkflowID, k.NodeID, k.VersionID, rev, c.PyprojectTOML, c.UvLock, c.OperationID, now); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE envs SET state = COALESCE(NULLIF($1, ''), state), revision = $2,
			python_version = COALESCE(NULLIF($3, ''), python_version), python_path = COALESCE(NULLIF($4, ''), python_path),
			env_path = COALESCE(NULLIF($5, ''), env_path), last_error = '', updated_at = $6
			WHERE workflow_id = $7 AND node_id = $8 AND version_id = $9`,
			c.State, rev, c.PythonVersion, c.PythonPath, c.EnvPath, now, k.WorkflowID, k.NodeID, k.VersionID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("commit revision of %s: %w", k, err)
	}
	return rev, nil
}

func (s *Store) GetRevision(ctx context.Context, key envid.Key, n int64) (store.Revision, error) {
	r := store.Revision{Key: key}
	err := s.pool.QueryRow(ctx, `SELECT r.revision, r.pyproject_toml, r.uv_lock, r.operation_id, r.created_at
		FROM env_revisions r JOIN envs e ON e.workflow_id = r.workflow_id AND e.node_id = r.node_id
			AND e.version_id = r.version_id
		WHERE r.workflow_id = $1 AND r.node_id = $2 AND r.version_id = $3
			AND r.revision = CASE WHEN $4::bigint = 0 THEN e.revision ELSE $4 END`,
		key.WorkflowID, key.NodeID, key.VersionID, n).Scan(&r.Number, &r.PyprojectTOML, &r.UvLock, &r.OperationID, &r.CreatedAt)
	if err != nil {
		return store.Revision{}, fmt.Errorf("get revision %d of %s: %w", n, key, notFound(err))
	}
	r.CreatedAt = r.CreatedAt.UTC()
	return r, nil
}

func (s *Store) DeleteEnv(ctx context.Context, key envid.Key, leaseID string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := fence(ctx, tx, key, leaseID, time.Now()); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
			key.WorkflowID, key.NodeID, key.VersionID)
		if err != nil {
			return err
		}
		return oneRow(tag)
	})
	if err != nil {
		return fmt.Errorf("delete environment %s: %w", key, err)
	}
	return nil
}

func (s *Store) IdleEnvs(ctx context.Context, cutoff time.Time, limit int) ([]store.Env, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+envCols+` FROM envs WHERE last_used_at < $1
		ORDER BY last_used_at, workflow_id, node_id, version_id LIMIT $2`, cutoff, sqlLimit(limit))
	envs, err := collectEnvs(rows)
	if err != nil {
		return nil, fmt.Errorf("list idle environments: %w", err)
	}
	return envs, nil
}

// oneRow turns a statement that matched nothing into ErrNotFound.
func oneRow(tag pgconn.CommandTag) error {
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// sqlLimit maps "no limit" (n <= 0) to LIMIT NULL.
func sqlLimit(n int) *int {
	if n <= 0 {
		return nil
	}
	return &n
}

// pgTime is t as timestamptz stores it: UTC, microseconds.
func pgTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// CountEnvs implements store.Store.
func (s *Store) CountEnvs(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM envs GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count envs: %w", err)
	}
	defer rows.Close()
	out, err := store.ScanStateCounts(rows)
	if err != nil {
		return nil, fmt.Errorf("count envs: %w", err)
	}
	return out, nil
}

// CountLeases implements store.Store.
func (s *Store) CountLeases(ctx context.Context, now time.Time, exclusiveOnly bool) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM env_leases WHERE expires_at > $1 AND (exclusive OR NOT $2)`,
		pgTime(store.OrNow(now)), exclusiveOnly).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count leases: %w", err)
	}
	return n, nil
}

// AdoptSetting implements store.Store.
func (s *Store) AdoptSetting(ctx context.Context, name, value string, now time.Time) (string, error) {
	var got string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO fleet_settings (name, value, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING`, name, value, pgTime(store.OrNow(now))); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT value FROM fleet_settings WHERE name = $1`, name).Scan(&got)
	})
	if err != nil {
		return "", fmt.Errorf("adopt setting %s: %w", name, err)
	}
	return got, nil
}

// Setting implements store.Store.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var got string
	err := s.pool.QueryRow(ctx, `SELECT value FROM fleet_settings WHERE name = $1`, name).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read setting %s: %w", name, err)
	}
	return got, nil
}

// AcquireLeadership implements store.Store. The conditional upsert is one statement, so two
// control planes racing for an expired term cannot both win it.
func (s *Store) AcquireLeadership(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	now = pgTime(store.OrNow(now))
	tag, err := s.pool.Exec(ctx, `INSERT INTO leaders (name, holder, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leaders.holder = excluded.holder OR leaders.expires_at <= $4`,
		name, holder, now.Add(ttl), now)
	if err != nil {
		return false, fmt.Errorf("acquire leadership %s: %w", name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ResignLeadership implements store.Store.
func (s *Store) ResignLeadership(ctx context.Context, name, holder string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM leaders WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("resign leadership %s: %w", name, err)
	}
	return nil
}

// AbandonStaleOperations implements store.Store.
func (s *Store) AbandonStaleOperations(ctx context.Context, startedBefore, now time.Time) (int, error) {
	now = pgTime(store.OrNow(now))
	tag, err := s.pool.Exec(ctx, `UPDATE env_operations SET status = $1, error_code = $2, error_message = $3,
			finished_at = $4,
			duration_ms = GREATEST(0, floor(EXTRACT(EPOCH FROM ($4::timestamptz - started_at)) * 1000))::bigint
		WHERE status = $5 AND started_at < $6
			AND id NOT IN (SELECT operation_id FROM env_leases WHERE expires_at > $4)`,
		store.OpFailed, store.ErrorCodeInterrupted, store.InterruptedMessage, now, store.OpRunning, pgTime(startedBefore))
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// EnvsToRepair implements store.Store.
func (s *Store) EnvsToRepair(ctx context.Context, updatedBefore, now time.Time, limit int) ([]store.Env, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+envCols+` FROM envs e
		WHERE state = ANY($1) AND updated_at < $2
			AND NOT EXISTS (SELECT 1 FROM env_leases l WHERE l.workflow_id = e.workflow_id AND l.node_id = e.node_id
				AND l.version_id = e.version_id AND l.expires_at > $3)
		ORDER BY updated_at, workflow_id, node_id, version_id LIMIT $4`,
		store.RepairStates, pgTime(updatedBefore), pgTime(store.OrNow(now)), sqlLimit(limit))
	envs, err := collectEnvs(rows)
	if err != nil {
		return nil, fmt.Errorf("list environments to repair: %w", err)
	}
	return envs, nil
}
