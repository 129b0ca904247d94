package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUUse is where the CPU went during a load, from /proc: the control plane's and the agent's
// own time, the bench's (the load generator), and the rest of the machine's busy time (the
// Python processes the agent started, and anything else running on the host).
type CPUUse struct {
	ControlPlaneMSPerReq float64 `json:"controlplane_cpu_ms_per_request"`
	AgentMSPerReq        float64 `json:"agent_cpu_ms_per_request"`
	BenchMSPerReq        float64 `json:"loadgen_cpu_ms_per_request"`
	RestMSPerReq         float64 `json:"rest_cpu_ms_per_request"`
	MachineBusyPct       float64 `json:"machine_busy_pct"` // of all cores
}

// clockTick is USER_HZ, 100 on Linux.
const clockTick = 10.0 // ms per tick

type cpuSnap struct {
	cp, agent, self, busy, total uint64
}

func snapCPU(f *fabric) cpuSnap {
	var s cpuSnap
	if f.cp != nil {
		s.cp = procTicks(f.cp.cmd.Process.Pid)
	}
	if f.agent != nil {
		s.agent = procTicks(f.agent.cmd.Process.Pid)
	}
	s.self = procTicks(os.Getpid())
	s.busy, s.total = machineTicks()
	return s
}

// procTicks is utime+stime of pid (threads included), 0 when unreadable.
func procTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64) // field 14, utime
	k, _ := strconv.ParseUint(f[12], 10, 64) // field 15, stime
	return u + k
}

// machineTicks returns busy and total ticks over all cores.
func machineTicks() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var idle uint64
	for i, v := range f[1:9] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return total - idle, total
}

// cpuUse turns two snapshots around n requests into per-request figures.
func cpuUse(a, b cpuSnap, n int) *CPUUse {
	if n == 0 || b.total == a.total {
		return nil
	}
	per := func(t uint64) float64 { return float64(t) * clockTick / float64(n) }
	cp, ag, self := b.cp-a.cp, b.agent-a.agent, b.self-a.self
	busy := b.busy - a.busy
	rest := int64(busy) - int64(cp+ag+self)
	if rest < 0 {
		rest = 0
	}
	return &CPUUse{ControlPlaneMSPerReq: per(cp), AgentMSPerReq: per(ag), BenchMSPerReq: per(self),
		RestMSPerReq: per(uint64(rest)), MachineBusyPct: 100 * float64(busy) / float64(b.total-a.total)}
}
