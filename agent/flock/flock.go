// Package flock takes flock(2) locks on lock files of the shared storage, the one way the agent
// serialises work with other agents: waiting is bounded by a context (flock itself cannot be
// interrupted, so it is tried without blocking and polled), and a lock file removed while a
// waiter had it open is noticed, so the waiter locks the path's new file instead of a ghost.
//
// A process killed with -9 loses its flocks with its descriptors (the kernel releases them); on
// NFS the Linux client maps flock to a whole-file POSIX lock that the server drops when the
// client's lease lapses.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Mode is how a lock is held.
type Mode int

const (
	// Shared locks coexist with each other and exclude Exclusive ones.
	Shared Mode = iota
	// Exclusive excludes every other lock on the file.
	Exclusive
)

func (m Mode) op() int {
	if m == Exclusive {
		return syscall.LOCK_EX
	}
	return syscall.LOCK_SH
}

// ErrBusy says that another holder kept the lock: Try found it held, or Wait's context ended
// first.
var ErrBusy = errors.New("lock held by another holder")

// Lock is a held lock.
type Lock struct {
	f    *os.File
	path string
}

// File is the open lock file, for holders that record state in it.
func (l *Lock) File() *os.File { return l.f }

// Path is the lock file's path.
func (l *Lock) Path() string { return l.path }

// Release drops the lock (closing the descriptor drops the flock).
func (l *Lock) Release() { l.f.Close() }

// ReleaseRemoving deletes the lock file, then drops the lock: for holders that removed what the
// file guarded, so lock files do not outlive it. A waiter that opened the removed file notices
// and locks the path's new file.
func (l *Lock) ReleaseRemoving() {
	_ = os.Remove(l.path)
	l.f.Close()
}

// Wait takes the lock at path (creating the file and its directory), polling until ctx ends. The
// error of an ended wait wraps ErrBusy and ctx's cause.
func Wait(ctx context.Context, path string, mode Mode) (*Lock, error) {
	delay := 5 * time.Millisecond
	for {
		l, err := Try(path, mode)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, ErrBusy) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the lock %s: %w: %w", path, ErrBusy, context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// Try takes the lock at path without waiting; the error wraps ErrBusy when it is held.
func Try(path string, mode Mode) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the lock directory: %w", err)
	}
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("opening the lock file %s: %w", path, err)
		}
		err = syscall.Flock(int(f.Fd()), mode.op()|syscall.LOCK_NB)
		if err == nil {
			if sameFile(f, path) {
				return &Lock{f: f, path: path}, nil
			}
			// The file was removed after we opened it: lock the new one.
			f.Close()
			continue
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINTR) {
			return nil, fmt.Errorf("%s: %w", path, ErrBusy)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
}

// sameFile reports whether f is still the file at path.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}
