package dbcopy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultIDGap is how far AdvanceIDs moves every id sequence after a restore by default: more ids
// than a fabric hands out between a backup and its restore (a thousand operations a second for
// eleven days), and a negligible part of the 63-bit range.
const DefaultIDGap = 1_000_000_000

// SequenceReport is one id sequence moved by AdvanceIDs.
type SequenceReport struct {
	Name     string // the table (SQLite) or sequence (PostgreSQL)
	From, To int64
}

// AdvanceIDs moves every id sequence of a restored database (SQLite's AUTOINCREMENT counters, or
// every PostgreSQL sequence of the schema) forward by gap. Operation ids are fencing tokens: an
// agent refuses to let an operation write an environment that an operation with a higher id
// wrote (ENV_LOCKED), and the operations after the backup, lost by the restore, did write. After
// the gap, every new id is above any of theirs. sqlitePath is used when postgresURL is empty.
func AdvanceIDs(ctx context.Context, sqlitePath, postgresURL string, gap int64) ([]SequenceReport, error) {
	if gap <= 0 {
		return nil, fmt.Errorf("advance ids: the gap must be positive, not %d", gap)
	}
	if postgresURL != "" {
		return advancePostgres(ctx, postgresURL, gap)
	}
	return advanceSQLite(ctx, sqlitePath, gap)
}

func advancePostgres(ctx context.Context, url string, gap int64) ([]SequenceReport, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var out []SequenceReport
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT format('%I.%I', schemaname, sequencename), COALESCE(last_value, 0)
			FROM pg_sequences WHERE schemaname = current_schema() ORDER BY sequencename`)
		if err != nil {
			return err
		}
		type seq struct {
			Name string
			Last int64
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[seq])
		if err != nil {
			return err
		}
		for _, s := range seqs {
			if _, err := tx.Exec(ctx, "SELECT setval($1, $2, true)", s.Name, s.Last+gap); err != nil {
				return fmt.Errorf("advance %s: %w", s.Name, err)
			}
			out = append(out, SequenceReport{Name: s.Name, From: s.Last, To: s.Last + gap})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("advance the PostgreSQL sequences: %w", err)
	}
	return out, nil
}

func advanceSQLite(ctx context.Context, path string, gap int64) ([]SequenceReport, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("the SQLite database: %w", err)
	}
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// Every AUTOINCREMENT table gets a row in sqlite_sequence once it hands out an id; one that
	// never did starts from its max(rowid), which is 0: give it a row so it starts past the gap too.
	rows, err := tx.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%AUTOINCREMENT%' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list the SQLite tables: %w", err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		tables = append(tables, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []SequenceReport
	for _, name := range tables {
		var last int64
		err := tx.QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = ?", name).Scan(&last)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", name, gap)
		case err == nil:
			_, err = tx.ExecContext(ctx, "UPDATE sqlite_sequence SET seq = ? WHERE name = ?", last+gap, name)
		}
		if err != nil {
			return nil, fmt.Errorf("advance the ids of %s: %w", name, err)
		}
		out = append(out, SequenceReport{Name: name, From: last, To: last + gap})
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return out, nil
}

// RestoreSQLite puts the backup at backup in place of the SQLite database at path, with the
// control plane stopped, and advances its ids by gap (AdvanceIDs). What it replaces (the
// database and its -wal and -shm files) is kept beside it as path.replaced-<time>[-wal|-shm],
// never deleted. The backup is checked (integrity_check) before anything is moved.
func RestoreSQLite(ctx context.Context, backup, path string, gap int64) (replaced string, seqs []SequenceReport, err error) {
	if err := integrity(ctx, backup); err != nil {
		return "", nil, fmt.Errorf("the backup %s: %w", backup, err)
	}
	tmp := path + ".restoring"
	if err := copyNew(backup, tmp); err != nil {
		return "", nil, fmt.Errorf("copy the backup: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		replaced = path + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Rename(path+suffix, replaced+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
				os.Remove(tmp)
				return "", nil, fmt.Errorf("keep the replaced database aside: %w", err)
			}
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return replaced, nil, fmt.Errorf("put the backup in place: %w", err)
	}
	seqs, err = AdvanceIDs(ctx, path, "", gap)
	return replaced, seqs, err
}

func integrity(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		return err
	}
	defer db.Close()
	var result string
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&result); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if result != "ok" {
		return fmt.Errorf("integrity check: %s", result)
	}
	return nil
}

// copyNew copies from to the new file to (0600: the audit is not for every reader of the disk).
func copyNew(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	_ = os.Remove(to) // a partial copy of an earlier attempt
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(to)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(to)
		return err
	}
	return out.Close()
}
