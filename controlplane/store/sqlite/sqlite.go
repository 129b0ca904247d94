// Package sqlite implements store.Store on an embedded SQLite database in pure Go
// (modernc.org/sqlite), for a single-host fabric without DATABASE_URL. The queries are
// store/sqlstore's; this package holds SQLite's dialect, its migrations and how it is opened.
//
// The database runs in WAL mode with a busy timeout, and every transaction begins IMMEDIATE, so it
// holds the write lock from BEGIN: a lease check and the insert that follows it cannot interleave
// with another writer's. That is why the dialect needs no row or key locks. Times are stored as
// INTEGER unix milliseconds.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// sha256_hex(text) is store.Digest in SQL, for migration 0005, which moves the project files
// of existing revisions into contents by digest (PostgreSQL has sha256 built in).
func init() {
	err := sqlite.RegisterDeterministicScalarFunction("sha256_hex", 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return store.Digest(v), nil
		case []byte:
			return store.Digest(string(v)), nil
		default:
			return nil, fmt.Errorf("sha256_hex: want TEXT, got %T", v)
		}
	})
	if err != nil {
		panic(fmt.Sprintf("register sha256_hex: %v", err))
	}
}

// Store is the SQLite store. It is safe for concurrent use.
type Store struct {
	*sqlstore.Store
	path   string
	opened fileID // the database file the store opened
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its directory if needed) the database at path, applies the
// migrations and checks the connection.
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
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
	// They are kept open: a connection opened after the file was removed would create an empty
	// database in its place.
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	s, err := sqlstore.Open(ctx, db, Dialect{}, migrations, logger)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite database %s: %w", path, err)
	}
	opened, err := statFile(path)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite database: %w", err)
	}
	return &Store{Store: s, path: path, opened: opened}, nil
}

// fileID identifies a file: what a path names can change, the file open under it cannot.
type fileID struct{ dev, ino uint64 }

func statFile(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("stat %s: no device and inode on this system", path)
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// CheckFile reports whether the database path still names the file the store opened. Removed or
// replaced under a running store, SQLite keeps writing to the file it holds open: every write
// "succeeds" and is gone at the next start, so the store must not be called ready.
func (s *Store) CheckFile(context.Context) error {
	now, err := statFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the database file %s was removed while in use: writes go to the unlinked file and are lost at restart", s.path)
	case err != nil:
		return fmt.Errorf("check the database file: %w", err)
	case now != s.opened:
		return fmt.Errorf("the database file %s was replaced while in use (device:inode %d:%d at open, %d:%d now): writes go to the old file and are lost at restart",
			s.path, s.opened.dev, s.opened.ino, now.dev, now.ino)
	}
	return nil
}

// Dialect is SQLite's part of the shared store.
type Dialect struct{}

var _ sqlstore.Dialect = Dialect{}

func (Dialect) Name() string { return "SQLite" }

// Embedded implements sqlstore.Dialect.
func (Dialect) Embedded() bool { return true }

// Rebind writes $N as ?N: SQLite's own numbered parameter, bound to argument N however often and
// in whatever order the query names it. The shared queries hold no '$' in string literals.
func (Dialect) Rebind(query string) string {
	if !strings.Contains(query, "$") {
		return query
	}
	b := []byte(query)
	for i := 0; i < len(b)-1; i++ {
		if b[i] == '$' && b[i+1] >= '1' && b[i+1] <= '9' {
			b[i] = '?'
		}
	}
	return string(b)
}

func (Dialect) EncodeTime(t time.Time) any { return t.UnixMilli() }

func (Dialect) DecodeTime(src any) (time.Time, error) {
	v, ok := src.(int64)
	if !ok {
		return time.Time{}, fmt.Errorf("time column holds %T, want INTEGER unix milliseconds", src)
	}
	return time.UnixMilli(v).UTC(), nil
}

func (Dialect) Precision() time.Duration { return time.Millisecond }

// MillisBetween subtracts: times are milliseconds already.
func (Dialect) MillisBetween(start, end string) string {
	return "max(0, " + end + " - " + start + ")"
}

// JSON is text as it is: JSON columns are TEXT.
func (Dialect) JSON(text string) string { return text }

// RowLock is nothing: an IMMEDIATE transaction holds the database's one write lock from BEGIN.
func (Dialect) RowLock(string) string { return "" }

// LockKey is nothing, for the same reason as RowLock.
func (Dialect) LockKey(context.Context, *sql.Tx, ...string) error { return nil }

// LockMigrations is nothing: each migration runs in an IMMEDIATE transaction that first checks
// whether it was applied, so openers of one file apply it once.
func (Dialect) LockMigrations(context.Context, *sql.Conn) (func(context.Context) error, error) {
	return func(context.Context) error { return nil }, nil
}

func (Dialect) MigrationsTable() string {
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`
}

func (Dialect) IsUniqueViolation(err error) bool {
	code, ok := errorCode(err)
	return ok && (code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || code == sqlite3.SQLITE_CONSTRAINT_UNIQUE)
}

// IsLocalDiskFull: SQLITE_FULL (any extended code) is what SQLite answers when a write of the
// database, its WAL or a temporary file finds no space.
func (Dialect) IsLocalDiskFull(err error) bool {
	code, ok := errorCode(err)
	return ok && code&0xff == sqlite3.SQLITE_FULL
}

// errorCode is err's extended SQLite result code.
func errorCode(err error) (int, bool) {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return 0, false
	}
	return e.Code(), true
}

// Explain implements sqlstore.Dialect: EXPLAIN QUERY PLAN's detail column, a line a step
// ("SEARCH e USING INDEX envs_lock (lock_digest=?)", "SCAN envs").
func (d Dialect) Explain(ctx context.Context, db *sql.DB, query string, args []any) ([]string, error) {
	rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+d.Rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			return nil, err
		}
		plan = append(plan, detail)
	}
	return plan, rows.Err()
}
