// Package sqlite implements store.Store on an embedded SQLite database in pure Go
// (modernc.org/sqlite), for a single-host fabric without DATABASE_URL.
//
// The database runs in WAL mode with a busy timeout, and every transaction begins IMMEDIATE, so it
// holds the write lock from BEGIN: a lease check and the insert that follows it cannot interleave
// with another writer's. Times are stored as INTEGER unix milliseconds.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the SQLite store. It is safe for concurrent use.
type Store struct {
	db  *sql.DB
	log *slog.Logger
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its directory if needed) the database at path, applies the
// migrations and checks the connection.
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open sqlite database %q: path may not contain '?' or '#'", path)
	}
	// 0700: user code in the user sandbox tier runs on this host and must not read the audit.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open sqlite database: %w", err)
	}
	dsn := path + "?_txlock=immediate&_busy_timeout=10000&_journal_mode=WAL&_foreign_keys=1&_synchronous=NORMAL"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite database %s: %w", path, err)
	}
	// Writers serialise on SQLite's write lock anyway; a few connections let readers run beside them.
	db.SetMaxOpenConns(4)
	s := &Store{db: db, log: logger}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate sqlite database %s: %w", path, err)
	}
	if err := s.Ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping runs SELECT 1.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping sqlite database: %w", err)
	}
	return nil
}

// migrate applies each embedded migration not yet recorded in schema_migrations, each in its own
// transaction with its version row. IMMEDIATE transactions serialise concurrent openers.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	ms, err := store.LoadMigrations(migrations)
	if err != nil {
		return err
	}
	for _, m := range ms {
		applied := false
		err = s.tx(ctx, func(tx *sql.Tx) error {
			var done bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?)`,
				m.Version).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			applied = true
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, time.Now().UnixMilli())
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

// tx runs fn in one (IMMEDIATE) transaction, committed when fn returns nil.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *Store) BeginOperation(ctx context.Context, op store.Operation) (int64, error) {
	if op.Status == "" {
		op.Status = store.OpRunning
	}
	if len(op.Params) == 0 {
		op.Params = json.RawMessage("{}")
	}
	k := op.Key
	res, err := s.db.ExecContext(ctx, `INSERT INTO env_operations (workflow_id, node_id, version_id, operation,
		status, error_code, error_message, actor, request_id, agent, params, result, started_at, finished_at,
		duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.WorkflowID, k.NodeID, k.VersionID, op.Kind, op.Status, op.ErrorCode, op.ErrorMessage, op.Actor,
		op.RequestID, op.Agent, string(op.Params), store.NullJSON(op.Result), ms(store.OrNow(op.StartedAt)),
		nullMS(op.FinishedAt), op.DurationMS)
	if err != nil {
		return 0, fmt.Errorf("record %s operation on %s: %w", op.Kind, k, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("record %s operation on %s: %w", op.Kind, k, err)
	}
	return id, nil
}

func (s *Store) FinishOperation(ctx context.Context, id int64, out store.Outcome) error {
	res, err := s.db.ExecContext(ctx, `UPDATE env_operations SET status = ?, error_code = ?, error_message = ?,
		agent = COALESCE(NULLIF(?, ''), agent), result = ?, finished_at = ?, duration_ms = ? WHERE id = ?`,
		out.Status, out.ErrorCode, out.ErrorMessage, out.Agent, store.NullJSON(out.Result), ms(store.OrNow(out.FinishedAt)),
		out.DurationMS, id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("finish operation %d: %w", id, err)
	}
	return nil
}

const opCols = `id, workflow_id, node_id, version_id, operation, status, error_code, error_message, actor,
	request_id, agent, params, result, started_at, finished_at, duration_ms`

func scanOp(r scanner) (store.Operation, error) {
	var (
		op       store.Operation
		params   string
		result   sql.NullString
		started  int64
		finished sql.NullInt64
	)
	err := r.Scan(&op.ID, &op.Key.WorkflowID, &op.Key.NodeID, &op.Key.VersionID, &op.Kind, &op.Status,
		&op.ErrorCode, &op.ErrorMessage, &op.Actor, &op.RequestID, &op.Agent, &params, &result, &started,
		&finished, &op.DurationMS)
	op.Params = json.RawMessage(params)
	if result.Valid {
		op.Result = json.RawMessage(result.String)
	}
	op.StartedAt = fromMS(started)
	if finished.Valid {
		op.FinishedAt = fromMS(finished.Int64)
	}
	return op, err
}

func (s *Store) ListOperations(ctx context.Context, key envid.Key, beforeID int64, limit int) ([]store.Operation, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+opCols+` FROM env_operations
		WHERE workflow_id = ? AND node_id = ? AND version_id = ? AND (? <= 0 OR id < ?)
		ORDER BY id DESC LIMIT ?`, key.WorkflowID, key.NodeID, key.VersionID, beforeID, beforeID, sqlLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list operations on %s: %w", key, err)
	}
	ops, err := collect(rows, scanOp)
	if err != nil {
		return nil, fmt.Errorf("list operations on %s: %w", key, err)
	}
	return ops, nil
}

func (s *Store) GetOperation(ctx context.Context, id int64) (store.Operation, error) {
	op, err := scanOp(s.db.QueryRowContext(ctx, `SELECT `+opCols+` FROM env_operations WHERE id = ?`, id))
	if err != nil {
		return store.Operation{}, fmt.Errorf("get operation %d: %w", id, notFound(err))
	}
	return op, nil
}

func (s *Store) AbandonOperations(ctx context.Context, key envid.Key, except int64, now time.Time) (int, error) {
	t := ms(store.OrNow(now))
	res, err := s.db.ExecContext(ctx, `UPDATE env_operations SET status = ?, error_code = ?, error_message = ?,
			finished_at = ?, duration_ms = max(0, ? - started_at)
		WHERE workflow_id = ? AND node_id = ? AND version_id = ? AND status = ? AND id <> ?
			AND id NOT IN (SELECT operation_id FROM env_leases
				WHERE workflow_id = ? AND node_id = ? AND version_id = ? AND expires_at > ?)`,
		store.OpFailed, store.ErrorCodeInterrupted, store.InterruptedMessage, t, t,
		key.WorkflowID, key.NodeID, key.VersionID, store.OpRunning, except,
		key.WorkflowID, key.NodeID, key.VersionID, t)
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations on %s: %w", key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations on %s: %w", key, err)
	}
	return int(n), nil
}

const leaseCols = `id, workflow_id, node_id, version_id, exclusive, holder, operation, operation_id, acquired_at, expires_at`

func scanLease(r scanner) (store.Lease, error) {
	var (
		l                 store.Lease
		acquired, expires int64
	)
	err := r.Scan(&l.ID, &l.Key.WorkflowID, &l.Key.NodeID, &l.Key.VersionID, &l.Exclusive, &l.Holder,
		&l.Operation, &l.OperationID, &acquired, &expires)
	l.AcquiredAt, l.ExpiresAt = fromMS(acquired), fromMS(expires)
	return l, err
}

func (s *Store) AcquireLease(ctx context.Context, req store.LeaseRequest) (store.Lease, error) {
	now := store.OrNow(req.Now)
	k := req.Key
	l := store.Lease{
		ID: store.NewLeaseID(), Key: k, Exclusive: req.Exclusive, Holder: req.Holder, Operation: req.Operation,
		OperationID: req.OperationID, AcquiredAt: fromMS(ms(now)), ExpiresAt: fromMS(ms(now.Add(req.TTL))),
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM env_leases
			WHERE workflow_id = ? AND node_id = ? AND version_id = ? AND expires_at <= ?`,
			k.WorkflowID, k.NodeID, k.VersionID, ms(now)); err != nil {
			return err
		}
		// An exclusive request conflicts with any lease, a shared one only with an exclusive one.
		held, err := scanLease(tx.QueryRowContext(ctx, `SELECT `+leaseCols+` FROM env_leases
			WHERE workflow_id = ? AND node_id = ? AND version_id = ? AND (? OR exclusive)
			ORDER BY exclusive DESC, acquired_at LIMIT 1`, k.WorkflowID, k.NodeID, k.VersionID, req.Exclusive))
		if err == nil {
			return &store.LockedError{Held: held}
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO env_leases (`+leaseCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			l.ID, k.WorkflowID, k.NodeID, k.VersionID, l.Exclusive, l.Holder, l.Operation, l.OperationID,
			ms(l.AcquiredAt), ms(l.ExpiresAt))
		return err
	})
	if err != nil {
		return store.Lease{}, fmt.Errorf("acquire lease on %s: %w", k, err)
	}
	return l, nil
}

func (s *Store) RenewLease(ctx context.Context, id string, now time.Time, ttl time.Duration) error {
	now = store.OrNow(now)
	res, err := s.db.ExecContext(ctx, `UPDATE env_leases SET expires_at = ? WHERE id = ? AND expires_at > ?`,
		ms(now.Add(ttl)), id, ms(now))
	if err == nil {
		err = oneRow(res)
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
	if _, err := s.db.ExecContext(ctx, `DELETE FROM env_leases WHERE id = ?`, id); err != nil {
		return fmt.Errorf("release lease %s: %w", id, err)
	}
	return nil
}

func (s *Store) ListLeases(ctx context.Context, key envid.Key, now time.Time) ([]store.Lease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+leaseCols+` FROM env_leases
		WHERE workflow_id = ? AND node_id = ? AND version_id = ? AND expires_at > ? ORDER BY acquired_at, id`,
		key.WorkflowID, key.NodeID, key.VersionID, ms(store.OrNow(now)))
	if err != nil {
		return nil, fmt.Errorf("list leases on %s: %w", key, err)
	}
	leases, err := collect(rows, scanLease)
	if err != nil {
		return nil, fmt.Errorf("list leases on %s: %w", key, err)
	}
	return leases, nil
}

// fence returns ErrLeaseLost unless leaseID is a live lease on key at now.
func fence(ctx context.Context, tx *sql.Tx, key envid.Key, leaseID string, now time.Time) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM env_leases
		WHERE id = ? AND workflow_id = ? AND node_id = ? AND version_id = ? AND expires_at > ?`,
		leaseID, key.WorkflowID, key.NodeID, key.VersionID, ms(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrLeaseLost
	}
	return err
}

const envCols = `workflow_id, node_id, version_id, state, python_version, python_path, env_path, revision,
	last_error, created_at, updated_at, last_used_at`

func scanEnv(r scanner) (store.Env, error) {
	var (
		e                      store.Env
		created, updated, used int64
	)
	err := r.Scan(&e.Key.WorkflowID, &e.Key.NodeID, &e.Key.VersionID, &e.State, &e.PythonVersion, &e.PythonPath,
		&e.EnvPath, &e.Revision, &e.LastError, &created, &updated, &used)
	e.CreatedAt, e.UpdatedAt, e.LastUsedAt = fromMS(created), fromMS(updated), fromMS(used)
	return e, err
}

func (s *Store) CreateEnv(ctx context.Context, env store.Env, now time.Time) error {
	now = store.OrNow(now)
	k := env.Key
	used := env.LastUsedAt
	if used.IsZero() {
		used = now
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var state string
		err := tx.QueryRowContext(ctx, `SELECT state FROM envs WHERE workflow_id = ? AND node_id = ? AND version_id = ?`,
			k.WorkflowID, k.NodeID, k.VersionID).Scan(&state)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case state != store.StateCreating:
			return store.ErrExists
		default:
			var live bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM env_leases
				WHERE workflow_id = ? AND node_id = ? AND version_id = ? AND expires_at > ?)`,
				k.WorkflowID, k.NodeID, k.VersionID, ms(now)).Scan(&live); err != nil {
				return err
			}
			if live {
				return store.ErrExists
			}
			s.log.Info("replacing environment abandoned while creating", "env", k.String())
			if _, err := tx.ExecContext(ctx, `DELETE FROM envs WHERE workflow_id = ? AND node_id = ? AND version_id = ?`,
				k.WorkflowID, k.NodeID, k.VersionID); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO envs (`+envCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			k.WorkflowID, k.NodeID, k.VersionID, env.State, env.PythonVersion, env.PythonPath, env.EnvPath,
			env.Revision, env.LastError, ms(now), ms(now), ms(used))
		return err
	})
	if err != nil {
		return fmt.Errorf("create environment %s: %w", k, err)
	}
	return nil
}

func (s *Store) GetEnv(ctx context.Context, key envid.Key) (store.Env, error) {
	e, err := scanEnv(s.db.QueryRowContext(ctx, `SELECT `+envCols+` FROM envs
		WHERE workflow_id = ? AND node_id = ? AND version_id = ?`, key.WorkflowID, key.NodeID, key.VersionID))
	if err != nil {
		return store.Env{}, fmt.Errorf("get environment %s: %w", key, notFound(err))
	}
	return e, nil
}

func (s *Store) ListEnvs(ctx context.Context, f store.ListFilter) ([]store.Env, error) {
	a := f.After
	rows, err := s.db.QueryContext(ctx, `SELECT `+envCols+` FROM envs
		WHERE (? = '' OR workflow_id = ?) AND (workflow_id, node_id, version_id) > (?, ?, ?)
		ORDER BY workflow_id, node_id, version_id LIMIT ?`,
		f.WorkflowID, f.WorkflowID, a.WorkflowID, a.NodeID, a.VersionID, sqlLimit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	envs, err := collect(rows, scanEnv)
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	return envs, nil
}

func (s *Store) SetState(ctx context.Context, key envid.Key, state, lastError string, now time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE envs SET state = ?, last_error = ?, updated_at = ?
		WHERE workflow_id = ? AND node_id = ? AND version_id = ?`,
		state, lastError, ms(store.OrNow(now)), key.WorkflowID, key.NodeID, key.VersionID)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("set state of %s to %s: %w", key, state, err)
	}
	return nil
}

func (s *Store) Touch(ctx context.Context, key envid.Key, t time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE envs SET last_used_at = max(last_used_at, ?)
		WHERE workflow_id = ? AND node_id = ? AND version_id = ?`,
		ms(store.OrNow(t)), key.WorkflowID, key.NodeID, key.VersionID)
	if err == nil {
		err = oneRow(res)
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
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := fence(ctx, tx, k, c.LeaseID, now); err != nil {
			return err
		}
		var pyproject, lock sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT e.revision, r.pyproject_toml, r.uv_lock FROM envs e
			LEFT JOIN env_revisions r ON r.workflow_id = e.workflow_id AND r.node_id = e.node_id
				AND r.version_id = e.version_id AND r.revision = e.revision
			WHERE e.workflow_id = ? AND e.node_id = ? AND e.version_id = ?`,
			k.WorkflowID, k.NodeID, k.VersionID).Scan(&rev, &pyproject, &lock)
		if err != nil {
			return notFound(err)
		}
		if rev != c.Base {
			return &store.StaleBaseError{Key: k, Base: c.Base, Current: rev}
		}
		if !pyproject.Valid || pyproject.String != c.PyprojectTOML || lock.String != c.UvLock {
			rev++
			if _, err := tx.ExecContext(ctx, `INSERT INTO env_revisions (workflow_id, node_id, version_id, revision,
				pyproject_toml, uv_lock, operation_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				k.WorkflowID, k.NodeID, k.VersionID, rev, c.PyprojectTOML, c.UvLock, c.OperationID, ms(now)); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE envs SET state = COALESCE(NULLIF(?, ''), state), revision = ?,
			python_version = COALESCE(NULLIF(?, ''), python_version), python_path = COALESCE(NULLIF(?, ''), python_path),
			env_path = COALESCE(NULLIF(?, ''), env_path), last_error = '', updated_at = ?
			WHERE workflow_id = ? AND node_id = ? AND version_id = ?`,
			c.State, rev, c.PythonVersion, c.PythonPath, c.EnvPath, ms(now), k.WorkflowID, k.NodeID, k.VersionID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("commit revision of %s: %w", k, err)
	}
	return rev, nil
}

func (s *Store) GetRevision(ctx context.Context, key envid.Key, n int64) (store.Revision, error) {
	var (
		r       store.Revision
		created int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT r.revision, r.pyproject_toml, r.uv_lock, r.operation_id, r.created_at
		FROM env_revisions r JOIN envs e ON e.workflow_id = r.workflow_id AND e.node_id = r.node_id
			AND e.version_id = r.version_id
		WHERE r.workflow_id = ? AND r.node_id = ? AND r.version_id = ? AND r.revision = CASE WHEN ? = 0 THEN e.revision ELSE ? END`,
		key.WorkflowID, key.NodeID, key.VersionID, n, n).Scan(&r.Number, &r.PyprojectTOML, &r.UvLock, &r.OperationID, &created)
	if err != nil {
		return store.Revision{}, fmt.Errorf("get revision %d of %s: %w", n, key, notFound(err))
	}
	r.Key, r.CreatedAt = key, fromMS(created)
	return r, nil
}

func (s *Store) DeleteEnv(ctx context.Context, key envid.Key, leaseID string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := fence(ctx, tx, key, leaseID, time.Now()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM envs WHERE workflow_id = ? AND node_id = ? AND version_id = ?`,
			key.WorkflowID, key.NodeID, key.VersionID)
		if err != nil {
			return err
		}
		return oneRow(res)
	})
	if err != nil {
		return fmt.Errorf("delete environment %s: %w", key, err)
	}
	return nil
}

func (s *Store) IdleEnvs(ctx context.Context, cutoff time.Time, limit int) ([]store.Env, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+envCols+` FROM envs WHERE last_used_at < ?
		ORDER BY last_used_at, workflow_id, node_id, version_id LIMIT ?`, ms(cutoff), sqlLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list idle environments: %w", err)
	}
	envs, err := collect(rows, scanEnv)
	if err != nil {
		return nil, fmt.Errorf("list idle environments: %w", err)
	}
	return envs, nil
}

type scanner interface{ Scan(dest ...any) error }

func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// oneRow turns an update that matched nothing into ErrNotFound.
func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err == nil && n == 0 {
		return store.ErrNotFound
	}
	return err
}

func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// sqlLimit maps "no limit" (n <= 0) to SQLite's LIMIT -1.
func sqlLimit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func nullMS(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// CountEnvs implements store.Store.
func (s *Store) CountEnvs(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, count(*) FROM envs GROUP BY state`)
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
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM env_leases WHERE expires_at > ? AND (exclusive OR NOT ?)`,
		ms(store.OrNow(now)), exclusiveOnly).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count leases: %w", err)
	}
	return n, nil
}

// AdoptSetting implements store.Store.
func (s *Store) AdoptSetting(ctx context.Context, name, value string, now time.Time) (string, error) {
	var got string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO fleet_settings (name, value, created_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO NOTHING`, name, value, ms(store.OrNow(now))); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM fleet_settings WHERE name = ?`, name).Scan(&got)
	})
	if err != nil {
		return "", fmt.Errorf("adopt setting %s: %w", name, err)
	}
	return got, nil
}

// Setting implements store.Store.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var got string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM fleet_settings WHERE name = ?`, name).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read setting %s: %w", name, err)
	}
	return got, nil
}

// AcquireLeadership implements store.Store.
func (s *Store) AcquireLeadership(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	now = store.OrNow(now)
	res, err := s.db.ExecContext(ctx, `INSERT INTO leaders (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leaders.holder = excluded.holder OR leaders.expires_at <= ?`,
		name, holder, ms(now.Add(ttl)), ms(now))
	if err != nil {
		return false, fmt.Errorf("acquire leadership %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("acquire leadership %s: %w", name, err)
	}
	return n == 1, nil
}

// ResignLeadership implements store.Store.
func (s *Store) ResignLeadership(ctx context.Context, name, holder string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM leaders WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("resign leadership %s: %w", name, err)
	}
	return nil
}

// AbandonStaleOperations implements store.Store.
func (s *Store) AbandonStaleOperations(ctx context.Context, startedBefore, now time.Time) (int, error) {
	t := ms(store.OrNow(now))
	res, err := s.db.ExecContext(ctx, `UPDATE env_operations SET status = ?, error_code = ?, error_message = ?,
			finished_at = ?, duration_ms = max(0, ? - started_at)
		WHERE status = ? AND started_at < ?
			AND id NOT IN (SELECT operation_id FROM env_leases WHERE expires_at > ?)`,
		store.OpFailed, store.ErrorCodeInterrupted, store.InterruptedMessage, t, t,
		store.OpRunning, ms(startedBefore), t)
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations: %w", err)
	}
	return int(n), nil
}

// EnvsToRepair implements store.Store.
func (s *Store) EnvsToRepair(ctx context.Context, updatedBefore, now time.Time, limit int) ([]store.Env, error) {
	args := []any{}
	for _, st := range store.RepairStates {
		args = append(args, st)
	}
	args = append(args, ms(updatedBefore), ms(store.OrNow(now)), sqlLimit(limit))
	rows, err := s.db.QueryContext(ctx, `SELECT `+envCols+` FROM envs e
		WHERE state IN (?`+strings.Repeat(", ?", len(store.RepairStates)-1)+`) AND updated_at < ?
			AND NOT EXISTS (SELECT 1 FROM env_leases l WHERE l.workflow_id = e.workflow_id AND l.node_id = e.node_id
				AND l.version_id = e.version_id AND l.expires_at > ?)
		ORDER BY updated_at, workflow_id, node_id, version_id LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("list environments to repair: %w", err)
	}
	envs, err := collect(rows, scanEnv)
	if err != nil {
		return nil, fmt.Errorf("list environments to repair: %w", err)
	}
	return envs, nil
}
