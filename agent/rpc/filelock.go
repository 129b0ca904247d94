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

	"github.com/envfabric/envfabric/agent/flock"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Why a lock on the shared storage as well as envLocks and the control plane's lease:
//
// The lease serialises control planes, envLocks serialises the calls inside one agent process,
// but nothing serialises two agents. An agent paused (SIGSTOP, a frozen VM) in the middle of a
// Switch keeps writing when it resumes, long after the control plane gave up on it, took a new
// lease and sent the next Switch to another agent. Both would write the same project. So every
// call that writes a project directory (Switch, delete) holds an exclusive flock on a lock file
// on the shared storage for its whole length (agent/flock): the other agent waits for the
// resumed one to finish (bounded by its caller's context) and then writes its own revision.
// Lock and Build write nothing of a project (a staging copy and a build), so they take no
// project lock; builds have locks of their own (agent/builds).
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
	return filepath.Join(s.cfg.EnvsBasePath, lockDirName, keyHash(key)+".lock")
}

// keyHash is 32 hex digits of a SHA-256 of key's ids: a flat name per environment (its lock file,
// the trash directory of its delete).
func keyHash(key envid.Key) string {
	sum := sha256.Sum256([]byte(key.WorkflowID + "\x00" + key.NodeID + "\x00" + key.VersionID))
	return hex.EncodeToString(sum[:16])
}

// projectLock is a held lock on one project, in this process and on the shared storage.
type projectLock struct {
	fl     *flock.Lock
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
	fl, err := flock.Wait(ctx, path, flock.Exclusive)
	if err != nil {
		unlock()
		if errors.Is(err, flock.ErrBusy) {
			return nil, errcode.Wrap(errcode.EnvLocked, err,
				fmt.Sprintf("another agent is still working on this environment (lock %s): %v", path, context.Cause(ctx)))
		}
		return nil, err
	}
	return &projectLock{fl: fl, f: fl.File(), path: path, unlock: unlock}, nil
}

// release drops both locks.
func (l *projectLock) release() {
	l.fl.Release()
	l.unlock()
}

// releaseRemoving deletes the lock file, then drops both locks: for delete, so that lock files do
// not outlive their environments. A waiter that opened the removed file notices (agent/flock
// compares inodes) and locks the path's new file instead.
func (l *projectLock) releaseRemoving() {
	l.fl.ReleaseRemoving()
	l.unlock()
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
