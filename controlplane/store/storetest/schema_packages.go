package storetest

import (
	"testing"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
	"github.com/envfabric/envfabric/shared/envid"
)

// Migration 0006 and the backfill at open build the package index of a database that has
// environments already: each environment's current lock, the packages of every such lock, and
// how many environments hold each.
func testUpgradeToPackageIndex(t *testing.T, sc Schema) {
	ctx := t.Context()
	if _, err := sqlstore.Open(ctx, sc.DB, sc.Dialect, migrationsUpTo(t, sc.Migrations, 5), nil); err != nil {
		t.Fatal(err)
	}
	lockA := LockOf([]string{"idna==3.6"}, "six==1.17.0")
	lockB := LockOf([]string{"idna==3.7", "requests==2.32.0"})
	for _, body := range []string{"pyproject", lockA, lockB} {
		sc.exec(t, `INSERT INTO contents (digest, body) VALUES ($1, $2)`, store.Digest(body), body)
	}
	k1 := envid.Key{WorkflowID: "old", NodeID: "n1", VersionID: "v1"}
	k2 := envid.Key{WorkflowID: "old", NodeID: "n2", VersionID: "v1"}
	k3 := envid.Key{WorkflowID: "old", NodeID: "n3", VersionID: "v1"}
	tm := sc.Dialect.EncodeTime(at(0))
	for _, e := range []struct {
		key   envid.Key
		locks []string // by revision
	}{{k1, []string{lockA, lockB}}, {k2, []string{lockB}}, {k3, []string{lockA}}} {
		sc.exec(t, `INSERT INTO envs (workflow_id, node_id, version_id, state, python_version, python_path, env_path,
			revision, last_error, created_at, updated_at, last_used_at) VALUES ($1, $2, $3, $4, '3.11', '/py', '/envs', $5, '', $6, $6, $6)`,
			e.key.WorkflowID, e.key.NodeID, e.key.VersionID, store.StateActive, len(e.locks), tm)
		for i, l := range e.locks {
			sc.exec(t, `INSERT INTO env_revisions (workflow_id, node_id, version_id, revision, pyproject_digest, lock_digest,
				build_id, operation_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, '', $7, $8)`,
				e.key.WorkflowID, e.key.NodeID, e.key.VersionID, i+1, store.Digest("pyproject"), store.Digest(l), i+1, tm)
		}
	}

	s := sc.Open(t)
	refs := must(s.LockRefs(ctx))(t)
	if refs[store.Digest(lockA)].Envs != 1 || refs[store.Digest(lockB)].Envs != 2 || len(refs) != 2 {
		t.Errorf("LockRefs after the upgrade = %v; want lockA 1 (n3), lockB 2 (n1, n2)", refs)
	}
	for key, want := range map[envid.Key]string{k1: "idna 3.7 true,requests 2.32.0 true", k2: "idna 3.7 true,requests 2.32.0 true", k3: "idna 3.6 true,six 1.17.0 false"} {
		var got []string
		for _, p := range must(s.EnvPackages(ctx, key))(t) {
			got = append(got, p.Name+" "+p.Version+" "+map[bool]string{true: "true", false: "false"}[p.Direct])
		}
		if g := join(got); g != want {
			t.Errorf("packages of %s after the upgrade = %q; want %q", key, g, want)
		}
	}
	envs := must(s.EnvsByLock(ctx, []string{store.Digest(lockA)}, envid.Key{}, 10))(t)
	if len(envs) != 1 || envs[0].Key != k3 {
		t.Errorf("EnvsByLock(lockA) = %v; want n3 only (n1 moved on to lockB)", envs)
	}
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
