package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// Migration is one numbered schema change, embedded as migrations/NNNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads fsys's migrations/*.sql in order; each name must start with its number.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	out := make([]Migration, 0, len(files))
	for _, f := range files {
		name := path.Base(f)
		num, _, _ := strings.Cut(name, "_")
		version, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with its number: %w", name, err)
		}
		body, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: version, Name: name, SQL: string(body)})
	}
	return out, nil
}

// migrate applies each migration not yet recorded in schema_migrations, each in its own
// transaction with its version row, on one pinned connection holding the dialect's migration
// lock throughout (tern's shape), so control planes starting together migrate once.
func (s *Store) migrate(ctx context.Context, fsys fs.FS) (err error) {
	ms, err := LoadMigrations(fsys)
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	unlock, err := s.d.LockMigrations(ctx, conn)
	if err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		if uerr := unlock(context.WithoutCancel(ctx)); uerr != nil {
			err = errors.Join(err, fmt.Errorf("release migration lock: %w", uerr))
		}
	}()
	if _, err := conn.ExecContext(ctx, s.d.MigrationsTable()); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for _, m := range ms {
		applied, err := s.apply(ctx, conn, m)
		if err != nil {
			return fmt.Errorf("apply migration %s: %w", m.Name, err)
		}
		if applied {
			s.log.Info("applied migration", "version", m.Version, "name", m.Name)
		}
	}
	return nil
}

// apply runs m in one transaction unless schema_migrations records it already.
func (s *Store) apply(ctx context.Context, conn *sql.Conn, m Migration) (applied bool, err error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	r := runner{q: tx, d: s.d}
	var done bool
	if err := r.row(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.Version).Scan(&done); err != nil || done {
		return false, err
	}
	// No arguments: both drivers run a script of several statements.
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, err
	}
	if _, err := r.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
		m.Version, m.Name, s.time(time.Now())); err != nil {
		return false, err
	}
	return true, tx.Commit()
}
