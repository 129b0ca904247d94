// Package diskspace watches the free space of the filesystem under DATA_ROOT for the control
// plane: a readiness check against a floor, and a reserve (a ballast file) that the audit
// database falls back on when that filesystem is full.
//
// Why a ballast: with the disk full every audit write fails, and so does every operation, delete
// and cleanup included, since each records its intent before acting. But delete and cleanup are
// how an operator frees space through the API. A file of a few MiB written while there was room
// holds blocks that can be given back at the moment they are needed: the Guard releases it when
// free space falls below the floor, and the SQLite store releases it when a write fails for lack
// of space (and tries the write again). It is written again once free space is back above the
// floor by its size, so that restoring it cannot itself push free space under the floor. The
// blocks are reserved for nobody in particular (another writer may take them first), which is
// why the floor, which fails readiness well before the disk is full, comes first.
package diskspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Free is the space unprivileged writers may still use on the filesystem holding path, in bytes.
// (Blocks reserved for root are left out: the control plane may run as root, the agents' uv not.)
func Free(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// LowSpaceError says free space under Root is below the floor.
type LowSpaceError struct {
	Root       string
	Free, Min  uint64
	ReserveOut bool // the reserve has been released to the database
}

func (e *LowSpaceError) Error() string {
	msg := fmt.Sprintf("free space under %s is %s, below the floor of %s", e.Root, human(e.Free), human(e.Min))
	if e.ReserveOut {
		msg += "; the database's reserve is released so that deletes and cleanups can still be recorded"
	}
	return msg
}

// Ballast is a file of Size bytes kept on the filesystem to be given back when it is full. It
// implements sqlstore.Reserve. It is safe for concurrent use.
type Ballast struct {
	Path string
	Size int64
	Log  *slog.Logger

	mu       sync.Mutex
	released bool
}

// Ensure writes the ballast unless a file of its size is there already (the one a previous run
// left). On failure (no room) the ballast counts as released, to be restored later.
func (b *Ballast) Ensure() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if fi, err := os.Stat(b.Path); err == nil && fi.Size() == b.Size {
		b.released = false
		return nil
	}
	if err := b.write(); err != nil {
		b.released = true
		return err
	}
	b.released = false
	return nil
}

// write writes Size bytes that no filesystem compresses or deduplicates away (zeros would be
// sparse or compressed to nothing, and reserve nothing), synced, then renames the file in place.
func (b *Ballast) write() error {
	if err := os.MkdirAll(filepath.Dir(b.Path), 0o700); err != nil {
		return fmt.Errorf("write the disk reserve: %w", err)
	}
	tmp := b.Path + ".tmp"
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		var seed [32]byte
		rng := rand.NewChaCha8(seed)
		buf := make([]byte, 1<<20)
		for left := b.Size; left > 0; left -= int64(len(buf)) {
			chunk := buf[:min(int64(len(buf)), left)]
			rng.Read(chunk)
			if _, err := f.Write(chunk); err != nil {
				return err
			}
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	}()
	if err == nil {
		err = os.Rename(tmp, b.Path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write the disk reserve %s (%s): %w", b.Path, human(uint64(b.Size)), err)
	}
	return nil
}

// Release deletes the ballast; it reports whether it freed anything.
func (b *Ballast) Release() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.released {
		return false
	}
	b.released = true
	switch err := os.Remove(b.Path); {
	case errors.Is(err, os.ErrNotExist):
		return false
	case err != nil:
		b.logger().Error("releasing the disk reserve", "path", b.Path, "err", err)
		return false
	}
	b.logger().Warn("released the disk reserve for the audit database", "path", b.Path, "bytes", b.Size)
	return true
}

// Released reports whether the ballast is out (released, or never written).
func (b *Ballast) Released() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.released
}

func (b *Ballast) logger() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

// Guard checks free space under Root against Min and keeps the ballast (may be nil) in step.
type Guard struct {
	Root    string
	Min     uint64
	Ballast *Ballast
	Log     *slog.Logger
	// free measures; nil is Free. Tests replace it.
	free func(string) (uint64, error)
}

// Check is the readiness check: a *LowSpaceError when free space is below Min. Below the floor
// it releases the ballast; back above the floor by the ballast's size it writes it again.
func (g *Guard) Check(ctx context.Context) error {
	measure := g.free
	if measure == nil {
		measure = Free
	}
	free, err := measure(g.Root)
	if err != nil {
		return fmt.Errorf("measure free space: %w", err)
	}
	b := g.Ballast
	if free < g.Min {
		if b != nil {
			b.Release()
		}
		return &LowSpaceError{Root: g.Root, Free: free, Min: g.Min, ReserveOut: b != nil}
	}
	if b != nil && b.Released() && free >= g.Min+uint64(b.Size) {
		if err := b.Ensure(); err != nil {
			// Not a readiness failure: free space is above the floor, and the next check tries again.
			g.logger().Warn("restoring the disk reserve", "err", err)
		} else {
			g.logger().Info("restored the disk reserve", "path", b.Path, "bytes", b.Size)
		}
	}
	return nil
}

func (g *Guard) logger() *slog.Logger {
	if g.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Log
}

// human is n bytes in binary units.
func human(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
