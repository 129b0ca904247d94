package store

import (
	"context"

	"github.com/envfabric/envfabric/shared/envid"
)

// PackageIndex is the package index of the fleet (issue 14): the packages of each distinct
// uv.lock (by Digest), written in the transaction that commits a revision with a lock not
// indexed yet, and each environment's current lock digest. Questions across the fleet ("which
// environments hold idna<3.7") are answered in two steps: the index rows of a name, whose few
// distinct versions the caller evaluates (in PEP 440), then the environments whose current lock
// is one of the matching locks, paged by key.
type PackageIndex interface {
	// PackageLocks returns the index rows of the named packages (normalised names).
	PackageLocks(ctx context.Context, names []string) ([]LockPackage, error)
	// LockPackagesOf returns the index rows of the locks named by digests.
	LockPackagesOf(ctx context.Context, digests []string) ([]LockPackage, error)
	// LockRefs returns, for every lock some environment's current revision has, how many do,
	// and the lock's generation, which changes whenever that set of environments does.
	LockRefs(ctx context.Context) (map[string]LockRef, error)
	// EnvsByLock pages the environments whose current lock is one of digests, ordered by key,
	// strictly after after.
	EnvsByLock(ctx context.Context, digests []string, after envid.Key, limit int) ([]EnvLock, error)
	// FirstEnvsByLock returns, for each of digests, its first perLock environments by key: the
	// samples the vulnerabilities view merges per advisory, in one statement.
	FirstEnvsByLock(ctx context.Context, digests []string, perLock int) ([]EnvLock, error)
	// EnvPackages returns the packages of key's current lock (ErrNotFound for no environment).
	EnvPackages(ctx context.Context, key envid.Key) ([]LockPackage, error)
	// IndexLocks indexes the current locks that have no index rows yet (the backfill after an
	// upgrade; Open runs it), at most limit of them; it returns how many it indexed.
	IndexLocks(ctx context.Context, limit int) (int, error)
}

// LockPackage is one package of one lock in the index.
type LockPackage struct {
	LockDigest string
	Name       string // PEP 503 normalised
	Version    string
	// Direct: the project declares it (a dependency of the lock's root package).
	Direct bool
}

// EnvLock is an environment and its current lock digest.
type EnvLock struct {
	Key        envid.Key
	LockDigest string
}

// LockRef is how many environments' current revision has a lock; Generation changes (grows)
// with every change of that set, so a reader can keep what it read of it until then.
type LockRef struct {
	Envs       int
	Generation int64
}
