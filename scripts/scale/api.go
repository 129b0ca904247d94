package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
)

type latency struct {
	n             int
	p50, p99, max time.Duration
}

func latencyOf(ds []time.Duration) latency {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	p := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return latency{n: len(ds), p50: p(0.5), p99: p(0.99), max: ds[len(ds)-1]}
}

// paths are the four read paths measured, each for a random environment (or its workflow).
var paths = []struct {
	name string
	path func(i int) string
}{
	{"status", func(i int) string { k := keyOf(i); return "/envs/" + k.WorkflowID + "/" + k.NodeID }},
	{"deps", func(i int) string { k := keyOf(i); return "/envs/" + k.WorkflowID + "/" + k.NodeID + "/deps" }},
	{"list of one workflow (50)", func(i int) string { return "/envs?workflow_id=" + keyOf(i).WorkflowID + "&limit=50" }},
	{"history (20)", func(i int) string {
		k := keyOf(i)
		return "/envs/" + k.WorkflowID + "/" + k.NodeID + "/operations?limit=20"
	}},
}

func (f *fabric) get(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+path, nil)
	if err != nil {
		return err
	}
	resp, err := f.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return nil
}

// measureAPI times each path one request at a time (latency), then with 8 clients at once
// (throughput), through the control plane's HTTP API.
func measureAPI(ctx context.Context, f *fabric, cfg config) (map[string]latency, map[string]float64, error) {
	lat, thr := map[string]latency{}, map[string]float64{}
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range paths {
		// Warm the connection and the plan caches.
		for w := 0; w < 20; w++ {
			if err := f.get(ctx, p.path(r.IntN(cfg.envs))); err != nil {
				return nil, nil, err
			}
		}
		var ds []time.Duration
		for q := 0; q < cfg.requests; q++ {
			i := r.IntN(cfg.envs)
			t0 := time.Now()
			if err := f.get(ctx, p.path(i)); err != nil {
				return nil, nil, err
			}
			ds = append(ds, time.Since(t0))
		}
		lat[p.name] = latencyOf(ds)
		const clients = 8
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		t0 := time.Now()
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(c), 9))
				for q := 0; q < cfg.requests/2; q++ {
					if err := f.get(ctx, p.path(r.IntN(cfg.envs))); err != nil {
						errs <- err
						return
					}
				}
			}(c)
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return nil, nil, err
		}
		thr[p.name] = float64(clients*(cfg.requests/2)) / time.Since(t0).Seconds()
		l := lat[p.name]
		fmt.Printf("  %-28s p50 %-9s p99 %-9s max %-9s %6.0f req/s (8 clients)\n", p.name, l.p50.Round(10*time.Microsecond),
			l.p99.Round(10*time.Microsecond), l.max.Round(10*time.Microsecond), thr[p.name])
	}
	return lat, thr, nil
}

// candidateDirs makes the cleanup candidates' project directories on the "shared storage" with
// their pyvenv.cfg, as armed by the agent (atime = mtime); one in ten was started since by a
// workflow executor (atime after mtime), so the pass must keep it.
func candidateDirs(envsBase string, candidates []int) error {
	old := time.Now().Add(-200 * time.Hour)
	for n, i := range candidates {
		venv := filepath.Join(keyOf(i).Dir(envsBase), ".venv")
		if err := os.MkdirAll(venv, 0o755); err != nil {
			return err
		}
		cfg := filepath.Join(venv, "pyvenv.cfg")
		if err := os.WriteFile(cfg, []byte("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n"), 0o644); err != nil {
			return err
		}
		atime := old
		if n%10 == 0 {
			atime = time.Now().Add(-time.Minute)
		}
		if err := os.Chtimes(cfg, atime, old); err != nil {
			return err
		}
	}
	return nil
}

type cleanupResult struct {
	took             time.Duration
	removed, skipped int
	kept             int // candidates the storage's signal showed used
	buildsRemoved    int
	storageCalls     float64
	candidates       int
}

// measureCleanup runs one whole pass (POST /envs/cleanup) and counts the agent's metadata calls
// against the shared storage during it (envfabric_agent_usage_storage_calls_total).
func measureCleanup(ctx context.Context, f *fabric, fl fleet, envsBase string) (cleanupResult, error) {
	res := cleanupResult{candidates: len(fl.candidates)}
	calls0, err := f.storageCalls(ctx)
	if err != nil {
		return res, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/envs/cleanup", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := f.api.Do(req)
	if err != nil {
		return res, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	res.took = time.Since(t0)
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("cleanup: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Removed       []json.RawMessage `json:"removed"`
		Skipped       []json.RawMessage `json:"skipped"`
		BuildsRemoved []json.RawMessage `json:"builds_removed"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return res, err
	}
	res.removed, res.skipped, res.buildsRemoved = len(out.Removed), len(out.Skipped), len(out.BuildsRemoved)
	for n, i := range fl.candidates {
		if _, err := os.Stat(keyOf(i).Dir(envsBase)); err == nil {
			res.kept++
			if n%10 != 0 {
				return res, fmt.Errorf("cleanup kept %s, idle and unused", keyOf(i))
			}
		} else if n%10 == 0 {
			return res, fmt.Errorf("cleanup removed %s, started on the storage a minute ago", keyOf(i))
		}
	}
	calls1, err := f.storageCalls(ctx)
	if err != nil {
		return res, err
	}
	res.storageCalls = calls1 - calls0
	fmt.Printf("  cleanup pass: %s, %d removed, %d kept (used on the storage), %d skipped, %d builds removed, %.0f storage metadata calls for %d candidates\n",
		res.took.Round(time.Millisecond), res.removed, res.kept, res.skipped, res.buildsRemoved, res.storageCalls, res.candidates)
	return res, nil
}

func (f *fabric) storageCalls(ctx context.Context) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.agentURL+"/metrics", nil)
	resp, err := f.agentAPI.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "envfabric_agent_usage_storage_calls_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("the agent's /metrics has no envfabric_agent_usage_storage_calls_total")
}

// bytesPerEnv is the database's size beyond the distinct lock contents (contents, the package
// index) per environment: every table and index of envs, revisions, operations, builds, leases.
func bytesPerEnv(ctx context.Context, db *sql.DB, d sqlstore.Dialect, root string) (float64, int, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM envs`).Scan(&n); err != nil {
		return 0, 0, err
	}
	var total int64
	if !d.Embedded() {
		err := db.QueryRowContext(ctx, `SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
			WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
				AND c.relname NOT IN ('contents', 'lock_packages', 'locks_indexed')`).Scan(&total)
		return float64(total) / float64(n), n, err
	}
	// SQLite: dbstat when compiled in, else the whole file.
	err := db.QueryRowContext(ctx, `SELECT sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name
		WHERE m.tbl_name NOT IN ('contents', 'lock_packages', 'locks_indexed')`).Scan(&total)
	if err != nil {
		fi, serr := os.Stat(filepath.Join(root, "controlplane", "fabric.db"))
		if serr != nil {
			return 0, n, err
		}
		total = fi.Size()
	}
	return float64(total) / float64(n), n, nil
}
