package rpc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Why a lock on the shared storage as well as envLocks and the control plane's lease:
//
// The lease serialises control planes, envLocks serialises the calls inside one agent process,
// but nothing serialises two agents. An agent paused (SIGSTOP, a frozen VM) in the middle of a
// mutation keeps running uv when it resumes, long after the control plane gave up on it, took a
// new lease and sent the next mutation, or a restore, to another agent. Both would write the same
// project. So every call that writes a project (create, mutate with its restore, sync, delete)
// holds an exclusive flock on a lock file on the shared storage for its whole length: the other
// agent waits for the resumed one to finish (bounded by its caller's context) and then writes its
// own base over whatever the resumed one left. A process killed with -9 loses its flock with its
// descriptors (the kernel releases it); on NFS the Linux client maps flock to a whole-file POSIX
// lock that the server drops when the client's lease lapses.
//
// The lock files live in one directory beside the projects (<ENVS_BASE_PATH>/.locks), not inside
// the project directory: delete renames the directory away, and a lock inside it would move with
// it. Each file also records which operation last wrote its project at which revision (see
// admit), so a resumed holder that comes back with an older base is refused instead of writing
// it over a newer acknowledged revision.

// lockDirName holds the lock files; ids never start with a dot, so it cannot be a workflow.
const lockDirName = ".locks"

// lockPath is key's lock file: a hash of the ids keeps the name short and flat.
func (s *Server) lockPath(key envid.Key) string {
	sum := sha256.Sum256([]byte(key.WorkflowID + "\x00" + key.NodeID + "\x00" + key.VersionID))
	return filepath.Join(s.cfg.EnvsBasePath, lockDirName, hex.EncodeToString(sum[:16])+".lock")
}

// projectLock is a held lock on one project, in this process and on the shared storage.
type projectLock struct {
	f      *os.File
	path   string
	unlock func() // the in-process lock
}

// lockProject takes key's in-process lock, then its lock on the shared storage, waiting for
// either no longer than ctx allows.
func (s *Server) lockProject(ctx context.Context, key envid.Key) (*projectLock, error) {
	unlock, err := s.locks.lock(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("waiting for this agent's other call on %s: %w", key, err)
	}
	path := s.lockPath(key)
	f, err := flockWait(ctx, path)
	if err != nil {
		unlock()
		return nil, err
	}
	return &projectLock{f: f, path: path, unlock: unlock}, nil
}

// release drops both locks.
func (l *projectLock) release() {
	l.f.Close() // closing the descriptor drops the flock
	l.unlock()
}

// releaseRemoving deletes the lock file, then drops both locks: for delete, so that lock files do
// not outlive their environments. A waiter that opened the removed file notices (flockWait
// compares inodes) and locks the path's new file instead.
func (l *projectLock) releaseRemoving() {
	_ = os.Remove(l.path)
	l.release()
}

// written is the newest (revision, operation) recorded in the lock file; zeros when none is.
func (l *projectLock) written() (rev, op int64) {
	b := make([]byte, 64)
	n, _ := l.f.ReadAt(b, 0)
	fields := strings.Fields(string(b[:n]))
	if len(fields) == 2 {
		rev, _ = strconv.ParseInt(fields[0], 10, 64)
		op, _ = strconv.ParseInt(fields[1], 10, 64)
	}
	return rev, op
}

// record notes that operation op left the project at revision rev (or at what rev will be once
// the control plane commits it).
func (l *projectLock) record(rev, op int64) error {
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("recording revision %d in %s: %w", rev, l.path, err)
	}
	if _, err := l.f.WriteAt([]byte(fmt.Sprintf("%d %d\n", rev, op)), 0); err != nil {
		return fmt.Errorf("recording revision %d in %s: %w", rev, l.path, err)
	}
	return nil
}

// admit refuses a call of operation op that would write revision rev when an operation newer
// than it left the project at rev or later: op read its base before that change and lost its
// lease since (it was paused), and writing its base would undo an acknowledged change. The same
// operation may always write again (it puts its own base back after a failed commit); a newer
// operation may write any revision (it read the database under its lease, and a newer operation
// on the disk that never committed is exactly what it must overwrite). Operation ids grow with
// time, which makes them the fencing tokens here. op == 0 (not given) is not checked.
func (l *projectLock) admit(key envid.Key, rev, op int64) error {
	if op == 0 {
		return nil
	}
	haveRev, haveOp := l.written()
	if op < haveOp && rev <= haveRev {
		return errcode.New(errcode.EnvLocked, fmt.Sprintf(
			"environment %s was written at revision %d by operation %d, newer than operation %d that wants to write revision %d; retry",
			key, haveRev, haveOp, op, rev))
	}
	return nil
}

// flockWait opens path (creating it) and takes an exclusive flock on it, polling until ctx ends.
// flock(2) itself cannot be interrupted by a context, so it is tried without blocking.
func flockWait(ctx context.Context, path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the lock directory: %w", err)
	}
	delay := 5 * time.Millisecond
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("opening the lock file %s: %w", path, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if sameFile(f, path) {
				return f, nil
			}
			// The file was removed (the environment deleted) after we opened it: lock the new one.
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, errcode.Wrap(errcode.EnvLocked, context.Cause(ctx),
				fmt.Sprintf("another agent is still working on this environment (lock %s): %v", path, context.Cause(ctx)))
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
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
