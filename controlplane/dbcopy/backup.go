package dbcopy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Backup writes a consistent copy of the SQLite database at src to the new file dst while
// control planes keep serving from src (controlplane backup). It is SQLite's VACUUM INTO: one
// read transaction, so the copy is the database as of one moment, every committed operation
// in it or none; writers are not blocked (WAL mode). The copy is complete (no -wal file beside
// it) and compact. It is written beside dst and renamed into place, so dst is either absent or
// whole. dst must not exist.
func Backup(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("the SQLite database: %w", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("backup %s: %w", dst, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup %s: %w", dst, err)
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".partial")
	_ = os.Remove(tmp) // a partial copy left by an earlier attempt
	db, err := sql.Open("sqlite", src+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("open the SQLite database: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("back up %s: %w", src, err)
	}
	// The copy is checked before it is called a backup.
	if err := integrity(ctx, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("check the backup: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil { // the audit is not for every reader of the disk
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup %s: %w", dst, err)
	}
	return nil
}
