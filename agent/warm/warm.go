// Package warm keeps warm interpreters: per build, python processes started in the run sandbox
// (same tier, user, filter and limits as a cold run) that have imported the build's modules once
// and fork one child per run. A child becomes `python main.py` in a fresh work directory and
// cgroup of its own, so a run costs a fork instead of an interpreter start and its imports. A
// cold run (agent/runner) stays the fallback and answers identically. See docs/sandbox.md, "Warm
// runs".
package warm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
)

// startBackoff is how long a build whose parent failed to start runs cold before another try.
const startBackoff = 30 * time.Second

// Start modes: when a build's first parent starts.
const (
	// StartFirstRun: at the build's first run, which goes cold meanwhile.
	StartFirstRun = "first-run"
	// StartCreate: when an environment is switched to the build (Switch), too.
	StartCreate = "create"
)

// Config is the pool's settings (agent/config fills it).
type Config struct {
	// Sandbox is every run's isolation; the parents run under it.
	Sandbox sandbox.Config
	// ParentsPerBuild bounds the parents of one build (one run at a time each); 0: the CPUs.
	ParentsPerBuild int
	// MaxRuns recycles a parent after that many runs; TTL after that long; MaxGrowth when its
	// memory exceeds that multiple of its size after preloading (0 turns each off).
	MaxRuns   int
	TTL       time.Duration
	MaxGrowth float64
	// MemoryBytes bounds the memory of all parents: above it the least recently used build's
	// parents go. 0 disables warm runs.
	MemoryBytes int64
	// Start is StartFirstRun or StartCreate.
	Start string
	// WaitFree is how long a run waits for a busy parent of its build before it goes cold.
	WaitFree time.Duration
	// ReadyTimeout bounds a parent's start (preloading) and a child's first message.
	ReadyTimeout time.Duration
	// RunsDir holds each parent's runs directory (default os.TempDir()).
	RunsDir string
	Logger  *slog.Logger
}

// Build is what a run needs of its build.
type Build struct {
	// ID keys the pool: a changed build is another ID, so another parent.
	ID   string
	Venv string
	// Preload names more modules to import (the environment's preload list).
	Preload []string
	// Hold keeps the build from being removed while a parent uses it (nil: nothing to hold).
	Hold func(context.Context) (func(), error)
}

// Pool is the agent's warm interpreters. Close stops them all.
type Pool struct {
	cfg     Config
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	metrics *metrics

	mu     sync.Mutex
	closed bool
	builds map[string]*build
}

// build is one build's parents and what its runs imported.
type build struct {
	spec Build
	idle []*parent
	busy int
	// finishing counts the busy parents whose run has answered: they clean up and arm their next
	// child, and are free in milliseconds, so a run waits for one rather than start a parent.
	finishing int
	live      map[*parent]bool // idle and busy
	// failed is when a parent last failed to start: the build's runs stay cold, without a new
	// attempt each, for startBackoff.
	failed   time.Time
	starting int
	lastUsed time.Time
	modules  map[string]time.Time
	freed    chan struct{} // closed (and replaced) when a parent becomes idle or goes
}

// New makes a pool; nothing starts until a run or Prestart asks.
func New(cfg Config) *Pool {
	if cfg.ParentsPerBuild <= 0 {
		cfg.ParentsPerBuild = runtime.NumCPU()
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = time.Minute
	}
	if cfg.RunsDir == "" {
		cfg.RunsDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel, builds: map[string]*build{}, metrics: newMetrics()}
	p.wg.Go(p.janitor)
	return p
}

// janitorEvery is how often idle parents are looked at for their age and death, and forgotten
// builds dropped, between runs.
const janitorEvery = 30 * time.Second

// janitor retires idle parents that expired (WARM_TTL, died) without a run to notice, and forgets
// builds that have had no parent and no run for a while (what their runs imported goes too).
func (p *Pool) janitor() {
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		for id, bs := range p.builds {
			kept := bs.idle[:0]
			for _, par := range bs.idle {
				if reason := p.expired(par, false); reason != "" {
					p.retireLocked(par, reason)
					if reason == "dead" && time.Since(bs.failed) > startBackoff {
						p.startLocked(bs) // replaced; an idle one only expires
					}
					continue
				}
				kept = append(kept, par)
			}
			bs.idle = kept
			if len(bs.live) == 0 && bs.starting == 0 && time.Since(bs.lastUsed) > time.Hour {
				delete(p.builds, id)
			}
		}
		p.mu.Unlock()
	}
}

// Enabled reports whether runs may be warm: a memory budget, and a sandbox whose runs have a PID
// namespace (what a run leaves is found and killed inside it).
func (p *Pool) Enabled() bool {
	return p != nil && p.cfg.MemoryBytes > 0 && p.cfg.Sandbox.Warm()
}

// StartsAtCreate reports whether Switch should prestart the build's parent.
func (p *Pool) StartsAtCreate() bool { return p.Enabled() && p.cfg.Start == StartCreate }

// Run runs spec in a child of one of b's parents. warm=false (and no error) means the run must go
// cold: no parent was free (one is being started), or the parent failed before the code started.
// After the code started, every outcome is a Result, as a cold run's.
func (p *Pool) Run(ctx context.Context, b Build, spec runner.Spec) (res runner.Result, warm bool, err error) {
	if !p.Enabled() {
		return runner.Result{}, false, nil
	}
	par := p.lease(ctx, b)
	if par == nil {
		p.metrics.runs.WithLabelValues("miss").Inc()
		return runner.Result{}, false, nil
	}
	p.metrics.forks.Inc()
	res, mods, finish, err := par.run(ctx, spec)
	if errors.Is(err, errNotStarted) {
		p.log.WarnContext(ctx, "warm run could not start; running cold", "build", b.ID, "err", err)
		p.mu.Lock()
		par.b.finishing++ // giveBack counts it off
		p.mu.Unlock()
		p.giveBack(par, nil, "dead")
		p.metrics.runs.WithLabelValues("miss").Inc()
		return runner.Result{}, false, nil
	}
	// The parent serves again once what the run left is gone; the answer does not wait for that.
	p.mu.Lock()
	par.b.finishing++
	p.mu.Unlock()
	p.wg.Go(func() {
		reason := ""
		if !finish() {
			reason = "dead"
		}
		p.giveBack(par, mods, reason)
	})
	p.metrics.runs.WithLabelValues("hit").Inc()
	return res, true, err
}

// Prestart starts a parent for b if it has none, and waits until one is ready.
func (p *Pool) Prestart(ctx context.Context, b Build) error {
	if !p.Enabled() {
		return nil
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return errors.New("warm pool closed")
		}
		bs := p.buildLocked(b)
		bs.lastUsed = time.Now()
		if len(bs.idle) > 0 {
			p.mu.Unlock()
			return nil
		}
		if len(bs.live) == 0 && bs.starting == 0 {
			p.startLocked(bs)
		}
		freed := bs.freed
		p.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
		failed := len(bs.live) == 0 && bs.starting == 0
		p.mu.Unlock()
		if failed {
			return fmt.Errorf("warm interpreter for build %s failed to start (see the agent's log)", b.ID)
		}
	}
}

// Warmup starts a parent for b in the background if it has none (WARM_START=create).
func (p *Pool) Warmup(b Build) {
	if !p.Enabled() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	bs := p.buildLocked(b)
	bs.lastUsed = time.Now()
	if len(bs.idle)+bs.busy+bs.starting == 0 {
		p.startLocked(bs)
	}
}

// Drop stops every parent of build id (the build is removed or damaged). Busy ones stop when
// their run ends.
func (p *Pool) Drop(id string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	bs := p.builds[id]
	if bs == nil {
		p.mu.Unlock()
		return
	}
	delete(p.builds, id)
	idle := bs.idle
	bs.idle = nil
	p.mu.Unlock()
	for _, par := range idle {
		p.metrics.evictions.WithLabelValues("removed").Inc()
		par.stop()
	}
}

// Close stops every parent and waits for them.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	var all []*parent
	for id, bs := range p.builds {
		all = append(all, bs.idle...)
		bs.idle = nil
		delete(p.builds, id)
	}
	p.mu.Unlock()
	p.cancel()
	for _, par := range all {
		par.stop()
	}
	p.wg.Wait()
}

// Memory is what the parents take now (the sum of their proportional set sizes).
func (p *Pool) Memory() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.memoryLocked()
}

func (p *Pool) memoryLocked() int64 {
	var n int64
	for _, bs := range p.builds {
		for par := range bs.live {
			n += int64(par.memory())
		}
	}
	return n
}

// Parents is how many parents are ready (idle or serving a run).
func (p *Pool) Parents() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, bs := range p.builds {
		n += len(bs.live)
	}
	return n
}

func (p *Pool) buildLocked(b Build) *build {
	bs := p.builds[b.ID]
	if bs == nil {
		bs = &build{spec: b, modules: map[string]time.Time{}, live: map[*parent]bool{}, freed: make(chan struct{})}
		p.builds[b.ID] = bs
	}
	if b.Preload != nil {
		bs.spec.Preload = b.Preload
	}
	if b.Hold != nil {
		bs.spec.Hold = b.Hold
	}
	return bs
}

func (bs *build) wake() {
	close(bs.freed)
	bs.freed = make(chan struct{})
}

// finishingWait bounds how long a run waits for a parent that answered its last run and is
// cleaning up after it.
const finishingWait = 2 * time.Second

// lease takes an idle parent of b, waiting up to WaitFree when every parent is busy; nil when
// the run must go cold. A build with no parent yet gets one started.
func (p *Pool) lease(ctx context.Context, b Build) *parent {
	deadline := time.Now().Add(p.cfg.WaitFree)
	finishingDeadline := time.Now().Add(finishingWait)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil
		}
		bs := p.buildLocked(b)
		bs.lastUsed = time.Now()
		for len(bs.idle) > 0 {
			par := bs.idle[len(bs.idle)-1]
			bs.idle = bs.idle[:len(bs.idle)-1]
			if reason := p.expired(par, false); reason != "" {
				p.retireLocked(par, reason)
				continue
			}
			bs.busy++
			p.mu.Unlock()
			return par
		}
		if bs.finishing == 0 && bs.busy+bs.starting < p.cfg.ParentsPerBuild && time.Since(bs.failed) > startBackoff {
			p.startLocked(bs)
		}
		// Only a build whose parents are all busy waits: the first run of a build goes cold. A
		// parent that has answered its run is free in milliseconds (it cleans up and arms its
		// next child): that is worth waiting for, whatever WaitFree says.
		wait := time.Until(deadline)
		if bs.finishing > 0 {
			wait = max(wait, time.Until(finishingDeadline))
		}
		if bs.busy == 0 || wait <= 0 {
			p.mu.Unlock()
			return nil
		}
		freed := bs.freed
		p.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-freed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// expired says why an idle parent must go ("" if it may serve). Its memory (a walk of its page
// tables) is looked at after a run, off the next run's path.
func (p *Pool) expired(par *parent, memory bool) string {
	switch {
	case !par.alive():
		return "dead"
	case p.cfg.MaxRuns > 0 && par.runs >= p.cfg.MaxRuns:
		return "runs"
	case p.cfg.TTL > 0 && time.Since(par.started) > p.cfg.TTL:
		return "ttl"
	case memory && p.cfg.MaxGrowth > 0 && par.baseMem > 0 && float64(par.memory()) > p.cfg.MaxGrowth*float64(par.baseMem):
		return "growth"
	}
	return ""
}

// giveBack returns a parent after a run: idle again, or stopped (and replaced) when it died or
// must be recycled.
func (p *Pool) giveBack(par *parent, mods []string, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	bs := par.b
	bs.busy--
	bs.finishing--
	par.runs++
	now := time.Now()
	// A child reports only what it imported beyond its parent; what the parent preloaded because
	// earlier runs imported it stays remembered while the parent serves.
	for _, m := range par.preload {
		if _, ok := bs.modules[m]; ok {
			bs.modules[m] = now
		}
	}
	for _, m := range mods {
		bs.modules[m] = now
	}
	// Remember the most recently imported names only.
	if len(bs.modules) > 256 {
		type seen struct {
			name string
			at   time.Time
		}
		var all []seen
		for n, at := range bs.modules {
			all = append(all, seen{n, at})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].at.After(all[j].at) })
		for _, s := range all[256:] {
			delete(bs.modules, s.name)
		}
	}
	if reason == "" {
		reason = p.expired(par, true)
	}
	current := p.builds[bs.spec.ID] == bs
	if reason != "" || !current || p.closed {
		if reason == "" {
			reason = "removed"
		}
		p.retireLocked(par, reason)
		// A dead or recycled parent is replaced at once; a removed build's is not.
		if current && !p.closed && reason != "removed" {
			p.startLocked(bs)
		}
	} else {
		bs.idle = append(bs.idle, par)
		p.evictLocked(nil)
	}
	bs.wake()
}

// retireLocked stops a parent in the background and counts why.
func (p *Pool) retireLocked(par *parent, reason string) {
	delete(par.b.live, par)
	p.metrics.evictions.WithLabelValues(reason).Inc()
	p.wg.Go(par.stop)
}

// startLocked starts a parent for bs in the background.
func (p *Pool) startLocked(bs *build) {
	bs.starting++
	preload := p.preloadLocked(bs)
	p.wg.Go(func() {
		par, err := startParent(p.ctx, &p.cfg, bs, preload, p.log)
		p.mu.Lock()
		defer p.mu.Unlock()
		bs.starting--
		defer bs.wake()
		if err != nil {
			if p.ctx.Err() == nil {
				bs.failed = time.Now()
				p.log.Warn("warm interpreter failed to start; runs of the build stay cold for a while", "build", bs.spec.ID, "err", err, "retry_after", startBackoff)
			}
			return
		}
		if p.closed || p.builds[bs.spec.ID] != bs {
			p.wg.Go(par.stop)
			return
		}
		bs.live[par] = true
		bs.idle = append(bs.idle, par)
		p.evictLocked(par)
	})
}

// preloadLocked is what a new parent of bs imports: the build's direct dependencies' top-level
// modules, what recent runs imported, and the environment's preload list.
func (p *Pool) preloadLocked(bs *build) []string {
	names := directModules(bs.spec.Venv)
	recent := make([]string, 0, len(bs.modules))
	for m := range bs.modules {
		recent = append(recent, m)
	}
	sort.Strings(recent)
	names = append(names, recent...)
	for _, m := range bs.spec.Preload {
		if identifier.MatchString(m) {
			names = append(names, m)
		}
	}
	out := names[:0]
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// evictLocked stops idle parents, least recently used build first, while the pool takes more
// than its memory budget. A parent that just started (keep) is spared: busy parents are
// evicted when they come back.
func (p *Pool) evictLocked(keep *parent) {
	total := p.memoryLocked()
	if total <= p.cfg.MemoryBytes {
		return
	}
	var order []*build
	for _, bs := range p.builds {
		order = append(order, bs)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].lastUsed.Before(order[j].lastUsed) })
	for _, bs := range order {
		kept := bs.idle[:0]
		for _, par := range bs.idle {
			if total <= p.cfg.MemoryBytes || par == keep {
				kept = append(kept, par)
				continue
			}
			total -= int64(par.memory())
			p.log.Info("warm interpreter evicted: pool over its memory budget", "build", bs.spec.ID, "budget_bytes", p.cfg.MemoryBytes)
			p.retireLocked(par, "memory")
		}
		bs.idle = kept
	}
}

// directModules are the top-level modules of the build's direct dependencies, from its
// pyproject.toml and the installed metadata (top_level.txt, else RECORD).
func directModules(venv string) []string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(venv), "pyproject.toml"))
	if err != nil {
		return nil
	}
	var pp struct {
		Project struct {
			Dependencies []string `toml:"dependencies"`
		} `toml:"project"`
	}
	if err := toml.Unmarshal(b, &pp); err != nil {
		return nil
	}
	want := map[string]bool{}
	for _, d := range pp.Project.Dependencies {
		want[normalise(requirementName(d))] = true
	}
	infos, _ := filepath.Glob(filepath.Join(venv, "lib", "python3*", "site-packages", "*.dist-info"))
	var out []string
	for _, info := range infos {
		name, _, _ := strings.Cut(strings.TrimSuffix(filepath.Base(info), ".dist-info"), "-")
		if !want[normalise(name)] {
			continue
		}
		out = append(out, topLevel(info)...)
	}
	sort.Strings(out)
	return out
}

func requirementName(req string) string {
	end := strings.IndexAny(req, " ;[<>=!~@(")
	if end < 0 {
		return strings.TrimSpace(req)
	}
	return strings.TrimSpace(req[:end])
}

func normalise(name string) string {
	return strings.ToLower(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// topLevel reads a distribution's top-level module names.
func topLevel(info string) []string {
	var out []string
	add := func(n string) {
		if identifier.MatchString(n) && !strings.HasPrefix(n, "_") && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if b, err := os.ReadFile(filepath.Join(info, "top_level.txt")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			add(l)
		}
		return out
	}
	b, err := os.ReadFile(filepath.Join(info, "RECORD"))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		path, _, _ := strings.Cut(line, ",")
		first, rest, nested := strings.Cut(path, "/")
		switch {
		case strings.HasSuffix(first, ".dist-info") || strings.HasSuffix(first, ".data") || first == ".." || first == "":
		case nested && strings.HasSuffix(rest, ".py"):
			add(first)
		case !nested && strings.HasSuffix(first, ".py"):
			add(strings.TrimSuffix(first, ".py"))
		}
	}
	return out
}

// metrics are the pool's Prometheus series (Collectors registers them).
type metrics struct {
	runs      *prometheus.CounterVec
	forks     prometheus.Counter
	evictions *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_agent_warm_runs_total", Help: "Runs with a build that asked for a warm interpreter: hit (forked from one) or miss (ran cold).",
		}, []string{"result"}),
		forks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "envfabric_agent_warm_forks_total", Help: "Children forked from warm interpreters.",
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_agent_warm_evictions_total", Help: "Warm interpreters stopped, by reason: runs, ttl, growth, memory, dead, removed.",
		}, []string{"reason"}),
	}
}

// Collectors are the pool's metrics, for the agent's registry.
func (p *Pool) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		p.metrics.runs, p.metrics.forks, p.metrics.evictions,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "envfabric_agent_warm_memory_bytes", Help: "Memory of the warm interpreters (sum of their proportional set sizes).",
		}, func() float64 { return float64(p.Memory()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "envfabric_agent_warm_parents", Help: "Warm interpreters ready (idle or serving a run).",
		}, func() float64 { return float64(p.Parents()) }),
	}
}
