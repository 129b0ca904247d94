// Package sqlstore is the one implementation of store.Store, shared by the SQLite store
// (store/sqlite) and the PostgreSQL store (store/postgres) through database/sql. Every query and
// every transaction's logic is written here once; each database contributes a small Dialect for
// what the two do not agree on: placeholders, how a time is stored, how a transaction locks what
// it reads, a few functions, and how its errors are told apart. Migrations stay per database
// (embedded .sql files in each store's package) and are applied by the one migrator here.
//
// Queries are written with PostgreSQL's $N placeholders in SQL both databases accept: CAST
// instead of ::, CASE instead of GREATEST, RETURNING for new ids, row values for keyset paging.
package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
)

// Store implements store.Store on a *sql.DB in one Dialect. It is safe for concurrent use.
type Store struct {
	db  *sql.DB
	d   Dialect
	log *slog.Logger

	mu      sync.Mutex
	reserve Reserve

	// queries, when set (LogQueries), receives every read query: for checking their plans.
	queries *QueryLog
}

var _ store.Store = (*Store)(nil)

// Open checks the connection of db and applies the migrations in fsys (migrations/NNNN_name.sql).
// On error db is left open: the caller owns it.
func Open(ctx context.Context, db *sql.DB, d Dialect, migrations fs.FS, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: db, d: d, log: logger}
	if err := s.Ping(ctx); err != nil {
		return nil, err
	}
	if err := s.migrate(ctx, migrations); err != nil {
		return nil, fmt.Errorf("migrate %s database: %w", d.Name(), err)
	}
	// The package index of locks committed before it existed (migration 0006), or by a version
	// that did not index them: once per distinct lock, so quick even for a large fleet.
	var indexed bool
	if err := s.read().row(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, packageIndexMigration).Scan(&indexed); err != nil {
		return nil, fmt.Errorf("read the schema version: %w", err)
	}
	if indexed {
		if n, err := s.IndexLocks(ctx, -1); err != nil {
			return nil, fmt.Errorf("index the packages of existing locks: %w", err)
		} else if n > 0 {
			logger.Info("indexed the packages of existing locks", "locks", n)
		}
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping runs SELECT 1.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping %s database: %w", s.d.Name(), err)
	}
	return nil
}

// SetReserve gives the store disk space to fall back on: a write that fails because the local
// filesystem is full releases r and is tried once more.
func (s *Store) SetReserve(r Reserve) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserve = r
}

// runner runs the shared queries on a connection pool or a transaction, in the dialect's
// placeholder form.
type runner struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
	d   Dialect
	log *QueryLog // nil: not logged
}

func (r runner) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return r.q.ExecContext(ctx, r.d.Rebind(query), args...)
}

func (r runner) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	r.log.add(query, args)
	return r.q.QueryContext(ctx, r.d.Rebind(query), args...)
}

func (r runner) row(ctx context.Context, query string, args ...any) *sql.Row {
	r.log.add(query, args)
	return r.q.QueryRowContext(ctx, r.d.Rebind(query), args...)
}

// read is the pool, for statements that write nothing.
func (s *Store) read() runner { return runner{q: s.db, d: s.d, log: s.queries} }

// write runs fn, a single statement on the pool or a whole transaction (see tx), once more after
// releasing the reserve when it failed because the local disk is full. Trying again is safe: a
// statement or transaction that failed committed nothing.
func (s *Store) write(fn func() error) error {
	err := fn()
	if err == nil || !s.d.IsLocalDiskFull(err) {
		return err
	}
	s.mu.Lock()
	r := s.reserve
	s.mu.Unlock()
	if r == nil || !r.Release() {
		return err
	}
	s.log.Warn("the disk under the database is full: released the reserve and trying the write again", "err", err)
	return fn()
}

// exec runs one writing statement outside a transaction.
func (s *Store) exec(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	err = s.write(func() error {
		res, err = s.read().exec(ctx, query, args...)
		return err
	})
	return res, err
}

// tx runs fn in one transaction, committed when fn returns nil. SQLite's transactions begin
// IMMEDIATE (they hold the database's write lock from BEGIN); PostgreSQL's are READ COMMITTED and
// lock what they must through Dialect.LockKey and Dialect.RowLock.
func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx, r runner) error) error {
	return s.write(func() error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := fn(tx, runner{q: tx, d: s.d, log: s.queries}); err != nil {
			return err
		}
		return tx.Commit()
	})
}

// round is t as the database keeps it: UTC, truncated to the dialect's precision.
func (s *Store) round(t time.Time) time.Time { return t.UTC().Truncate(s.d.Precision()) }

// time is t as a query argument.
func (s *Store) time(t time.Time) any { return s.d.EncodeTime(s.round(t)) }

// nullTime is t as a query argument, NULL when zero.
func (s *Store) nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return s.time(t)
}

// scanTime is a Scan destination for a time column.
func (s *Store) scanTime(dst *time.Time) sql.Scanner { return timeCol{d: s.d, dst: dst} }

type scanner interface{ Scan(dest ...any) error }

// collect reads every row of rows with scan.
func collect[T any](rows *sql.Rows, err error, scan func(scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
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

// oneRow turns a statement that matched nothing into store.ErrNotFound.
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

// sqlLimit maps "no limit" (n <= 0) to the largest LIMIT both databases take.
func sqlLimit(n int) int64 {
	if n <= 0 {
		return math.MaxInt64
	}
	return int64(n)
}

// orNow is t, or the current time when t is zero.
func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// nullJSON stores an empty JSON document as NULL.
func nullJSON(v json.RawMessage) any {
	if len(v) == 0 {
		return nil
	}
	return string(v)
}

// newLeaseID returns a random 128-bit lease id in hex.
func newLeaseID() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
