package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/shared/envid"
)

// ReadResults is the read path under load with ReadEnvs environments recorded.
type ReadResults struct {
	Envs        int          `json:"envs"`
	SeedSeconds float64      `json:"seed_seconds"`
	Endpoints   []LoadResult `json:"endpoints"`
}

// readSection stops main's control plane, records ReadEnvs environments in its SQLite database
// through the store package (with the project files of a real numpy+pandas environment, so deps
// and export parse a real lock), starts it again and loads the read endpoints.
func (b *bench) readSection(ctx context.Context) error {
	if err := b.ensureNumpyEnvs(ctx, 1); err != nil {
		return err
	}
	f := b.main
	files, err := readProjectFiles(f.envDir(b.npEnvs[0]))
	if err != nil {
		return err
	}
	if err := f.StopControlPlane(); err != nil {
		return fmt.Errorf("stopping the control plane: %w", err)
	}
	// 100 workflows of 100 nodes (fewer in quick mode): the list endpoint filters by workflow.
	const perWorkflow = 100
	workflows := (b.cfg.ReadEnvs + perWorkflow - 1) / perWorkflow
	keyOf := func(i int) envKey {
		return envKey{fmt.Sprintf("bench-read-%03d", i/perWorkflow), fmt.Sprintf("node-%03d", i%perWorkflow)}
	}
	t := time.Now()
	st, err := sqlite.Open(ctx, f.SQLitePath(), nil)
	if err != nil {
		return err
	}
	for i := 0; i < b.cfg.ReadEnvs; i++ {
		k := keyOf(i)
		key := envid.Key{WorkflowID: k.WF, NodeID: k.Node, VersionID: "v1"}
		if err := seedEnv(ctx, st, key, files, b.python, f.envDir(k)); err != nil {
			st.Close()
			return fmt.Errorf("recording environment %d: %w", i, err)
		}
	}
	if err := st.Close(); err != nil {
		return err
	}
	res := &ReadResults{Envs: b.cfg.ReadEnvs, SeedSeconds: time.Since(t).Seconds()}
	b.res.Read = res
	b.log.Info("recorded environments", "n", b.cfg.ReadEnvs, "seconds", res.SeedSeconds)
	if err := f.StartControlPlane(ctx); err != nil {
		return err
	}

	// Each client draws keys from its own generator: no shared lock in the load generator.
	rngs := make([]*rand.Rand, b.cfg.ReadClients)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(uint64(i), 42))
	}
	endpoints := []struct {
		name string
		path func(r *rand.Rand) string
	}{
		{"GET /envs/{wf}/{node}/deps", func(r *rand.Rand) string { return keyOf(r.IntN(b.cfg.ReadEnvs)).path() + "/deps" }},
		{"GET /envs/{wf}/{node}/export", func(r *rand.Rand) string { return keyOf(r.IntN(b.cfg.ReadEnvs)).path() + "/export" }},
		{"GET /envs (first page, 50)", func(r *rand.Rand) string { return "/envs" }},
		{"GET /envs?workflow_id= (50 of 100)", func(r *rand.Rand) string {
			return fmt.Sprintf("/envs?workflow_id=bench-read-%03d", r.IntN(workflows))
		}},
	}
	for _, e := range endpoints {
		// A short warm-up so the first connections and page cache do not land in the figures.
		load(ctx, f, e.name, b.cfg.ReadClients, 500*time.Millisecond, func(c, i int) (string, string, string, int, func([]byte) error) {
			return http.MethodGet, e.path(rngs[c]), "", http.StatusOK, nil
		})
		r := load(ctx, f, e.name, b.cfg.ReadClients, b.cfg.ReadDuration, func(c, i int) (string, string, string, int, func([]byte) error) {
			return http.MethodGet, e.path(rngs[c]), "", http.StatusOK, nil
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.Endpoints = append(res.Endpoints, r)
		b.log.Info("read load", "endpoint", e.name, "rps", fmt.Sprintf("%.0f", r.RPS), "p99_ms", r.Latency.P99, "errors", r.Errors)
	}
	return nil
}
