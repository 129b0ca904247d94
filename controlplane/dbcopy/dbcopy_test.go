package dbcopy_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/envfabric/envfabric/controlplane/dbcopy"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/testutil/pgtest"
)

// populate writes a small fabric's history into a new SQLite database through the store: two
// environments, three revisions, finished and rejected operations, a live lease and the fleet id.
func populate(t *testing.T, path string) []envid.Key {
	t.Helper()
	ctx := t.Context()
	s, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	var keys []envid.Key
	for i, name := range []string{"ingest", "train"} {
		key, _ := envid.New("wf-1", name, "")
		keys = append(keys, key)
		at := now.Add(time.Duration(i) * time.Minute)
		id := must(s.BeginOperation(ctx, store.Operation{Key: key, Kind: "create", Status: store.OpRunning, Actor: "alice",
			RequestID: "req-" + name, Params: json.RawMessage(`{"packages": ["numpy<2"], "python_version":"3.11"}`), StartedAt: at}))(t)
		if err := s.CreateEnv(ctx, store.Env{Key: key, State: store.StateCreating, PythonVersion: "3.11", CreatedAt: at, UpdatedAt: at, LastUsedAt: at}, at); err != nil {
			t.Fatal(err)
		}
		lease := must(s.AcquireLease(ctx, store.LeaseRequest{Key: key, Mode: store.LeaseChange, Holder: "single", Operation: "create", OperationID: id, TTL: time.Hour, Now: at}))(t)
		must(s.CommitRevision(ctx, store.Commit{Key: key, LeaseID: lease.ID, Base: 0, Now: at, PyprojectTOML: "[project]\nname = \"" + name + "\"\n",
			UvLock: "version = 1\n", OperationID: id, State: store.StateActive, PythonVersion: "3.11", PythonPath: "/usr/bin/python3.11", EnvPath: "/nas/envs/" + name}))(t)
		if err := s.FinishOperation(ctx, id, store.Outcome{Status: store.OpSucceeded, Agent: "host-1", Result: json.RawMessage(`{"revision":1}`), FinishedAt: at.Add(time.Second), DurationMS: 1000}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := s.ReleaseLease(ctx, lease.ID); err != nil {
				t.Fatal(err)
			}
			at = at.Add(time.Hour)
			id := must(s.BeginOperation(ctx, store.Operation{Key: key, Kind: "add", Status: store.OpRunning, Params: json.RawMessage(`{"packages":["pandas"]}`), StartedAt: at}))(t)
			lease := must(s.AcquireLease(ctx, store.LeaseRequest{Key: key, Mode: store.LeaseChange, Holder: "single", Operation: "add", OperationID: id, TTL: time.Hour, Now: at}))(t)
			must(s.CommitRevision(ctx, store.Commit{Key: key, LeaseID: lease.ID, Base: 1, Now: at, PyprojectTOML: "[project]\nname = \"ingest\"\ndependencies = [\"pandas\"]\n",
				UvLock: "version = 1\n# pandas\n", OperationID: id, State: store.StateActive}))(t)
			if err := s.FinishOperation(ctx, id, store.Outcome{Status: store.OpSucceeded, FinishedAt: at.Add(2 * time.Second), DurationMS: 2000}); err != nil {
				t.Fatal(err)
			}
			// Held when the fabric stopped: leases do not move.
		}
	}
	must(s.BeginOperation(ctx, store.Operation{Key: keys[1], Kind: "run", Status: store.OpRejected, ErrorCode: "ENV_LOCKED", Params: json.RawMessage(`{}`), StartedAt: now}))(t)
	must(s.AdoptSetting(ctx, store.SettingFleetID, "storage-abc", now))(t)
	if err := s.SetState(ctx, keys[1], store.StateIdle, "", now); err != nil {
		t.Fatal(err)
	}
	return keys
}

func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// history is what a user can read back of one environment.
type history struct {
	Env       store.Env
	Revisions []store.Revision
	Ops       []store.Operation
}

func read(t *testing.T, s store.Store, key envid.Key) history {
	t.Helper()
	ctx := t.Context()
	h := history{Env: must(s.GetEnv(ctx, key))(t)}
	for n := int64(1); n <= h.Env.Revision; n++ {
		h.Revisions = append(h.Revisions, must(s.GetRevision(ctx, key, n))(t))
	}
	h.Ops = must(s.ListOperations(ctx, key, 0, 100))(t)
	for i := range h.Ops { // jsonb writes documents its own way; compare what they say
		h.Ops[i].Params = canonical(t, h.Ops[i].Params)
		h.Ops[i].Result = canonical(t, h.Ops[i].Result)
	}
	return h
}

func canonical(t *testing.T, b json.RawMessage) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return out
}

// extraTable stands for a table a later migration adds: the copier lists tables and columns from
// the schema, so it moves with no change to the copier.
const (
	extraSQLite   = `CREATE TABLE later_artifacts (id INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL, complete INTEGER NOT NULL, meta TEXT, built_at INTEGER, size REAL, blob BLOB)`
	extraPostgres = `CREATE TABLE later_artifacts (id bigserial PRIMARY KEY, digest text NOT NULL, complete boolean NOT NULL, meta jsonb, built_at timestamptz, size double precision, blob bytea)`
)

func TestCopy(t *testing.T) {
	srv := pgtest.StartT(t)
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "fabric.db")
	keys := populate(t, path)
	url := srv.NewDatabase(t)

	// Both at the same schema, plus the "later" table with rows of every kind in SQLite.
	src := must(sqlite.Open(ctx, path, nil))(t)
	want := map[envid.Key]history{}
	for _, k := range keys {
		want[k] = read(t, src, k)
	}
	src.Close()
	db := must(sql.Open("sqlite", path))(t)
	for _, q := range []string{extraSQLite,
		`INSERT INTO later_artifacts (digest, complete, meta, built_at, size, blob) VALUES ('sha256:aa', 1, '{"b": 2, "a": [1, 2.50]}', 1772600767891, 1.5, x'00ff'), ('sha256:bb', 0, NULL, NULL, NULL, NULL)`,
		`DELETE FROM later_artifacts WHERE digest = 'sha256:bb'`, // AUTOINCREMENT handed out id 2: the sequence must pass it
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	dst := must(postgres.Open(ctx, url, nil))(t)
	dst.Close()
	pg := must(pgx.Connect(ctx, url))(t)
	defer pg.Close(context.Background())
	if _, err := pg.Exec(ctx, extraPostgres); err != nil {
		t.Fatal(err)
	}

	rep := must(dbcopy.Copy(ctx, dbcopy.Options{SQLitePath: path, PostgresURL: url}))(t)
	rows := map[string]int64{}
	for _, tr := range rep.Tables {
		rows[tr.Name] = tr.Rows
	}
	wantRows := map[string]int64{"envs": 2, "env_revisions": 3, "env_operations": 4, "fleet_settings": 1, "later_artifacts": 1}
	for name, n := range wantRows {
		if rows[name] != n {
			t.Errorf("table %s: copied %d rows; want %d (report %+v)", name, rows[name], n, rep.Tables)
		}
	}
	if _, ok := rows["env_leases"]; ok {
		t.Errorf("leases were copied: %+v", rep.Tables)
	}

	s := must(postgres.Open(ctx, url, nil))(t)
	defer s.Close()
	for _, k := range keys {
		if got := read(t, s, k); !reflect.DeepEqual(got, want[k]) {
			t.Errorf("%s in PostgreSQL:\n got %+v\nwant %+v", k, got, want[k])
		}
	}
	if got := must(s.Setting(ctx, store.SettingFleetID))(t); got != "storage-abc" {
		t.Errorf("fleet id %q; want storage-abc", got)
	}
	if n := must(s.CountLeases(ctx, time.Now(), false))(t); n != 0 {
		t.Errorf("%d leases in the target; want none", n)
	}
	// The audit goes on after the last copied id.
	last := want[keys[0]].Ops[0].ID
	for _, h := range want {
		for _, op := range h.Ops {
			last = max(last, op.ID)
		}
	}
	next := must(s.BeginOperation(ctx, store.Operation{Key: keys[0], Kind: "sync", Params: json.RawMessage(`{}`), StartedAt: time.Now()}))(t)
	if next <= last {
		t.Errorf("next operation id %d; want one past %d", next, last)
	}
	var meta string
	var complete bool
	var builtAt time.Time
	var blob []byte
	if err := pg.QueryRow(ctx, `SELECT meta::text, complete, built_at, blob FROM later_artifacts WHERE id = 1`).Scan(&meta, &complete, &builtAt, &blob); err != nil {
		t.Fatal(err)
	}
	if meta != `{"a": [1, 2.50], "b": 2}` || !complete || !builtAt.Equal(time.UnixMilli(1772600767891)) || string(blob) != "\x00\xff" {
		t.Errorf("later_artifacts row: meta %s complete %v built_at %v blob %x", meta, complete, builtAt, blob)
	}
	var nextBuild int64
	if err := pg.QueryRow(ctx, `INSERT INTO later_artifacts (digest, complete) VALUES ('sha256:cc', true) RETURNING id`).Scan(&nextBuild); err != nil {
		t.Fatal(err)
	}
	if nextBuild != 3 {
		t.Errorf("next build id %d; want 3 (SQLite had handed out 2)", nextBuild)
	}

	// A second copy finds the target holding data and refuses, leaving it as it is.
	_, err := dbcopy.Copy(ctx, dbcopy.Options{SQLitePath: path, PostgresURL: url})
	var full *dbcopy.NotEmptyError
	if !errors.As(err, &full) {
		t.Fatalf("copy into a populated database: %v; want a NotEmptyError", err)
	}
	if got := read(t, s, keys[0]); len(got.Ops) != len(want[keys[0]].Ops)+1 {
		t.Errorf("the refused copy changed the target: %d operations", len(got.Ops))
	}
	// Told to, it replaces what is there.
	must(dbcopy.Copy(ctx, dbcopy.Options{SQLitePath: path, PostgresURL: url, Replace: true}))(t)
	if got := read(t, s, keys[0]); !reflect.DeepEqual(got, want[keys[0]]) {
		t.Errorf("after -replace:\n got %+v\nwant %+v", got, want[keys[0]])
	}
}

func TestCopyRefuses(t *testing.T) {
	srv := pgtest.StartT(t)
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "fabric.db")
	populate(t, path)

	t.Run("missing source", func(t *testing.T) {
		_, err := dbcopy.Copy(ctx, dbcopy.Options{SQLitePath: filepath.Join(dir, "nope.db"), PostgresURL: srv.NewDatabase(t)})
		if err == nil {
			t.Fatal("copied from a database that does not exist")
		}
	})
	t.Run("table only in the target", func(t *testing.T) {
		url := srv.NewDatabase(t)
		must(postgres.Open(ctx, url, nil))(t).Close()
		pg := must(pgx.Connect(ctx, url))(t)
		defer pg.Close(context.Background())
		if _, err := pg.Exec(ctx, extraPostgres); err != nil {
			t.Fatal(err)
		}
		_, err := dbcopy.Copy(ctx, dbcopy.Options{SQLitePath: path, PostgresURL: url})
		var se *dbcopy.SchemaError
		if !errors.As(err, &se) {
			t.Fatalf("got %v; want a SchemaError", err)
		}
		var n int
		if err := pg.QueryRow(ctx, `SELECT count(*) FROM envs`).Scan(&n); err != nil || n != 0 {
			t.Errorf("after a refused copy the target holds %d environments (%v); want 0", n, err)
		}
	})
}
