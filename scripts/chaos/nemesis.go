package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Fault kinds.
const (
	faultKillAgent  = "kill-agent"
	faultKillCP     = "kill-controlplane"
	faultPauseAgent = "pause-agent"
	faultPauseCP    = "pause-controlplane"
	faultStopDB     = "stop-postgres"
)

var faultKinds = []string{faultKillAgent, faultKillCP, faultPauseAgent, faultPauseCP, faultStopDB}

// fault is one fault the nemesis injected and undid.
type fault struct {
	Kind   string    `json:"kind"`
	Target string    `json:"target"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"` // when it was undone (the program answered ready again)
	Err    string    `json:"error,omitempty"`
}

// nemesis injects one fault at a time, with a short calm between, until ctx ends. One at a time
// keeps at least one control plane and one agent serving, so every fault is survivable by design
// and a violation is the service's, not the harness's. A fault under way when ctx ends is undone
// before nemesis returns.
type nemesis struct {
	f   *fleet
	rng *rand.Rand
	log *slog.Logger
	// pause is how long a SIGSTOP lasts: past the lease TTL, so leases of a paused holder expire
	// and another control plane may take them while the holder still thinks it holds them.
	pause time.Duration

	mu     sync.Mutex
	faults []fault
}

func (n *nemesis) record(ft fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = append(n.faults, ft)
}

func (n *nemesis) all() []fault {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]fault(nil), n.faults...)
}

func (n *nemesis) run(ctx context.Context) {
	// Kinds are drawn from a shuffled bag, refilled when empty, so even a short run sees each kind
	// about as often as the others.
	var bag []string
	for {
		if !sleep(ctx, time.Duration(1000+n.rng.IntN(2000))*time.Millisecond) {
			return
		}
		if len(bag) == 0 {
			bag = append(bag, faultKinds...)
			n.rng.Shuffle(len(bag), func(i, j int) { bag[i], bag[j] = bag[j], bag[i] })
		}
		kind := bag[0]
		bag = bag[1:]
		ft := n.inject(ctx, kind)
		n.log.Info("fault", "kind", ft.Kind, "target", ft.Target, "took", ft.End.Sub(ft.Start).Round(time.Millisecond), "err", ft.Err)
		n.record(ft)
	}
}

// inject applies one fault and undoes it. The undo does not depend on ctx: a fault is never left
// in place.
func (n *nemesis) inject(ctx context.Context, kind string) fault {
	ft := fault{Kind: kind, Start: time.Now()}
	undoCtx := context.WithoutCancel(ctx)
	var err error
	switch kind {
	case faultKillAgent, faultKillCP:
		m := n.pick(kind == faultKillCP)
		ft.Target = m.name
		if err = m.kill(); err == nil {
			sleep(ctx, time.Duration(500+n.rng.IntN(2500))*time.Millisecond)
			err = m.restart(undoCtx)
		}
	case faultPauseAgent, faultPauseCP:
		m := n.pick(kind == faultPauseCP)
		ft.Target = m.name
		if err = m.pause(); err == nil {
			sleep(ctx, n.pause+time.Duration(n.rng.IntN(1000))*time.Millisecond)
			err = m.resume()
		}
	case faultStopDB:
		ft.Target = "postgres"
		n.f.stopDB()
		sleep(ctx, time.Duration(2000+n.rng.IntN(3000))*time.Millisecond)
		err = n.f.startDB(undoCtx)
	}
	if err != nil {
		ft.Err = err.Error()
	}
	ft.End = time.Now()
	return ft
}

func (n *nemesis) pick(controlPlane bool) *member {
	if controlPlane {
		return n.f.cps[n.rng.IntN(len(n.f.cps))]
	}
	return n.f.agents[n.rng.IntN(len(n.f.agents))]
}

// sleep waits d or until ctx ends; it reports whether the whole d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func countByKind(faults []fault) map[string]int {
	out := map[string]int{}
	for _, f := range faults {
		out[f.Kind]++
	}
	return out
}

func (f fault) String() string {
	s := fmt.Sprintf("%s %s [%s → %s]", f.Kind, f.Target, f.Start.Format("15:04:05.000"), f.End.Format("15:04:05.000"))
	if f.Err != "" {
		s += " error: " + f.Err
	}
	return s
}
