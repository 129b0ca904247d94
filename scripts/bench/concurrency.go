package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ConcResults is the concurrency section.
type ConcResults struct {
	Envs int          `json:"envs"`
	Runs []LoadResult `json:"runs"` // one per client count
	// Imports are runs of the import case (numpy, pandas and a DataFrame operation) per client
	// count, served warm (the default) and with "warm": false; WarmHits counts the warm answers.
	Imports     []LoadResult `json:"imports"`
	ColdImports []LoadResult `json:"cold_imports"`
	WarmHits    []int64      `json:"warm_hits"` // per Imports entry
	// Creates is ConcCreates numpy+pandas creates started at once.
	Creates struct {
		N          int      `json:"n"`
		WallMS     float64  `json:"wall_ms"`
		Errors     int      `json:"errors"`
		ErrorNotes []string `json:"error_examples,omitempty"`
		Latency    Samples  `json:"latency"`
	} `json:"creates"`
}

// concurrencySection measures trivial runs spread over ConcEnvs environments with 1..32 clients,
// then ConcCreates creates at once.
func (b *bench) concurrencySection(ctx context.Context) error {
	if err := b.ensureNumpyEnvs(ctx, b.cfg.ConcEnvs); err != nil {
		return err
	}
	res := &ConcResults{Envs: b.cfg.ConcEnvs}
	b.res.Concurrency = res
	body, _ := json.Marshal(map[string]any{"code": runCodes[0].Code, "timeout": 60})
	checkRun := checkRunAnswer(runCodes[0].Want, nil)
	envsUsed := b.npEnvs[:b.cfg.ConcEnvs]
	for _, c := range b.cfg.ConcClients {
		r := load(ctx, b.main, "POST /run (trivial)", c, b.cfg.ConcDuration, func(client, i int) (string, string, string, int, func([]byte) error) {
			k := envsUsed[(client+i*c)%len(envsUsed)]
			return http.MethodPost, k.path() + "/run", string(body), http.StatusOK, checkRun
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.Runs = append(res.Runs, r)
		b.log.Info("concurrent runs", "clients", c, "rps", fmt.Sprintf("%.1f", r.RPS), "p99_ms", r.Latency.P99, "errors", r.Errors)
	}

	// The import case, warm then cold, at the same client counts (cold only at some: each costs
	// the interpreter's whole start).
	imp := runCodes[1]
	for _, cold := range []bool{false, true} {
		req := map[string]any{"code": imp.Code, "timeout": 120}
		name := "POST /run (import, warm)"
		if cold {
			req["warm"], name = false, "POST /run (import, cold)"
		}
		body, _ := json.Marshal(req)
		for _, c := range b.cfg.ConcClients {
			if cold && c != 1 && c != 8 && c != 32 && !b.cfg.Quick {
				continue
			}
			var hits atomic.Int64
			check := checkRunAnswer(imp.Want, &hits)
			r := load(ctx, b.main, name, c, b.cfg.ConcDuration, func(client, i int) (string, string, string, int, func([]byte) error) {
				k := envsUsed[(client+i*c)%len(envsUsed)]
				return http.MethodPost, k.path() + "/run", string(body), http.StatusOK, check
			})
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if cold {
				res.ColdImports = append(res.ColdImports, r)
			} else {
				res.Imports = append(res.Imports, r)
				res.WarmHits = append(res.WarmHits, hits.Load())
			}
			b.log.Info("concurrent import runs", "cold", cold, "clients", c, "rps", fmt.Sprintf("%.1f", r.RPS), "p50_ms", r.Latency.Median, "p99_ms", r.Latency.P99,
				"errors", r.Errors, "warm", hits.Load())
		}
	}

	cr := &res.Creates
	cr.N = b.cfg.ConcCreates
	cr.Latency.Name = "concurrent create"
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	gate := make(chan struct{})
	for i := 0; i < cr.N; i++ {
		k := envKey{"bench-conc-create", fmt.Sprintf("env-%d", i)}
		wg.Go(func() {
			<-gate
			d, err := timed(func() error { return b.main.create(ctx, k, packageSets[0].Packages) })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				cr.Errors++
				if len(cr.ErrorNotes) < 5 {
					cr.ErrorNotes = append(cr.ErrorNotes, err.Error())
				}
				return
			}
			cr.Latency.add(d)
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	cr.WallMS = ms(time.Since(start))
	cr.Latency.finish()
	b.log.Info("concurrent creates", "n", cr.N, "wall_ms", cr.WallMS, "errors", cr.Errors)
	return ctx.Err()
}

// checkRunAnswer checks a run's answer for exit code 0 and want on stdout; warm, when set, counts
// the answers served warm.
func checkRunAnswer(want string, warm *atomic.Int64) func([]byte) error {
	return func(raw []byte) error {
		var r runResult
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		if r.ExitCode != 0 || r.Stdout != want {
			return fmt.Errorf("exit %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
		}
		if warm != nil && r.Warm {
			warm.Add(1)
		}
		return nil
	}
}
