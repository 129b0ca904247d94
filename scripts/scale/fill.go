package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
	"github.com/envfabric/envfabric/scripts/internal/synth"
	"github.com/envfabric/envfabric/shared/envid"
)

// nodesPerWorkflow: a workflow of 50 nodes, one environment each (version v1).
const nodesPerWorkflow = 50

// keyOf is environment i of the synthetic fleet.
func keyOf(i int) envid.Key {
	return envid.Key{WorkflowID: fmt.Sprintf("wf%05d", i/nodesPerWorkflow), NodeID: fmt.Sprintf("node%02d", i%nodesPerWorkflow), VersionID: "v1"}
}

// fleet is what the fill made: which environments are cleanup candidates (idle past
// CLEANUP_IDLE_HOURS), and the distinct lock contents.
type fleet struct {
	n          int
	candidates []int // indexes of the idle ones
	lockBytes  int64 // the distinct pyproject.toml and uv.lock contents
}

// candidate reports whether environment i is idle past the cleanup limit: every every-th.
func candidate(i, every int) bool { return every > 0 && i%every == every/2 }

// seedLock is one distinct lock as the store recorded it (through the real commit path).
type seedLock struct {
	pyprojectDigest, lockDigest, buildID string
	packages                             int
}

// fill makes n environments in the database behind st and db: first one environment per distinct
// lock through the store (contents, the package index, the lock's build, as a create records
// them), then the rest as rows that reference those contents, in batches of multi-row INSERTs:
// the same rows a create and a later add write (an environment, its revisions, their audited
// operations), a million in minutes instead of hours of round trips. A third of the environments
// have two revisions (an add after the create).
func fill(ctx context.Context, name string, st store.Store, db *sql.DB, d sqlstore.Dialect, n, every int, ls *synth.Locks, envsBase string) (fleet, error) {
	f := fleet{n: n}
	seeds := make([]seedLock, len(ls.Locks))
	now := time.Now()
	for l, lock := range ls.Locks {
		pyproject := fmt.Sprintf("[project]\nname = \"envfabric-env\"\nversion = \"0.1.0\"\nrequires-python = \"==3.11.*\"\ndependencies = [\"lock%03d\"]\n", l)
		b := store.Build{ID: fmt.Sprintf("%032x", l+1), PythonPath: "/usr/bin/python3", PythonFullVersion: "3.11.2",
			LockDigest: store.Digest(lock), State: store.BuildReady, PackagesInstalled: strings.Count(lock, "[[package]]"), Bytes: 40 << 20}
		if err := st.RecordBuild(ctx, b, now); err != nil {
			return f, fmt.Errorf("record build: %w", err)
		}
		key := envid.Key{WorkflowID: "seed", NodeID: fmt.Sprintf("lock%03d", l), VersionID: "v1"}
		if err := synth.Insert(ctx, st, key, pyproject, lock, b.ID, 0); err != nil {
			return f, fmt.Errorf("seed %s: %w", key, err)
		}
		seeds[l] = seedLock{pyprojectDigest: store.Digest(pyproject), lockDigest: b.LockDigest, buildID: b.ID, packages: b.PackagesInstalled}
		f.lockBytes += int64(len(pyproject) + len(lock))
	}
	// Builds no environment references any more, old: the builds half of a cleanup pass.
	for b := 0; b < 50; b++ {
		if err := st.RecordBuild(ctx, store.Build{ID: fmt.Sprintf("%032x", 1<<40+b), LockDigest: seeds[b].lockDigest, State: store.BuildReady,
			LastUsedAt: now.Add(-200 * time.Hour)}, now.Add(-200*time.Hour)); err != nil {
			return f, err
		}
	}
	for i := 0; i < n; i++ {
		if candidate(i, every) {
			f.candidates = append(f.candidates, i)
		}
	}

	const batch = 500
	workers := 2
	if d.Embedded() {
		// One writer at a time in SQLite, on one connection with a page cache large enough for
		// the indexes being filled in random order (last_used_at).
		workers = 1
		db.SetMaxOpenConns(1)
		if _, err := db.ExecContext(ctx, `PRAGMA cache_size = -262144`); err != nil {
			return f, err
		}
	}
	var mu sync.Mutex
	var firstErr error
	next := 0
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				lo := next
				next += batch
				stop := firstErr != nil || lo >= n || ctx.Err() != nil
				mu.Unlock()
				if stop {
					return
				}
				if err := insertBatch(ctx, db, d, lo, min(lo+batch, n), every, ls, seeds, envsBase, now); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				if hi := min(lo+batch, n); hi%100000 == 0 {
					fmt.Printf("  %s: %d environments in %s\n", name, hi, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return f, firstErr
	}
	if err := ctx.Err(); err != nil {
		return f, err
	}
	// What the commits would have kept up to date: each lock's and build's count of
	// environments, the operation id sequence; then fresh statistics for the planner.
	stmts := []string{`UPDATE lock_refs SET envs = (SELECT count(*) FROM envs e WHERE e.lock_digest = lock_refs.lock_digest), generation = generation + 1`,
		`DELETE FROM build_refs`,
		`INSERT INTO build_refs (build_id, envs) SELECT build_id, count(*) FROM envs WHERE build_id <> '' GROUP BY build_id`}
	if d.Embedded() {
		stmts = append(stmts, `ANALYZE`)
	} else {
		// VACUUM as autovacuum would have by the time a fleet grew this large: it sets the
		// visibility map, without which every index-only scan visits the table too.
		stmts = append(stmts, `SELECT setval(pg_get_serial_sequence('env_operations', 'id'), (SELECT max(id) FROM env_operations))`, `VACUUM (ANALYZE)`)
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return f, fmt.Errorf("%s: %w", q, err)
		}
	}
	return f, nil
}

// insertBatch writes environments lo..hi-1 in one transaction.
func insertBatch(ctx context.Context, db *sql.DB, d sqlstore.Dialect, lo, hi, every int, ls *synth.Locks, seeds []seedLock, envsBase string, now time.Time) error {
	r := rand.New(rand.NewPCG(uint64(lo), 11))
	var envRows, revRows, opRows rows
	tm := func(t time.Time) any { return d.EncodeTime(t.UTC().Truncate(d.Precision())) }
	for i := lo; i < hi; i++ {
		k := keyOf(i)
		cur := seeds[ls.Pick(r)]
		created := now.Add(-time.Duration(100+r.IntN(365*24)) * time.Hour)
		used := now.Add(-time.Duration(r.IntN(48*3600)) * time.Second)
		if candidate(i, every) {
			used = now.Add(-time.Duration(100*3600+r.IntN(1000*3600)) * time.Second)
		}
		revs := 1
		if i%3 == 0 {
			revs = 2
		}
		// Operation ids: two a environment, so they never collide between batches.
		opBase := int64(i)*2 + 1
		for rev := 1; rev <= revs; rev++ {
			s := cur
			kind, params := "create", `{"packages":["requests","numpy"],"python_version":"3.11"}`
			if rev < revs {
				s = seeds[ls.Pick(r)]
			}
			if rev > 1 {
				kind, params = "add", `{"packages":["pyyaml>=6"]}`
			}
			at := created.Add(time.Duration(rev-1) * time.Hour)
			id := opBase + int64(rev-1)
			revRows.add(k.WorkflowID, k.NodeID, k.VersionID, rev, id, tm(at), s.pyprojectDigest, s.lockDigest, s.buildID)
			opRows.add(id, k.WorkflowID, k.NodeID, k.VersionID, kind, store.OpSucceeded, "sdk", fmt.Sprintf("%016x", r.Uint64()), "agent-1",
				params, fmt.Sprintf(`{"revision":%d,"build_id":"%s","packages_installed":%d}`, rev, s.buildID, s.packages), tm(at), tm(at.Add(900*time.Millisecond)), 900)
		}
		envRows.add(k.WorkflowID, k.NodeID, k.VersionID, store.StateActive, "3.11", "/usr/bin/python3", k.Dir(envsBase), revs,
			tm(created), tm(created.Add(time.Duration(revs-1)*time.Hour)), tm(used), cur.buildID, revs, cur.lockDigest)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, ins := range []struct {
		table, cols, jsonCols string
		rows                  rows
	}{
		{"envs", "workflow_id, node_id, version_id, state, python_version, python_path, env_path, revision, created_at, updated_at, last_used_at, build_id, disk_revision, lock_digest", "", envRows},
		{"env_revisions", "workflow_id, node_id, version_id, revision, operation_id, created_at, pyproject_digest, lock_digest, build_id", "", revRows},
		{"env_operations", "id, workflow_id, node_id, version_id, operation, status, actor, request_id, agent, params, result, started_at, finished_at, duration_ms", "params result", opRows},
	} {
		if d.Embedded() {
			// SQLite: one prepared row statement run again (no round trips to save; parsing a
			// statement of thousands of parameters is what costs).
			one := rows{width: ins.rows.width, count: 1}
			stmt, err := tx.PrepareContext(ctx, one.insert(d, ins.table, ins.cols, ins.jsonCols))
			if err != nil {
				return fmt.Errorf("insert into %s: %w", ins.table, err)
			}
			for i := 0; i < ins.rows.count; i++ {
				if _, err := stmt.ExecContext(ctx, ins.rows.args[i*ins.rows.width:(i+1)*ins.rows.width]...); err != nil {
					stmt.Close()
					return fmt.Errorf("insert into %s: %w", ins.table, err)
				}
			}
			stmt.Close()
			continue
		}
		if _, err := tx.ExecContext(ctx, ins.rows.insert(d, ins.table, ins.cols, ins.jsonCols), ins.rows.args...); err != nil {
			return fmt.Errorf("insert into %s: %w", ins.table, err)
		}
	}
	return tx.Commit()
}

// rows are the values of a multi-row INSERT.
type rows struct {
	args  []any
	width int
	count int
}

func (r *rows) add(vals ...any) {
	r.width = len(vals)
	r.count++
	r.args = append(r.args, vals...)
}

// insert is the statement, with jsonCols (space-separated names) cast through the dialect.
func (r *rows) insert(d sqlstore.Dialect, table, cols, jsonCols string) string {
	names := strings.Split(cols, ", ")
	isJSON := map[int]bool{}
	for i, c := range names {
		isJSON[i] = strings.Contains(" "+jsonCols+" ", " "+c+" ")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, cols)
	p := 0
	for i := 0; i < r.count; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := 0; c < r.width; c++ {
			if c > 0 {
				b.WriteString(", ")
			}
			p++
			ph := fmt.Sprintf("$%d", p)
			if isJSON[c] {
				ph = d.JSON(ph)
			}
			b.WriteString(ph)
		}
		b.WriteByte(')')
	}
	return d.Rebind(b.String())
}
