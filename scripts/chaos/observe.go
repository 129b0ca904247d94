package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/envfabric/envfabric/scripts/chaos/check"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// quietState is what still moves: audit rows running, live leases, environments in a
// transitional state. The system is quiet when all are zero.
type quietState struct {
	Running, Leases, Transitional int
}

func (q quietState) quiet() bool { return q.Running == 0 && q.Leases == 0 && q.Transitional == 0 }

func (q quietState) String() string {
	return fmt.Sprintf("%d audit rows running, %d live leases, %d environments in a transitional state", q.Running, q.Leases, q.Transitional)
}

func (f *fleet) queryQuiet(ctx context.Context) (quietState, error) {
	var q quietState
	err := f.withDB(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM env_operations WHERE status = 'running'),
			(SELECT count(*) FROM env_leases WHERE expires_at > now()),
			(SELECT count(*) FROM envs WHERE state IN ('CREATING', 'INSTALLING', 'SYNCING', 'DELETING'))`).
			Scan(&q.Running, &q.Leases, &q.Transitional)
	})
	return q, err
}

// waitQuiet polls until nothing moves, or limit passes. The system may legitimately need a while
// (a lease of a killed holder runs out after its TTL; an agent restores after a dead peer), so
// it waits for that, no longer: what is still moving afterwards is a violation for the checker.
func (f *fleet) waitQuiet(ctx context.Context, limit time.Duration) (quietState, bool) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last quietState
	for {
		q, err := f.queryQuiet(ctx)
		if err == nil {
			last = q
			if q.quiet() {
				return q, true
			}
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return last, false
		}
	}
}

func (f *fleet) withDB(ctx context.Context, fn func(*pgx.Conn) error) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, f.dbURL)
	if err != nil {
		return fmt.Errorf("connect to the audit database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return fn(conn)
}

// observe gathers what the checker needs once the system is quiet: for every environment the
// API's answers (deps, export, status, the audit trail), the files on the shared storage and
// .venv, and from the database the leases, the open audit rows and the states.
func (f *fleet) observe(ctx context.Context, api *apiClient, nodes []string) (check.Input, error) {
	in := check.Input{Universe: universeNames()}
	states := map[string]string{}
	err := f.withDB(ctx, func(conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, "SELECT now()").Scan(&in.Now); err != nil {
			return err
		}
		rows, err := conn.Query(ctx, `SELECT id, workflow_id || '/' || node_id, holder, operation, operation_id, expires_at FROM env_leases ORDER BY id`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var l check.Lease
			if err := rows.Scan(&l.ID, &l.Env, &l.Holder, &l.Operation, &l.OperationID, &l.ExpiresAt); err != nil {
				return err
			}
			in.Leases = append(in.Leases, l)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = conn.Query(ctx, `SELECT id, workflow_id || '/' || node_id, operation, status, request_id, agent, params, started_at
			FROM env_operations WHERE status = 'running' ORDER BY id`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var r check.AuditRow
			var params []byte
			if err := rows.Scan(&r.ID, &r.Env, &r.Operation, &r.Status, &r.RequestID, &r.Agent, &params, &r.StartedAt); err != nil {
				return err
			}
			_ = json.Unmarshal(params, &r.Params)
			in.OpenRows = append(in.OpenRows, r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = conn.Query(ctx, `SELECT workflow_id || '/' || node_id, state FROM envs`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var env, state string
			if err := rows.Scan(&env, &state); err != nil {
				return err
			}
			states[env] = state
		}
		return rows.Err()
	})
	if err != nil {
		return in, fmt.Errorf("reading the database: %w", err)
	}
	for _, node := range nodes {
		e, err := f.observeEnv(ctx, api, node)
		if err != nil {
			return in, fmt.Errorf("observing %s: %w", node, err)
		}
		e.DBState = states[e.Env]
		in.Envs = append(in.Envs, e)
	}
	return in, nil
}

func (f *fleet) observeEnv(ctx context.Context, api *apiClient, node string) (check.EnvFinal, error) {
	e := check.EnvFinal{Env: workflowID + "/" + node}
	var deps struct {
		Dependencies []string          `json:"dependencies"`
		Locked       map[string]string `json:"locked_versions"`
		Revision     int64             `json:"revision"`
	}
	// Any control plane will do; the first that answers (one may not have come back).
	var base, body string
	var status int
	var err error
	for _, cp := range f.cps {
		base = cp.url + "/envs/" + workflowID + "/" + node
		if status, body, err = api.getJSON(ctx, base+"/deps", &deps); err == nil {
			break
		}
	}
	if err != nil {
		return e, err
	}
	e.DepsStatus, e.DepsCode = status, errorCode(body)
	e.Dependencies, e.Locked, e.Revision = deps.Dependencies, deps.Locked, deps.Revision

	var export struct {
		Pyproject string `json:"pyproject_toml"`
		Lock      string `json:"uv_lock"`
	}
	if e.ExportStatus, _, err = api.getJSON(ctx, base+"/export", &export); err != nil {
		return e, err
	}
	e.ExportPyproject, e.ExportLock = export.Pyproject, export.Lock

	var st struct {
		Disk *struct {
			FilesMatch bool `json:"files_match_revision"`
			VenvInSync bool `json:"venv_in_sync"`
		} `json:"disk"`
		DiskError string `json:"disk_error"`
	}
	if e.StatusCode, _, err = api.getJSON(ctx, base, &st); err != nil {
		return e, err
	}
	if st.Disk != nil {
		e.FilesMatch, e.VenvInSync = &st.Disk.FilesMatch, &st.Disk.VenvInSync
	}
	e.DiskError = st.DiskError

	// The whole audit trail, page by page (newest first).
	before := int64(0)
	for range 1000 {
		url := base + "/operations?limit=200"
		if before > 0 {
			url += fmt.Sprintf("&before=%d", before)
		}
		var page struct {
			Operations []check.AuditRow `json:"operations"`
			NextBefore int64            `json:"next_before"`
		}
		status, body, err := api.getJSON(ctx, url, &page)
		if err != nil {
			return e, err
		}
		if status == http.StatusNotFound {
			break // never created: no history
		}
		if status != http.StatusOK {
			return e, fmt.Errorf("GET operations: %d %s", status, body)
		}
		for _, r := range page.Operations {
			r.Env = e.Env
			e.Audit = append(e.Audit, r)
		}
		if page.NextBefore == 0 {
			break
		}
		before = page.NextBefore
	}

	dir := filepath.Join(f.envsDir, workflowID, node, "v1")
	if _, err := os.Stat(dir); err == nil {
		e.DirExists = true
	}
	e.DiskPyproject = readOptional(filepath.Join(dir, "pyproject.toml"))
	e.DiskLock = readOptional(filepath.Join(dir, "uv.lock"))
	e.Installed = installed(dir)
	return e, nil
}

func readOptional(path string) *string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	return &s
}

// installed lists the distributions of the universe in the environment's .venv, from their
// dist-info directories ("<name>-<version>.dist-info"), as uv left them.
func installed(dir string) map[string]string {
	out := map[string]string{}
	names := universeNames()
	matches, _ := filepath.Glob(filepath.Join(dir, ".venv", "lib", "python*", "site-packages", "*.dist-info"))
	for _, m := range matches {
		base := strings.TrimSuffix(filepath.Base(m), ".dist-info")
		name, version, ok := strings.Cut(base, "-")
		if !ok {
			continue
		}
		if n := pyproject.Normalize(name); names[n] {
			out[n] = version
		}
	}
	return out
}

// errorCode is the code of an API error body, or "".
func errorCode(body string) string {
	var b struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(body), &b)
	return b.Error.Code
}

// removeAll removes a directory tree that uv may have left read-only.
func removeAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, _ error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
