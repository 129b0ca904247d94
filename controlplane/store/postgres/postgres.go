// Package postgres implements store.Store on PostgreSQL, for control planes that share one
// database (DATABASE_URL). The queries are store/sqlstore's; this package holds PostgreSQL's
// dialect, its migrations and how it is opened.
//
// The connections come from a pgx pool (pgxpool: its size, health checks and pool_* URL
// parameters), used through database/sql (pgx's stdlib adapter) so that both stores run the one
// code path; pgx's errors (*pgconn.PgError) still reach the dialect through errors.As.
//
// Migrations run under a session advisory lock on one pinned connection, each in its own
// transaction with its version row. Lease acquisition, environment creation and abandoned
// operations take a transaction-scoped advisory lock on the environment's key, and fenced commits
// lock the lease and environment rows, so they are atomic across every control plane sharing the
// database. Advisory-lock keys are FNV-64a hashes of namespaced strings, never hashtext.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the PostgreSQL store. It is safe for concurrent use.
type Store struct {
	*sqlstore.Store
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// Open connects to url, checks the connection and applies the migrations.
func Open(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL pool: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	s, err := sqlstore.Open(ctx, db, Dialect{}, migrations, logger)
	if err != nil {
		db.Close()
		pool.Close()
		return nil, err
	}
	return &Store{Store: s, pool: pool}, nil
}

// Close closes the database handle and the pool under it.
func (s *Store) Close() error {
	err := s.Store.Close()
	s.pool.Close()
	return err
}

// Dialect is PostgreSQL's part of the shared store.
type Dialect struct{}

var _ sqlstore.Dialect = Dialect{}

func (Dialect) Name() string { return "PostgreSQL" }

// Embedded implements sqlstore.Dialect.
func (Dialect) Embedded() bool { return false }

// Rebind is the identity: the shared queries are written in PostgreSQL's form.
func (Dialect) Rebind(query string) string { return query }

// EncodeTime passes the time itself: a timestamptz.
func (Dialect) EncodeTime(t time.Time) any { return t }

func (Dialect) DecodeTime(src any) (time.Time, error) {
	t, ok := src.(time.Time)
	if !ok {
		return time.Time{}, fmt.Errorf("time column holds %T, want timestamptz", src)
	}
	return t.UTC(), nil
}

func (Dialect) Precision() time.Duration { return time.Microsecond }

func (Dialect) MillisBetween(start, end string) string {
	return "GREATEST(0, floor(EXTRACT(EPOCH FROM (CAST(" + end + " AS timestamptz) - " + start + ")) * 1000))::bigint"
}

func (Dialect) RowLock(clause string) string { return " " + clause }

// JSON casts text to jsonb, the JSON columns' type.
func (Dialect) JSON(text string) string { return "CAST(" + text + " AS jsonb)" }

// LockKey takes a transaction-scoped advisory lock, released at COMMIT or ROLLBACK.
func (Dialect) LockKey(ctx context.Context, tx *sql.Tx, parts ...string) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(parts...))
	return err
}

// LockMigrations takes a session advisory lock on conn. Should giving it back fail, the session
// is closed, which drops the lock, and the pool discards the connection.
func (Dialect) LockMigrations(ctx context.Context, conn *sql.Conn) (func(context.Context) error, error) {
	key := lockKey("migrate")
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", key)
		if err != nil {
			_ = conn.Raw(func(dc any) error { return dc.(*stdlib.Conn).Conn().Close(ctx) })
		}
		return err
	}, nil
}

func (Dialect) MigrationsTable() string {
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
}

func (Dialect) IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" // unique_violation
}

// IsLocalDiskFull is false: the server's disk is its own, and no reserve on this host relieves it.
func (Dialect) IsLocalDiskFull(error) bool { return false }

// lockKey is a 64-bit advisory-lock key for parts in the envfabric namespace.
func lockKey(parts ...string) int64 {
	h := fnv.New64a()
	h.Write([]byte("envfabric"))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return int64(h.Sum64())
}

// Explain implements sqlstore.Dialect: EXPLAIN's text lines, planned on one connection with
// enable_seqscan off (reset before the connection goes back to the pool).
func (Dialect) Explain(ctx context.Context, db *sql.DB, query string, args []any) ([]string, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
		return nil, err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "RESET enable_seqscan")
	rows, err := conn.QueryContext(ctx, "EXPLAIN "+query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, err
		}
		plan = append(plan, line)
	}
	return plan, rows.Err()
}
