package storetest

import (
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
	"github.com/envfabric/envfabric/shared/envid"
)

// Schema is one fresh, empty database for the tests that look under the Store interface: at
// the rows a migration leaves and at how much the contents take.
type Schema struct {
	DB         *sql.DB // the database, opened directly
	Dialect    sqlstore.Dialect
	Migrations fs.FS // the store's embedded migrations (migrations/NNNN_name.sql)
	// Open opens the store on the same database, applying every migration, and arranges its Close.
	Open func(t *testing.T) store.Store
}

// RunSchema runs the schema tests, each on a database newDB returns.
func RunSchema(t *testing.T, newDB func(t *testing.T) Schema) {
	tests := []struct {
		name string
		fn   func(t *testing.T, sc Schema)
	}{
		{"UpgradeToBuilds", testUpgradeToBuilds},
		{"ContentsStoredOnce", testContentsStoredOnce},
		{"UpgradeToPackageIndex", testUpgradeToPackageIndex}, // schema_packages.go
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newDB(t))
		})
	}
}

// migrationsUpTo is fsys with only the migrations up to version.
func migrationsUpTo(t *testing.T, fsys fs.FS, version int) fs.FS {
	t.Helper()
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, f := range files {
		num, _, _ := strings.Cut(path.Base(f), "_")
		if v, err := strconv.Atoi(num); err != nil || v > version {
			continue
		}
		body, err := fs.ReadFile(fsys, f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = &fstest.MapFile{Data: body}
	}
	return out
}

func (sc Schema) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if _, err := sc.DB.ExecContext(t.Context(), sc.Dialect.Rebind(query), args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// contents returns how many rows contents holds and the characters of their bodies, and fails
// the test unless every row is named by the digest of its body.
func (sc Schema) contents(t *testing.T) (rows, chars int) {
	t.Helper()
	r, err := sc.DB.QueryContext(t.Context(), `SELECT digest, body FROM contents`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var digest, body string
		if err := r.Scan(&digest, &body); err != nil {
			t.Fatal(err)
		}
		if digest != store.Digest(body) {
			t.Errorf("contents row %s holds a body whose digest is %s", digest, store.Digest(body))
		}
		rows++
		chars += len([]rune(body))
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return rows, chars
}

// Migration 0005 moves what a database of the layout before builds holds: the files into
// contents under the same digest the store computes (a later commit of the same files adds no
// row), environments with no build and their directory at their revision, exclusive leases as
// changes and shared ones as runs.
func testUpgradeToBuilds(t *testing.T, sc Schema) {
	ctx := t.Context()
	if _, err := sqlstore.Open(ctx, sc.DB, sc.Dialect, migrationsUpTo(t, sc.Migrations, 4), nil); err != nil {
		t.Fatal(err)
	}
	k1 := envid.Key{WorkflowID: "old", NodeID: "n1", VersionID: "v1"}
	k2 := envid.Key{WorkflowID: "old", NodeID: "n2", VersionID: "v1"}
	tm := func(d time.Duration) any { return sc.Dialect.EncodeTime(at(d)) }
	// Non-ASCII text: the SQL digest must hash the same UTF-8 bytes as store.Digest.
	files := map[string]string{"p1": "[project]\nname = \"a\"\n", "l1": "version = 1\n",
		"p2": "[project]\nname = \"a\" # café\n", "l2": "version = 1\n# ünïcode\n"}
	for _, e := range []struct {
		key envid.Key
		rev int64
	}{{k1, 2}, {k2, 1}} {
		sc.exec(t, `INSERT INTO envs (workflow_id, node_id, version_id, state, python_version, python_path, env_path,
			revision, last_error, created_at, updated_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '', $9, $9, $9)`,
			e.key.WorkflowID, e.key.NodeID, e.key.VersionID, store.StateActive, "3.11", "/py/3.11", "/envs/"+e.key.NodeID,
			e.rev, tm(0))
	}
	for _, r := range []struct {
		key      envid.Key
		rev      int64
		p, l     string
		opID     int64
		exclusiv bool
	}{{k1, 1, "p1", "l1", 1, true}, {k1, 2, "p2", "l2", 2, false}, {k2, 1, "p2", "l2", 3, false}} {
		sc.exec(t, `INSERT INTO env_revisions (workflow_id, node_id, version_id, revision, pyproject_toml, uv_lock,
			operation_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			r.key.WorkflowID, r.key.NodeID, r.key.VersionID, r.rev, files[r.p], files[r.l], r.opID, tm(time.Duration(r.rev)*time.Second))
		if r.rev == 1 {
			sc.exec(t, `INSERT INTO env_leases (id, workflow_id, node_id, version_id, exclusive, holder, operation,
				operation_id, acquired_at, expires_at) VALUES ($1, $2, $3, $4, $5, 'cp-old', 'add', $6, $7, $8)`,
				"lease-"+r.key.NodeID, r.key.WorkflowID, r.key.NodeID, r.key.VersionID, r.exclusiv, r.opID, tm(0), tm(ttl))
		}
	}

	s := sc.Open(t)
	for _, tt := range []struct {
		key  envid.Key
		rev  int64
		mode store.LeaseMode
		p, l string
	}{{k1, 1, store.LeaseChange, "p1", "l1"}, {k1, 2, store.LeaseChange, "p2", "l2"}, {k2, 1, store.LeaseRun, "p2", "l2"}} {
		r := must(s.GetRevision(ctx, tt.key, tt.rev))(t)
		if r.PyprojectTOML != files[tt.p] || r.UvLock != files[tt.l] || r.BuildID != "" {
			t.Errorf("%s revision %d = %+v; want %s, %s, no build", tt.key, tt.rev, r, tt.p, tt.l)
		}
		sameTime(t, "revision created_at", r.CreatedAt, at(time.Duration(tt.rev)*time.Second))
		e := getEnv(t, s, tt.key)
		if e.BuildID != "" || e.DiskRevision != e.Revision || e.State != store.StateActive {
			t.Errorf("%s = %+v; want no build, disk revision = revision", tt.key, e)
		}
		leases := must(s.ListLeases(ctx, tt.key, at(time.Second)))(t)
		if len(leases) != 1 || leases[0].Mode != tt.mode {
			t.Errorf("%s leases = %+v; want one %s lease", tt.key, leases, tt.mode)
		}
	}
	if rows, _ := sc.contents(t); rows != 4 {
		t.Errorf("contents hold %d rows; want 4 (each distinct file once)", rows)
	}
	if _, err := sc.DB.ExecContext(ctx, `SELECT pyproject_toml FROM env_revisions`); err == nil {
		t.Error("env_revisions still has the pyproject_toml column")
	}
	if _, err := sc.DB.ExecContext(ctx, `SELECT exclusive FROM env_leases`); err == nil {
		t.Error("env_leases still has the exclusive column")
	}

	// The migrated digests are the store's: the same files committed anew add no contents.
	k3 := envid.Key{WorkflowID: "new", NodeID: "n3", VersionID: "v1"}
	createEnv(t, s, k3, at(0))
	l := lease(t, s, k3, store.LeaseChange, at(0))
	must(s.CommitRevision(ctx, store.Commit{Key: k3, LeaseID: l.ID, Now: at(0), PyprojectTOML: files["p1"],
		UvLock: files["l2"], State: store.StateActive}))(t)
	if rows, _ := sc.contents(t); rows != 4 {
		t.Errorf("after a commit of migrated files, contents hold %d rows; want 4", rows)
	}
	// And the leases taken before the upgrade still exclude as their mode says.
	_, err := s.AcquireLease(ctx, store.LeaseRequest{Key: k1, Mode: store.LeaseChange, TTL: ttl, Now: at(time.Second)})
	wantErr(t, "a change while the migrated change lease lives", err, store.ErrLocked)
	must(s.AcquireLease(ctx, store.LeaseRequest{Key: k2, Mode: store.LeaseChange, TTL: ttl, Now: at(time.Second)}))(t)
}

// The size check of issue 11: a hundred environments with the same requirements (byte-identical
// pyproject.toml and uv.lock, envid.ProjectName) store one copy of each file, and deleting them
// all removes the copies.
func testContentsStoredOnce(t *testing.T, sc Schema) {
	ctx := t.Context()
	s := sc.Open(t)
	const n = 100
	pyproject := "[project]\nname = \"envfabric-env-0123456789abcdef0123456789abcdef\"\nversion = \"0\"\n" +
		"requires-python = \">=3.11\"\ndependencies = [\"numpy==2.1.0\", \"pandas==2.2.3\"]\n"
	var lock strings.Builder
	for i := 0; lock.Len() < 100_000; i++ { // about the size of a numpy + pandas lock
		fmt.Fprintf(&lock, "[[package]]\nname = \"pkg-%d\"\nversion = \"1.%d.0\"\nsource = { registry = \"https://index.invalid/simple\" }\n"+
			"wheels = [{ url = \"https://index.invalid/pkg_%d-1.%d.0-py3-none-any.whl\", hash = \"sha256:%064d\", size = %d }]\n\n",
			i, i, i, i, i, 1000+i)
	}
	recordBuild(t, s, "b", at(0))
	var keys []envid.Key
	for i := range n {
		k := envid.Key{WorkflowID: "size", NodeID: fmt.Sprint("n", i), VersionID: "v1"}
		keys = append(keys, k)
		createEnv(t, s, k, at(0))
		l := lease(t, s, k, store.LeaseChange, at(0))
		must(s.CommitRevision(ctx, store.Commit{Key: k, LeaseID: l.ID, Now: at(0), PyprojectTOML: pyproject,
			UvLock: lock.String(), BuildID: "b", State: store.StateActive}))(t)
	}
	rows, chars := sc.contents(t)
	once := len(pyproject) + lock.Len()
	t.Logf("%d environments with a %d-byte pyproject.toml and a %d-byte uv.lock: %d contents rows, %d bytes (%d if stored per environment)",
		n, len(pyproject), lock.Len(), rows, chars, n*once)
	if rows != 2 || chars != once {
		t.Errorf("contents hold %d rows, %d bytes; want 2 rows, %d bytes (each file once)", rows, chars, once)
	}
	for _, k := range keys {
		if r := must(s.GetRevision(ctx, k, 0))(t); r.UvLock != lock.String() || r.PyprojectTOML != pyproject {
			t.Fatalf("%s reads back other files", k)
		}
	}
	for i, k := range keys {
		l := lease(t, s, k, store.LeaseDelete, now())
		if err := s.DeleteEnv(ctx, k, l.ID); err != nil {
			t.Fatal(err)
		}
		if rows, _ := sc.contents(t); (rows == 2) != (i < n-1) {
			t.Fatalf("after deleting %d of %d environments, contents hold %d rows", i+1, n, rows)
		}
	}
	if rows, _ := sc.contents(t); rows != 0 {
		t.Errorf("after deleting every environment, contents hold %d rows; want 0", rows)
	}
}
