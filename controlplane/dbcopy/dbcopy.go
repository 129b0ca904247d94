// Package dbcopy moves a single-host fabric's SQLite database into PostgreSQL, so that a fabric
// grows from one host to a fleet without re-creating its environments (controlplane migrate).
//
// Both databases are first migrated to this binary's schema by their own stores; then every
// table is copied generically: the tables, their columns, types, primary keys, foreign keys and
// sequences are read from the two catalogs, not listed here, so a table a later migration adds
// moves without a change to this package. What only makes sense while a fabric runs is left
// behind (see skipped). The whole copy is one PostgreSQL transaction that holds the target's
// tables locked: it commits only after every table's row count and digest, read back from
// PostgreSQL, equal the source's, and after each sequence is set past the ids copied (the
// audit's operation ids are kept, so history and revisions still point at them). The source is
// read in one SQLite read transaction, a consistent snapshot even while a control plane serves.
package dbcopy

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
)

// skipped are the tables not copied: the migrator's own bookkeeping, and state that belongs to
// running control planes (leases expire within LEASE_TTL, leadership terms and readiness probes
// are rewritten by whoever runs next). Everything else is data and moves.
var skipped = map[string]bool{
	"schema_migrations": true,
	"env_leases":        true,
	"leaders":           true,
	"readiness_probes":  true,
}

// Options says what to copy where.
type Options struct {
	// SQLitePath is the source database file (a single host's DATA_ROOT/controlplane/fabric.db).
	SQLitePath string
	// PostgresURL is the target (DATABASE_URL of the fleet).
	PostgresURL string
	// Replace empties the target's tables first; without it a target holding any data is refused
	// (NotEmptyError), so a fleet's audit is never mixed with or overwritten by another's.
	Replace bool
	Log     *slog.Logger
}

// Report is what was copied, table by table, in the order of copying.
type Report struct {
	SchemaVersion int
	Tables        []TableReport
}

// TableReport is one copied table: its rows, and the digest both databases agree on.
type TableReport struct {
	Name   string
	Rows   int64
	Digest string // hex SHA-256 of the table's rows in primary-key order, in a canonical form
}

// NotEmptyError is a target that already holds data in the tables to be copied.
type NotEmptyError struct {
	Tables []string
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("the PostgreSQL database already holds data (tables %s): refusing to copy into it; "+
		"use an empty database, or -replace to delete what it holds", strings.Join(e.Tables, ", "))
}

// SchemaError is a source and target whose schemas do not match after migration: different
// migrations applied, or different tables or columns.
type SchemaError struct {
	Problem string
}

func (e *SchemaError) Error() string { return "the two schemas do not match: " + e.Problem }

// VerifyError is a table that does not read back from PostgreSQL as it was read from SQLite; the
// transaction is rolled back.
type VerifyError struct {
	Table                      string
	SourceRows, TargetRows     int64
	SourceDigest, TargetDigest string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("table %s did not copy faithfully: %d rows (digest %.12s) in SQLite, %d rows (digest %.12s) in PostgreSQL; nothing was committed",
		e.Table, e.SourceRows, e.SourceDigest, e.TargetRows, e.TargetDigest)
}

// Copy copies the SQLite database at opt.SQLitePath into the PostgreSQL database at
// opt.PostgresURL. On any error nothing is committed to the target.
func Copy(ctx context.Context, opt Options) (Report, error) {
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The SQLite store would create a missing file: an empty source is a mistake, not a fabric.
	if _, err := os.Stat(opt.SQLitePath); err != nil {
		return Report{}, fmt.Errorf("the SQLite database: %w", err)
	}
	if err := migrateBoth(ctx, opt, log); err != nil {
		return Report{}, err
	}

	src, err := sql.Open("sqlite", opt.SQLitePath+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return Report{}, fmt.Errorf("open the SQLite database: %w", err)
	}
	defer src.Close()
	// A deferred transaction on one connection: every read sees one snapshot of the WAL database.
	stx, err := src.BeginTx(ctx, nil)
	if err != nil {
		return Report{}, fmt.Errorf("begin reading the SQLite database: %w", err)
	}
	defer stx.Rollback()

	conn, err := pgx.Connect(ctx, opt.PostgresURL)
	if err != nil {
		return Report{}, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ttx, err := conn.Begin(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("begin the PostgreSQL transaction: %w", err)
	}
	defer ttx.Rollback(context.WithoutCancel(ctx))

	c := &copier{src: stx, dst: ttx, log: log}
	rep, err := c.run(ctx, opt.Replace)
	if err != nil {
		return Report{}, err
	}
	if err := ttx.Commit(ctx); err != nil {
		return Report{}, fmt.Errorf("commit the copy: %w", err)
	}
	return rep, nil
}

// migrateBoth brings both databases to this binary's schema with their own stores.
func migrateBoth(ctx context.Context, opt Options, log *slog.Logger) error {
	s, err := sqlite.Open(ctx, opt.SQLitePath, log)
	if err != nil {
		return fmt.Errorf("migrate the SQLite database: %w", err)
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("close the SQLite database: %w", err)
	}
	p, err := postgres.Open(ctx, opt.PostgresURL, log)
	if err != nil {
		return fmt.Errorf("migrate the PostgreSQL database: %w", err)
	}
	return p.Close()
}

type copier struct {
	src *sql.Tx
	dst pgx.Tx
	log *slog.Logger
}

func (c *copier) run(ctx context.Context, replace bool) (Report, error) {
	var rep Report
	version, err := c.sameMigrations(ctx)
	if err != nil {
		return rep, err
	}
	rep.SchemaVersion = version
	tables, err := c.tables(ctx)
	if err != nil {
		return rep, err
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = pgx.Identifier{t.name}.Sanitize()
	}
	// No control plane may write the target while it is filled: lock every table copied and the
	// leases (a lease taken meanwhile would name an environment about to be replaced).
	lock := append(slices.Clone(names), pgx.Identifier{"env_leases"}.Sanitize())
	if _, err := c.dst.Exec(ctx, "LOCK TABLE "+strings.Join(lock, ", ")+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return rep, fmt.Errorf("lock the PostgreSQL tables: %w", err)
	}
	var full []string
	for _, t := range tables {
		var any bool
		if err := c.dst.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+pgx.Identifier{t.name}.Sanitize()+")").Scan(&any); err != nil {
			return rep, fmt.Errorf("look into PostgreSQL table %s: %w", t.name, err)
		}
		if any {
			full = append(full, t.name)
		}
	}
	if len(full) > 0 {
		if !replace {
			return rep, &NotEmptyError{Tables: full}
		}
		c.log.Warn("deleting what the PostgreSQL database holds (-replace)", "tables", strings.Join(full, ","))
		if _, err := c.dst.Exec(ctx, "TRUNCATE "+strings.Join(lock, ", ")+" CASCADE"); err != nil {
			return rep, fmt.Errorf("empty the PostgreSQL tables: %w", err)
		}
	}
	for _, t := range tables {
		srcRows, srcDigest, err := c.copyTable(ctx, t)
		if err != nil {
			return rep, fmt.Errorf("copy table %s: %w", t.name, err)
		}
		if err := c.advanceSequences(ctx, t); err != nil {
			return rep, fmt.Errorf("advance the sequences of %s: %w", t.name, err)
		}
		dstRows, dstDigest, err := c.digestTarget(ctx, t)
		if err != nil {
			return rep, fmt.Errorf("verify table %s: %w", t.name, err)
		}
		var count int64
		if err := c.dst.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{t.name}.Sanitize()).Scan(&count); err != nil {
			return rep, fmt.Errorf("count table %s: %w", t.name, err)
		}
		if srcRows != dstRows || srcRows != count || srcDigest != dstDigest {
			return rep, &VerifyError{Table: t.name, SourceRows: srcRows, TargetRows: count, SourceDigest: srcDigest, TargetDigest: dstDigest}
		}
		c.log.Info("table copied", "table", t.name, "rows", srcRows, "digest", srcDigest)
		rep.Tables = append(rep.Tables, TableReport{Name: t.name, Rows: srcRows, Digest: srcDigest})
	}
	return rep, nil
}

// sameMigrations checks that both databases recorded the same migrations and returns the last.
func (c *copier) sameMigrations(ctx context.Context) (int, error) {
	var src []int
	rows, err := c.src.QueryContext(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		return 0, fmt.Errorf("read the SQLite schema version: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return 0, err
		}
		src = append(src, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	prows, err := c.dst.Query(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		return 0, fmt.Errorf("read the PostgreSQL schema version: %w", err)
	}
	dst, err := pgx.CollectRows(prows, pgx.RowTo[int])
	if err != nil {
		return 0, fmt.Errorf("read the PostgreSQL schema version: %w", err)
	}
	if !slices.Equal(src, dst) {
		return 0, &SchemaError{Problem: fmt.Sprintf("SQLite has migrations %v, PostgreSQL %v", src, dst)}
	}
	if len(src) == 0 {
		return 0, &SchemaError{Problem: "no migrations recorded"}
	}
	return src[len(src)-1], nil
}

// digest is a running SHA-256 over canonical rows.
type digest struct {
	h    hash.Hash
	rows int64
}

func newDigest() *digest { return &digest{h: sha256.New()} }

// row adds one row's canonical values, each length-prefixed so that no two rows collide.
func (d *digest) row(vals []canon) {
	for _, v := range vals {
		if v.null {
			io.WriteString(d.h, "N;")
			continue
		}
		io.WriteString(d.h, strconv.Itoa(len(v.s))+":"+v.s)
	}
	io.WriteString(d.h, "\n")
	d.rows++
}

func (d *digest) hex() string { return hex.EncodeToString(d.h.Sum(nil)) }
