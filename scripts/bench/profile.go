package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/controlplane/agentclient"
	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
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
	// Perf is perf(1)'s view of the real control plane and agent during API runs.
	Perf string `json:"perf,omitempty"`
	// WhatIf compares the agent's Run RPC with and without response compression.
	WhatIf []Samples `json:"what_if,omitempty"`
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

func (a *timedAgent) Run(ctx context.Context, spec envs.RunSpec) (envs.RunResult, error) {
	start := time.Now()
	r, err := a.Agent.Run(ctx, spec)
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
	lease, err := st.AcquireLease(ctx, store.LeaseRequest{Key: key, Mode: store.LeaseChange, Holder: "bench",
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

// profiler runs trivial code through envs.Service in process, timing each phase.
type profiler struct {
	st  *sqlite.Store
	ts  *timedStore
	ta  *timedAgent
	svc *envs.Service
	key envid.Key
}

// newProfiler records k, an environment on main, in a fresh SQLite database beside the fabric's
// data and wires the control plane's lifecycle code to it and to main's agent.
func (b *bench) newProfiler(ctx context.Context, k envKey) (*profiler, error) {
	f := b.main
	key := envid.Key{WorkflowID: k.WF, NodeID: k.Node, VersionID: "v1"}
	st, err := sqlite.Open(ctx, filepath.Join(b.cfg.Workdir, "profile", "fabric.db"), nil)
	if err != nil {
		return nil, err
	}
	files, err := readProjectFiles(f.envDir(k))
	if err == nil {
		err = seedEnv(ctx, st, key, files, b.python, f.envDir(k))
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("seeding the profile database: %w", err)
	}
	p := &profiler{st: st, key: key, ts: &timedStore{Store: st}, ta: &timedAgent{Agent: agentclient.New(f.AgentURL, f.Token)}}
	p.reset()
	// The control plane's defaults (controlplane/config).
	p.svc = envs.New(p.ts, envs.One(p.ta), nil, envs.Options{Instance: "bench-profile", DefaultPython: "3.11",
		DefaultTimeout: 30 * time.Second, MaxTimeout: 600 * time.Second, MaxOutputBytes: 1 << 20,
		LeaseTTL: 30 * time.Second, OperationTimeout: 30 * time.Minute, IdleAfter: time.Hour, CleanupIdle: 72 * time.Hour},
		slog.New(slog.DiscardHandler))
	return p, nil
}

func (p *profiler) close() { p.st.Close() }

// reset drops the phase timings taken so far (after warm-up).
func (p *profiler) reset() {
	p.ts.mu.Lock()
	p.ts.calls = map[string]*Samples{}
	p.ts.mu.Unlock()
	p.ta.mu.Lock()
	p.ta.rpc, p.ta.runner = Samples{Name: phAgentRPC}, Samples{Name: phRunner}
	p.ta.mu.Unlock()
}

// run runs code in process and checks its output.
func (p *profiler) run(ctx context.Context, code, want string) error {
	r, err := p.svc.Run(ctx, envs.Caller{Actor: "bench"}, p.key, envs.RunRequest{Code: code, Timeout: 30 * time.Second})
	if err == nil && (r.ExitCode != 0 || string(r.Stdout) != want) {
		err = fmt.Errorf("in-process run: exit %d, stdout %q", r.ExitCode, r.Stdout)
	}
	return err
}

// phases returns the timings since the last reset, the in-process total first.
func (p *profiler) phases(total Samples) []Samples {
	total.Name = phServiceRun
	total.finish()
	p.ta.rpc.finish()
	p.ta.runner.finish()
	out := []Samples{total, p.ta.rpc, p.ta.runner}
	names := make([]string, 0, len(p.ts.calls))
	for n := range p.ts.calls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := p.ts.calls[n]
		s.finish()
		out = append(out, *s)
	}
	return out
}

// cpuProfile runs reps trivial runs in process under the CPU profiler and returns
// `go tool pprof -top`: where the control plane's own code spends CPU on a run.
func (b *bench) cpuProfile(ctx context.Context, p *profiler, reps int) (string, error) {
	profPath := filepath.Join(b.cfg.Workdir, "run-cpu.pprof")
	pf, err := os.Create(profPath)
	if err != nil {
		return "", err
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		pf.Close()
		return "", err
	}
	for i := 0; i < reps && err == nil; i++ {
		err = p.run(ctx, runCodes[0].Code, runCodes[0].Want)
	}
	pprof.StopCPUProfile()
	pf.Close()
	if err != nil {
		return "", err
	}
	top, perr := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", profPath).CombinedOutput()
	if perr != nil {
		b.log.Warn("go tool pprof failed; the report has no CPU top", "err", perr)
		return "", nil
	}
	return string(top), nil
}

// perfProfile samples the control plane and the agent (and the processes they start) with
// perf(1) while trivial runs go through the API one after another for d. It returns the share of
// samples by program and the top symbols; empty when perf is not installed or not permitted.
func (b *bench) perfProfile(ctx context.Context, k envKey, d time.Duration) (string, error) {
	if _, err := exec.LookPath("perf"); err != nil {
		b.log.Warn("perf is not installed; no system profile of the run path")
		return "", nil
	}
	f := b.main
	data := filepath.Join(b.cfg.Workdir, "run.perf.data")
	pids := fmt.Sprintf("%d,%d", f.cp.cmd.Process.Pid, f.agent.cmd.Process.Pid)
	rec := exec.CommandContext(ctx, "perf", "record", "--quiet", "-F", "997", "-g", "-p", pids, "-o", data,
		"--", "sleep", fmt.Sprint(d.Seconds()))
	var recOut strings.Builder
	rec.Stdout, rec.Stderr = &recOut, &recOut
	if err := rec.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- rec.Wait() }()
	runs := 0
	var runErr error
loop:
	for {
		select {
		case err := <-done:
			if err != nil {
				b.log.Warn("perf record failed; no system profile of the run path", "err", err, "output", recOut.String())
				return "", runErr
			}
			break loop
		default:
		}
		if _, err := f.run(ctx, k, runCodes[0].Code, runCodes[0].Want); err != nil && runErr == nil {
			runErr = err
		}
		runs++
	}
	if runErr != nil {
		return "", runErr
	}
	var out strings.Builder
	fmt.Fprintf(&out, "perf record -F 997 -g -p <controlplane>,<agent> for %s while %d trivial runs went through the API one after another.\n\n", d, runs)
	reports := []struct {
		title string
		args  []string
		lines int
	}{
		{"CPU samples by program (python = the code the agent started)", []string{"--sort", "comm"}, 10},
		{"control plane, top symbols (share of its own samples)", []string{"--comms", "controlplane", "--sort", "dso,sym", "--percentage", "relative"}, 20},
		{"agent, top symbols (share of its own samples)", []string{"--comms", "agent", "--sort", "dso,sym", "--percentage", "relative"}, 20},
	}
	for _, r := range reports {
		rep := exec.CommandContext(ctx, "perf", append([]string{"report", "-i", data, "--stdio", "--no-children", "-g", "none"}, r.args...)...)
		b, err := rep.Output()
		if err != nil {
			return "", fmt.Errorf("perf report: %w", err)
		}
		fmt.Fprintf(&out, "== %s\n", r.title)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" || n >= r.lines {
				continue
			}
			out.WriteString(line + "\n")
			n++
		}
		out.WriteString("\n")
	}
	return out.String(), nil
}

// Names of the compression what-if.
const (
	wiGzip     = "agent Run RPC, client accepts gzip (the control plane today)"
	wiIdentity = "agent Run RPC, client accepts no compression"
)

// compressionWhatIf times the agent's Run RPC called the way the control plane calls it (a
// Connect client accepts gzip by default, and the agent, with no size threshold, then compresses
// every answer) against a client that accepts no compression: what a compression threshold on
// the agent would save per run. Interleaved, reps each.
func (b *bench) compressionWhatIf(ctx context.Context, k envKey, reps int) ([]Samples, error) {
	f := b.main
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}}
	auth := connect.WithInterceptors(agentauth.ClientInterceptor(f.Token))
	clients := []agentv1connect.AgentServiceClient{
		agentv1connect.NewAgentServiceClient(hc, f.AgentURL, auth),
		agentv1connect.NewAgentServiceClient(hc, f.AgentURL, auth, connect.WithAcceptCompression("gzip", nil, nil)),
	}
	out := []Samples{{Name: wiGzip}, {Name: wiIdentity}}
	req := &agentv1.RunRequest{Env: &agentv1.EnvRef{WorkflowId: k.WF, NodeId: k.Node, VersionId: "v1"},
		Code: runCodes[0].Code, TimeoutMs: 30000, MaxOutputBytes: 1 << 20}
	for i := 0; i < reps+3; i++ {
		for j := range clients {
			m := (i + j) % len(clients)
			start := time.Now()
			resp, err := clients[m].Run(ctx, connect.NewRequest(req))
			d := time.Since(start)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", out[m].Name, err)
			}
			if got := string(resp.Msg.GetStdout()); got != runCodes[0].Want {
				return nil, fmt.Errorf("%s: printed %q", out[m].Name, got)
			}
			if i >= 3 { // the first rounds warm connections up
				out[m].add(d)
			}
		}
	}
	for i := range out {
		out[i].finish()
	}
	return out, nil
}
