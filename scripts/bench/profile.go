package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/envfabric/envfabric/controlplane/agentclient"
	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/shared/envid"
)

// RunProfile breaks a trivial run down into its phases. The control plane has no profiling
// endpoint, so the bench runs the control plane's own lifecycle code (envs.Service) in process,
// against the real SQLite store and the real agent, with every store call and the agent RPC timed.
// The rest of the API's time is HTTP, routing and JSON.
type RunProfile struct {
	Phases []Samples `json:"phases"`
	// CPUTop is `go tool pprof -top` of the in-process runs: where the control plane's CPU goes.
	CPUTop string `json:"cpu_top"`
}

// Phase names.
const (
	phServiceRun = "envs.Service.Run, in process (no HTTP)"
	phAgentRPC   = "agent Run RPC (Connect, incl. python)"
	phRunner     = "python inside the agent (runner, ms resolution)"
)

// timedStore records the duration of every store call, by method.
type timedStore struct {
	store.Store
	mu    sync.Mutex
	calls map[string]*Samples
}

func (t *timedStore) rec(name string, start time.Time) {
	d := time.Since(start)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.calls[name]
	if s == nil {
		s = &Samples{Name: "store." + name}
		t.calls[name] = s
	}
	s.add(d)
}

func (t *timedStore) GetEnv(ctx context.Context, k envid.Key) (store.Env, error) {
	defer t.rec("GetEnv", time.Now())
	return t.Store.GetEnv(ctx, k)
}

func (t *timedStore) BeginOperation(ctx context.Context, op store.Operation) (int64, error) {
	defer t.rec("BeginOperation", time.Now())
	return t.Store.BeginOperation(ctx, op)
}

func (t *timedStore) FinishOperation(ctx context.Context, id int64, out store.Outcome) error {
	defer t.rec("FinishOperation", time.Now())
	return t.Store.FinishOperation(ctx, id, out)
}

func (t *timedStore) AcquireLease(ctx context.Context, req store.LeaseRequest) (store.Lease, error) {
	defer t.rec("AcquireLease", time.Now())
	return t.Store.AcquireLease(ctx, req)
}

func (t *timedStore) ReleaseLease(ctx context.Context, id string) error {
	defer t.rec("ReleaseLease", time.Now())
	return t.Store.ReleaseLease(ctx, id)
}

func (t *timedStore) Touch(ctx context.Context, k envid.Key, at time.Time) error {
	defer t.rec("Touch", time.Now())
	return t.Store.Touch(ctx, k, at)
}

// timedAgent records the Run RPC and the python time the agent reports.
type timedAgent struct {
	envs.Agent
	mu          sync.Mutex
	rpc, runner Samples
}

func (a *timedAgent) Run(ctx context.Context, key envid.Key, code string, timeout time.Duration, maxOutput int64) (envs.RunResult, error) {
	start := time.Now()
	r, err := a.Agent.Run(ctx, key, code, timeout, maxOutput)
	d := time.Since(start)
	a.mu.Lock()
	a.rpc.add(d)
	a.runner.add(r.Duration)
	a.mu.Unlock()
	return r, err
}

// seedEnv records an existing environment in st as the control plane would after a create.
func seedEnv(ctx context.Context, st store.Store, key envid.Key, files envs.Files, python, envPath string) error {
	now := time.Now()
	lease, err := st.AcquireLease(ctx, store.LeaseRequest{Key: key, Exclusive: true, Holder: "bench",
		Operation: "create", TTL: time.Minute, Now: now})
	if err != nil {
		return err
	}
	if err := st.CreateEnv(ctx, store.Env{Key: key, State: store.StateCreating, PythonVersion: "3.11",
		CreatedAt: now, UpdatedAt: now, LastUsedAt: now}, now); err != nil {
		return err
	}
	if _, err := st.CommitRevision(ctx, store.Commit{Key: key, LeaseID: lease.ID, Now: now,
		PyprojectTOML: files.PyprojectTOML, UvLock: files.UvLock, OperationID: 1, State: store.StateActive,
		PythonVersion: "3.11", PythonPath: python, EnvPath: envPath}); err != nil {
		return err
	}
	return st.ReleaseLease(ctx, lease.ID)
}

func readProjectFiles(dir string) (envs.Files, error) {
	py, err := os.ReadFile(filepath.Join(dir, "pyproject.toml"))
	if err != nil {
		return envs.Files{}, err
	}
	lock, err := os.ReadFile(filepath.Join(dir, "uv.lock"))
	if err != nil {
		return envs.Files{}, err
	}
	return envs.Files{PyprojectTOML: string(py), UvLock: string(lock)}, nil
}

// profileRun times the phases of trivial runs on k.
func (b *bench) profileRun(ctx context.Context, k envKey) error {
	f := b.main
	key := envid.Key{WorkflowID: k.WF, NodeID: k.Node, VersionID: "v1"}
	dbDir := filepath.Join(b.cfg.Workdir, "profile")
	st, err := sqlite.Open(ctx, filepath.Join(dbDir, "fabric.db"), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	files, err := readProjectFiles(f.envDir(k))
	if err != nil {
		return err
	}
	if err := seedEnv(ctx, st, key, files, b.python, f.envDir(k)); err != nil {
		return fmt.Errorf("seeding the profile database: %w", err)
	}
	ts := &timedStore{Store: st, calls: map[string]*Samples{}}
	ta := &timedAgent{Agent: agentclient.New(f.AgentURL, f.Token)}
	// The control plane's defaults (controlplane/config).
	svc := envs.New(ts, ta, nil, envs.Options{Instance: "bench-profile", DefaultPython: "3.11",
		DefaultTimeout: 30 * time.Second, MaxTimeout: 600 * time.Second, MaxOutputBytes: 1 << 20,
		LeaseTTL: 30 * time.Second, OperationTimeout: 30 * time.Minute, IdleAfter: time.Hour, CleanupIdle: 72 * time.Hour},
		slog.New(slog.DiscardHandler))
	req := envs.RunRequest{Code: runCodes[0].Code, Timeout: 30 * time.Second}
	once := func() error {
		r, err := svc.Run(ctx, envs.Caller{Actor: "bench"}, key, req)
		if err == nil && r.Stdout != runCodes[0].Want {
			err = fmt.Errorf("in-process run printed %q", r.Stdout)
		}
		return err
	}
	for i := 0; i < 5; i++ {
		if err := once(); err != nil {
			return err
		}
	}
	ts.calls = map[string]*Samples{}
	ta.rpc, ta.runner = Samples{Name: phAgentRPC}, Samples{Name: phRunner}

	profPath := filepath.Join(b.cfg.Workdir, "run-cpu.pprof")
	pf, err := os.Create(profPath)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		pf.Close()
		return err
	}
	total := Samples{Name: phServiceRun}
	for i := 0; i < b.cfg.ProfileReps; i++ {
		d, err := timed(once)
		if err != nil {
			pprof.StopCPUProfile()
			pf.Close()
			return err
		}
		total.add(d)
	}
	pprof.StopCPUProfile()
	pf.Close()

	prof := &RunProfile{}
	total.finish()
	ta.rpc.finish()
	ta.runner.finish()
	prof.Phases = append(prof.Phases, total, ta.rpc, ta.runner)
	names := make([]string, 0, len(ts.calls))
	for n := range ts.calls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := ts.calls[n]
		s.finish()
		prof.Phases = append(prof.Phases, *s)
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", profPath).CombinedOutput()
	if err != nil {
		b.log.Warn("go tool pprof failed; the profile table has no CPU top", "err", err)
	}
	prof.CPUTop = string(top)
	b.res.RunProfile = prof
	return nil
}
