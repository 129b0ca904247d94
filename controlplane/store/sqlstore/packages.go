package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/uvlock"
	"github.com/envfabric/envfabric/shared/envid"
)

// packageIndexMigration is the migration that adds the package index (0006_packages.sql);
// before it, there is nothing to backfill into (the schema tests open older schemas).
const packageIndexMigration = 6

// indexLock writes the package index rows of one lock unless they exist, inside the caller's
// transaction (the commit of a revision with that lock). Two commits of the same new lock at
// once both insert; ON CONFLICT keeps one set. A lock that does not parse is indexed with no
// packages (and logged): uv wrote it, and a commit must not fail for the index's sake.
func (s *Store) indexLock(ctx context.Context, r runner, digest, lock string) error {
	var done bool
	if err := r.row(ctx, `SELECT EXISTS (SELECT 1 FROM locks_indexed WHERE lock_digest = $1)`, digest).Scan(&done); err != nil || done {
		return err
	}
	l, err := uvlock.Parse(lock)
	if err != nil {
		s.log.Warn("indexing a uv.lock that does not parse: no packages indexed for it", "lock_digest", digest, "err", err)
	}
	seen := map[[2]string]bool{}
	n := 0
	for _, p := range l.Packages {
		k := [2]string{p.Name, p.Version}
		if seen[k] {
			continue
		}
		seen[k] = true
		n++
		if _, err := r.exec(ctx, `INSERT INTO lock_packages (lock_digest, name, version, direct) VALUES ($1, $2, $3, $4)
			ON CONFLICT (lock_digest, name, version) DO NOTHING`, digest, p.Name, p.Version, p.Direct); err != nil {
			return fmt.Errorf("index lock %s: %w", digest, err)
		}
	}
	if _, err := r.exec(ctx, `INSERT INTO locks_indexed (lock_digest, packages) VALUES ($1, $2)
		ON CONFLICT (lock_digest) DO NOTHING`, digest, n); err != nil {
		return fmt.Errorf("index lock %s: %w", digest, err)
	}
	return nil
}

// moveLockRef records that one environment's current lock went from old to new ("" for none)
// in lock_refs, in the caller's transaction. The two rows are updated in digest order, so two
// commits moving environments in opposite directions cannot deadlock.
func (s *Store) moveLockRef(ctx context.Context, r runner, old, new string) error {
	for _, st := range refSteps(old, new) { // buildrefs.go
		if _, err := r.exec(ctx, `INSERT INTO lock_refs (lock_digest, envs, generation) VALUES ($1, $2, 1)
			ON CONFLICT (lock_digest) DO UPDATE SET envs = lock_refs.envs + $2, generation = lock_refs.generation + 1`,
			st.key, st.delta); err != nil {
			return fmt.Errorf("count the environments of lock %s: %w", st.key, err)
		}
	}
	return nil
}

// IndexLocks implements store.PackageIndex.
func (s *Store) IndexLocks(ctx context.Context, limit int) (int, error) {
	rows, err := s.read().query(ctx, `SELECT DISTINCT e.lock_digest FROM envs e
		WHERE e.lock_digest <> '' AND NOT EXISTS (SELECT 1 FROM locks_indexed i WHERE i.lock_digest = e.lock_digest)
		LIMIT $1`, sqlLimit(limit))
	digests, err := collect(rows, err, func(r scanner) (d string, err error) { return d, r.Scan(&d) })
	if err != nil {
		return 0, fmt.Errorf("list locks to index: %w", err)
	}
	for _, d := range digests {
		err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
			var body string
			if err := r.row(ctx, `SELECT body FROM contents WHERE digest = $1`, d).Scan(&body); err != nil {
				return notFound(err)
			}
			return s.indexLock(ctx, r, d, body)
		})
		if err != nil {
			return 0, fmt.Errorf("index lock %s: %w", d, err)
		}
	}
	return len(digests), nil
}

// marks returns "$from, $from+1, ..." for n arguments.
func marks(from, n int) string {
	m := make([]string, n)
	for i := range m {
		m[i] = fmt.Sprintf("$%d", from+i)
	}
	return strings.Join(m, ", ")
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func scanLockPackage(r scanner) (p store.LockPackage, err error) {
	return p, r.Scan(&p.LockDigest, &p.Name, &p.Version, &p.Direct)
}

// PackageLocks implements store.PackageIndex.
func (s *Store) PackageLocks(ctx context.Context, names []string) ([]store.LockPackage, error) {
	if len(names) == 0 {
		return nil, nil
	}
	rows, err := s.read().query(ctx, `SELECT lock_digest, name, version, direct FROM lock_packages
		WHERE name IN (`+marks(1, len(names))+`)`, anys(names)...)
	out, err := collect(rows, err, scanLockPackage)
	if err != nil {
		return nil, fmt.Errorf("list the locks of packages: %w", err)
	}
	return out, nil
}

// LockPackagesOf implements store.PackageIndex.
func (s *Store) LockPackagesOf(ctx context.Context, digests []string) ([]store.LockPackage, error) {
	var out []store.LockPackage
	for len(digests) > 0 {
		part := digests[:min(500, len(digests))]
		digests = digests[len(part):]
		rows, err := s.read().query(ctx, `SELECT lock_digest, name, version, direct FROM lock_packages
			WHERE lock_digest IN (`+marks(1, len(part))+`)`, anys(part)...)
		got, err := collect(rows, err, scanLockPackage)
		if err != nil {
			return nil, fmt.Errorf("read the packages of locks: %w", err)
		}
		out = append(out, got...)
	}
	return out, nil
}

// LockRefs implements store.PackageIndex.
func (s *Store) LockRefs(ctx context.Context) (map[string]store.LockRef, error) {
	rows, err := s.read().query(ctx, `SELECT lock_digest, envs, generation FROM lock_refs WHERE envs > 0`)
	type ref struct {
		d string
		r store.LockRef
	}
	refs, err := collect(rows, err, func(r scanner) (x ref, err error) { return x, r.Scan(&x.d, &x.r.Envs, &x.r.Generation) })
	if err != nil {
		return nil, fmt.Errorf("read the environments of each lock: %w", err)
	}
	out := make(map[string]store.LockRef, len(refs))
	for _, x := range refs {
		out[x.d] = x.r
	}
	return out, nil
}

// EnvsByLock implements store.PackageIndex.
func (s *Store) EnvsByLock(ctx context.Context, digests []string, after envid.Key, limit int) ([]store.EnvLock, error) {
	if len(digests) == 0 {
		return nil, nil
	}
	n := len(digests)
	// Two plans, chosen by how many environments the locks hold (lock_refs, a few hundred rows):
	// few, and the envs_lock index finds them and they are sorted; many (over 1 in 20), and
	// walking the primary key in order stops at the limit after some twenty rows per row
	// answered, where sorting them all would read most of the table. The filter on an
	// expression (lock_digest || '') is what keeps both planners off the envs_lock index.
	var matched, total int64
	if err := s.read().row(ctx, fmt.Sprintf(`SELECT COALESCE(sum(CASE WHEN lock_digest IN (%s) THEN envs ELSE 0 END), 0),
		COALESCE(sum(envs), 0) FROM lock_refs`, marks(1, n)), anys(digests)...).Scan(&matched, &total); err != nil {
		return nil, fmt.Errorf("list environments by lock: %w", err)
	}
	col := "lock_digest"
	if matched*20 > total {
		col = "(lock_digest || '')"
	}
	args := append(anys(digests), after.WorkflowID, after.NodeID, after.VersionID, sqlLimit(limit))
	rows, err := s.read().query(ctx, fmt.Sprintf(`SELECT workflow_id, node_id, version_id, lock_digest FROM envs
		WHERE %s IN (%s) AND (workflow_id, node_id, version_id) > ($%d, $%d, $%d)
		ORDER BY workflow_id, node_id, version_id LIMIT $%d`, col, marks(1, n), n+1, n+2, n+3, n+4), args...)
	out, err := collect(rows, err, func(r scanner) (e store.EnvLock, err error) {
		return e, r.Scan(&e.Key.WorkflowID, &e.Key.NodeID, &e.Key.VersionID, &e.LockDigest)
	})
	if err != nil {
		return nil, fmt.Errorf("list environments by lock: %w", err)
	}
	return out, nil
}

// FirstEnvsByLock implements store.PackageIndex: one index range per lock. An embedded
// database has no round trips but parses slowly, so it runs one prepared single-range
// statement per lock; a server answers a UNION ALL of up to 100 ranges per round trip.
func (s *Store) FirstEnvsByLock(ctx context.Context, digests []string, perLock int) ([]store.EnvLock, error) {
	batch := 100
	if s.d.Embedded() {
		batch = 1
	}
	var out []store.EnvLock
	stmts := map[int]*sql.Stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	for len(digests) > 0 {
		part := digests[:min(batch, len(digests))]
		digests = digests[len(part):]
		st, ok := stmts[len(part)]
		if !ok {
			branches := make([]string, len(part))
			for i := range part {
				branches[i] = fmt.Sprintf(`SELECT * FROM (SELECT workflow_id, node_id, version_id, lock_digest FROM envs
					WHERE lock_digest = $%d ORDER BY workflow_id, node_id, version_id LIMIT $%d) AS b%d`, i+1, len(part)+1, i)
			}
			var err error
			if st, err = s.db.PrepareContext(ctx, s.d.Rebind(strings.Join(branches, " UNION ALL "))); err != nil {
				return nil, fmt.Errorf("list the first environments of locks: %w", err)
			}
			stmts[len(part)] = st
		}
		rows, err := st.QueryContext(ctx, append(anys(part), sqlLimit(perLock))...)
		envs, err := collect(rows, err, func(r scanner) (e store.EnvLock, err error) {
			return e, r.Scan(&e.Key.WorkflowID, &e.Key.NodeID, &e.Key.VersionID, &e.LockDigest)
		})
		if err != nil {
			return nil, fmt.Errorf("list the first environments of locks: %w", err)
		}
		out = append(out, envs...)
	}
	return out, nil
}

// EnvPackages implements store.PackageIndex.
func (s *Store) EnvPackages(ctx context.Context, key envid.Key) ([]store.LockPackage, error) {
	var digest string
	if err := s.read().row(ctx, `SELECT lock_digest FROM envs WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3`,
		key.WorkflowID, key.NodeID, key.VersionID).Scan(&digest); err != nil {
		return nil, fmt.Errorf("packages of %s: %w", key, notFound(err))
	}
	rows, err := s.read().query(ctx, `SELECT lock_digest, name, version, direct FROM lock_packages WHERE lock_digest = $1
		ORDER BY name, version`, digest)
	out, err := collect(rows, err, scanLockPackage)
	if err != nil {
		return nil, fmt.Errorf("packages of %s: %w", key, err)
	}
	return out, nil
}
