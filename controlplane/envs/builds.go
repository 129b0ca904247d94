package envs

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// The steps every change shares (docs/builds.md): the agent resolves in a staging copy (Lock)
// and materialises the build beside every other (Build); the control plane records the build
// and commits the revision, the commit point; then the agent switches the project directory.
// Nothing an environment runs on is touched before the commit, so a change that fails or is cut
// short before it leaves nothing to put back.

// materialise makes sure the build of files for pythonPath exists complete, and records it READY.
func (s *Service) materialise(ctx context.Context, r *running, files Files, pythonPath string, replaceDamaged bool) (Build, error) {
	uctx, cancel := s.uvContext(ctx)
	defer cancel()
	b, err := r.agent.Build(uctx, BuildRequest{Files: files, PythonPath: pythonPath, OperationID: r.id, ReplaceDamaged: replaceDamaged})
	if err != nil {
		return b, err
	}
	if b.PythonPath == "" {
		b.PythonPath = pythonPath
	}
	return b, s.recordBuild(ctx, b, files)
}

// recordBuild records a complete build READY (which wakes the environments whose current build
// it is from HIBERNATED).
func (s *Service) recordBuild(ctx context.Context, b Build, files Files) error {
	now := s.now()
	created := b.CompletedAt
	if created.IsZero() {
		created = now
	}
	err := s.store.RecordBuild(ctx, store.Build{ID: b.ID, PythonPath: b.PythonPath, PythonFullVersion: b.PythonFullVersion,
		LockDigest: store.Digest(files.UvLock), State: store.BuildReady, PackagesInstalled: b.PackagesInstalled, Bytes: b.ExclusiveBytes,
		CreatedAt: created, LastUsedAt: now}, now)
	if err != nil {
		return dbErr("recording the build", err)
	}
	return nil
}

// publish commits a change (compare-and-set on c.Base, fenced by the lease) and then switches
// the project directory to it. A failed switch does not fail the change: it is committed, runs
// use its build by id, and the maintenance pass switches the directory again (EnvsBehindDisk).
func (s *Service) publish(ctx context.Context, r *running, c store.Commit) (int64, error) {
	n, err := s.store.CommitRevision(ctx, c)
	if err != nil {
		var ue *UncommittedError
		if n, ue = s.uncommitted(ctx, r, c, err); ue != nil {
			return 0, ue
		}
	}
	r.committed = true
	s.switchTo(ctx, r.agent, c.Key, Files{PyprojectTOML: c.PyprojectTOML, UvLock: c.UvLock}, c.BuildID, n, r.id)
	return n, nil
}

// uncommitted handles a commit that failed. It returns the committed revision when the commit
// did land after all (its answer was lost), and otherwise the failure to answer with. Nothing
// was switched, so there is nothing to put back: while this control plane still holds the lease
// the environment is settled at rest (a create's record is removed), and with the lease lost it
// touches nothing (the next holder settles it).
func (s *Service) uncommitted(ctx context.Context, r *running, c store.Commit, cause error) (int64, *UncommittedError) {
	e := &UncommittedError{Key: c.Key, Base: c.Base, Err: cause}
	if errors.Is(cause, store.ErrLeaseLost) || r.lost() {
		e.LeaseLost = true
		s.log.Error("a change could not be published: the lease was lost", "env", c.Key.String(), "err", cause)
		return 0, e
	}
	if cur, err := s.store.GetRevision(ctx, c.Key, 0); err == nil && cur.OperationID == r.id && cur.Number > c.Base {
		return cur.Number, nil // committed; only the answer went missing
	}
	if c.Base == 0 {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.store.DeleteEnv(dctx, c.Key, r.lease.ID); err != nil {
			s.log.Error("removing the record of a create that could not be committed; the repair pass will", "env", c.Key.String(), "err", err)
			return 0, e
		}
		e.Restored = true // back to no environment at all
		return 0, e
	}
	s.settle(ctx, c.Key)
	e.Restored = true
	return 0, e
}

// switchTo points key's project directory at revision n and its build, and records that the disk
// follows. It reports whether it did; a failure is logged and left to the maintenance pass.
func (s *Service) switchTo(ctx context.Context, a Agent, key envid.Key, files Files, buildID string, n, opID int64) bool {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := a.Switch(sctx, SwitchRequest{Key: key, Files: files, BuildID: buildID, Revision: n, OperationID: opID}); err != nil {
		s.log.Warn("switching a project directory to its committed revision; the maintenance pass will", "env", key.String(),
			"revision", n, "build", buildID, "err", err)
		return false
	}
	if err := s.store.MarkOnDisk(context.WithoutCancel(sctx), key, n, s.now()); err != nil {
		s.log.Warn("recording that a project directory was switched", "env", key.String(), "revision", n, "err", err)
	}
	return true
}

// projectDir is key's project directory on the storage whose builds live beside venvPath
// (<base>/.builds/<id>/.venv, the layout of docs/builds.md).
func projectDir(key envid.Key, venvPath string) string {
	if venvPath == "" {
		return ""
	}
	return key.Dir(filepath.Dir(filepath.Dir(filepath.Dir(venvPath))))
}

// siblingDir is key's project directory on the storage of another environment's (same base).
func siblingDir(key envid.Key, other envid.Key, otherPath string) string {
	if otherPath == "" {
		return ""
	}
	base := otherPath
	for range 3 {
		base = filepath.Dir(base)
	}
	if other.Dir(base) != filepath.Clean(otherPath) {
		return ""
	}
	return key.Dir(base)
}

func (s *Service) uvTimeout() time.Duration {
	if s.opt.OperationTimeout > 0 {
		return s.opt.OperationTimeout
	}
	return 10 * time.Minute
}
