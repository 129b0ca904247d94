package sqlstore

import (
	"context"
	"database/sql"
	"time"
)

// Dialect is what one database contributes to the shared store: the few places where SQLite and
// PostgreSQL do not agree. Everything else (every query, every transaction's logic, the
// migrator) is written once in this package.
type Dialect interface {
	// Name names the database in messages ("SQLite", "PostgreSQL").
	Name() string
	// Embedded reports a database in this process (no round trips; statements are costly to
	// parse rather than to send), for the few queries that take a different shape for it.
	Embedded() bool

	// Rebind rewrites a query's $N placeholders (the form every shared query is written in) into
	// the form the driver takes.
	Rebind(query string) string

	// EncodeTime is t (already truncated to Precision, in UTC) as a query argument.
	EncodeTime(t time.Time) any
	// DecodeTime reads a non-NULL time column back, in UTC.
	DecodeTime(src any) (time.Time, error)
	// Precision is the finest time the database keeps. Times are truncated to it before they are
	// stored, so what a method returns equals what a later read returns.
	Precision() time.Duration
	// MillisBetween is an SQL expression for the whole milliseconds from start to end (each a
	// time column or placeholder), never negative.
	MillisBetween(start, end string) string

	// JSON is text, an SQL expression of a JSON document, as a value of a JSON column
	// (env_operations.params and result).
	JSON(text string) string

	// RowLock is clause (FOR UPDATE OF e, FOR SHARE) for a SELECT inside a transaction, or ""
	// where the transaction itself already excludes every other writer.
	RowLock(clause string) string
	// LockKey serialises the transactions that take it on the same key (an environment) until
	// they end, so that a check and the write that follows it are atomic across every process
	// sharing the database.
	LockKey(ctx context.Context, tx *sql.Tx, parts ...string) error
	// LockMigrations serialises migrators on one pinned connection; unlock gives the lock back.
	LockMigrations(ctx context.Context, conn *sql.Conn) (unlock func(context.Context) error, err error)
	// MigrationsTable creates schema_migrations if it does not exist.
	MigrationsTable() string

	// Explain returns the plan the database chooses for query (in the shared $N form) with args,
	// one line a step, in the database's own words (EXPLAIN, EXPLAIN QUERY PLAN). PostgreSQL's
	// is planned with sequential scans disabled, so that an index that can serve the query is
	// chosen even on a table too small to need it: a Seq Scan left means no index can.
	Explain(ctx context.Context, db *sql.DB, query string, args []any) ([]string, error)

	// IsUniqueViolation reports whether err is a primary-key or unique-constraint violation.
	IsUniqueViolation(err error) bool
	// IsLocalDiskFull reports whether err is a write that failed because the filesystem holding
	// the database's files on this host is full: the failure a Reserve can relieve.
	IsLocalDiskFull(err error) bool
}

// Reserve is disk space kept aside for the database on the filesystem that holds it, so that
// when that filesystem fills up, the audit writes of a delete or a cleanup (which is how an
// operator frees space through the API) still go through.
type Reserve interface {
	// Release gives the space back to the filesystem; it reports whether any was freed (false
	// once released, until restored).
	Release() bool
}

// timeCol scans a time column (NULL is the zero time) through the dialect's codec.
type timeCol struct {
	d   Dialect
	dst *time.Time
}

func (c timeCol) Scan(src any) error {
	if src == nil {
		*c.dst = time.Time{}
		return nil
	}
	t, err := c.d.DecodeTime(src)
	if err != nil {
		return err
	}
	*c.dst = t.UTC()
	return nil
}
