package config

import (
	"runtime"
	"time"

	"github.com/envfabric/envfabric/shared/config"
)

// Warm is the WARM_* block: the warm interpreters of agent/warm (docs/sandbox.md, "Warm runs").
type Warm struct {
	// MemoryBytes is WARM_MEMORY_BYTES, the pool's memory budget (default 2 GiB); 0 disables warm
	// runs, so every run is cold.
	MemoryBytes int64
	// ParentsPerBuild is WARM_PARENTS_PER_BUILD (default: the CPUs): one run at a time each.
	ParentsPerBuild int
	// MaxRuns (WARM_MAX_RUNS, 100), TTL (WARM_TTL, 10m) and MaxGrowth (WARM_MAX_GROWTH, 2: a
	// multiple of its size after preloading) recycle a warm interpreter; 0 turns each off.
	MaxRuns   int
	TTL       time.Duration
	MaxGrowth float64
	// Start is WARM_START: first-run (a build's first run starts it, and goes cold meanwhile) or
	// create (an environment's switch to the build starts it too).
	Start string
	// WaitFree is WARM_WAIT: how long a run waits for a busy warm interpreter of its build
	// before it runs cold (default 1s).
	WaitFree time.Duration
}

// Default WARM_* values.
const (
	DefaultWarmMemoryBytes = 2 << 30
	DefaultWarmMaxRuns     = 100
	DefaultWarmTTL         = 10 * time.Minute
	DefaultWarmMaxGrowth   = 2.0
	DefaultWarmWait        = time.Second
)

func loadWarm(r *config.Reader) Warm {
	w := Warm{
		MemoryBytes:     int64(r.Int("WARM_MEMORY_BYTES", DefaultWarmMemoryBytes)),
		ParentsPerBuild: r.Int("WARM_PARENTS_PER_BUILD", runtime.NumCPU()),
		MaxRuns:         r.Int("WARM_MAX_RUNS", DefaultWarmMaxRuns),
		TTL:             r.Duration("WARM_TTL", DefaultWarmTTL),
		MaxGrowth:       r.Float("WARM_MAX_GROWTH", DefaultWarmMaxGrowth),
		Start:           r.String("WARM_START", "first-run"),
		WaitFree:        r.Duration("WARM_WAIT", DefaultWarmWait),
	}
	if w.MemoryBytes < 0 {
		r.Fail("WARM_MEMORY_BYTES=%d: want 0 (warm runs off) or a budget in bytes", w.MemoryBytes)
	}
	if w.ParentsPerBuild < 1 {
		r.Fail("WARM_PARENTS_PER_BUILD=%d: want at least 1", w.ParentsPerBuild)
	}
	if w.MaxRuns < 0 || w.TTL < 0 || w.WaitFree < 0 {
		r.Fail("WARM_MAX_RUNS, WARM_TTL and WARM_WAIT must not be negative")
	}
	if w.MaxGrowth != 0 && w.MaxGrowth < 1 {
		r.Fail("WARM_MAX_GROWTH=%g: want 0 (off) or a multiple of at least 1", w.MaxGrowth)
	}
	if w.Start != "first-run" && w.Start != "create" {
		r.Fail("WARM_START=%q: want first-run or create", w.Start)
	}
	return w
}
