package osv

import (
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Watcher holds the current DB of one OSV_DATA path and reloads it when the path changes.
type Watcher struct {
	path     string
	interval time.Duration
	log      *slog.Logger
	onLoad   func(*DB)
	cur      atomic.Pointer[DB]
	seen     uint64
	reloads  atomic.Int64
}

// NewWatcher loads path once (an error is returned: a control plane told to read advisories
// that cannot read them says so at start-up) and returns a Watcher that Run keeps current. An
// empty path is a Watcher over Empty() that never reloads. onLoad, if not nil, is called with
// every DB loaded, from the goroutine that loaded it.
func NewWatcher(path string, interval time.Duration, onLoad func(*DB), log *slog.Logger) (*Watcher, error) {
	w := &Watcher{path: path, interval: interval, log: log, onLoad: onLoad}
	if path == "" {
		w.cur.Store(Empty())
		return w, nil
	}
	fp, err := fingerprint(path)
	if err != nil {
		return nil, fmt.Errorf("OSV_DATA=%s: %w", path, err)
	}
	db, err := Load(path)
	if err != nil {
		return nil, fmt.Errorf("OSV_DATA: %w", err)
	}
	w.seen = fp
	w.set(db)
	return w, nil
}

// Current is the DB loaded last.
func (w *Watcher) Current() *DB { return w.cur.Load() }

// Reloads counts the loads after the first.
func (w *Watcher) Reloads() int64 { return w.reloads.Load() }

func (w *Watcher) set(db *DB) {
	w.cur.Store(db)
	w.log.Info("advisories loaded", "path", db.Source, "advisories", db.Records, "withdrawn_or_not_pypi", db.Withdrawn, "unreadable", len(db.Bad))
	for i, b := range db.Bad {
		if i == 10 {
			w.log.Warn("more unreadable OSV records", "count", len(db.Bad)-i)
			break
		}
		w.log.Warn("unreadable OSV record, skipped", "record", b)
	}
	if w.onLoad != nil {
		w.onLoad(db)
	}
}

// Run polls the path every interval until ctx ends, reloading when its modification times or
// sizes changed. A failed reload keeps the DB loaded before (and is logged): advisories do not
// vanish because a download is half written.
func (w *Watcher) Run(ctx context.Context) {
	if w.path == "" || w.interval <= 0 {
		return
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fp, err := fingerprint(w.path)
		if err != nil {
			w.log.Error("checking OSV data for changes", "path", w.path, "err", err)
			continue
		}
		if fp == w.seen {
			continue
		}
		db, err := Load(w.path)
		if err != nil {
			w.log.Error("reloading OSV data; keeping the advisories loaded before", "path", w.path, "err", err)
			continue
		}
		w.seen = fp
		w.reloads.Add(1)
		w.set(db)
	}
}

// fingerprint hashes the names, sizes and modification times under path (or of path itself).
func fingerprint(path string) (uint64, error) {
	h := fnv.New64a()
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", p, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(path); err != nil {
		return 0, err
	}
	return h.Sum64(), nil
}
