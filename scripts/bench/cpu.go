package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUUse is where the CPU went during a load, from /proc: the control plane's and the agent's
// own time, the code the agent ran (its reaped children: python), the bench's (the load
// generator), and the rest of the machine's busy time (whatever else runs on the host).
type CPUUse struct {
	ControlPlaneMSPerReq float64 `json:"controlplane_cpu_ms_per_request"`
	AgentMSPerReq        float64 `json:"agent_cpu_ms_per_request"`
	PythonMSPerReq       float64 `json:"python_cpu_ms_per_request"`
	BenchMSPerReq        float64 `json:"loadgen_cpu_ms_per_request"`
	OtherMSPerReq        float64 `json:"other_cpu_ms_per_request"`
	MachineBusyPct       float64 `json:"machine_busy_pct"` // of all cores
}

// FabricMSPerReq is the CPU one request costs the fabric and the code it ran.
func (c *CPUUse) FabricMSPerReq() float64 {
	return c.ControlPlaneMSPerReq + c.AgentMSPerReq + c.PythonMSPerReq
}

// clockTick is USER_HZ, 100 on Linux.
const clockTick = 10.0 // ms per tick

type cpuSnap struct {
	cp, agent, children, self, busy, total uint64
}

func snapCPU(f *fabric) cpuSnap {
	var s cpuSnap
	if f.cp != nil {
		s.cp, _ = procTicks(f.cp.cmd.Process.Pid)
	}
	if f.agent != nil {
		s.agent, s.children = procTicks(f.agent.cmd.Process.Pid)
	}
	s.self, _ = procTicks(os.Getpid())
	s.busy, s.total = machineTicks()
	return s
}

// procTicks is utime+stime of pid (threads included) and of its children it has waited for
// (cutime+cstime); zeros when unreadable.
func procTicks(pid int) (own, children uint64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The command name may hold spaces: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0, 0
	}
	n := func(j int) uint64 { v, _ := strconv.ParseUint(f[j], 10, 64); return v }
	// Fields 14-17 of proc(5): utime, stime, cutime, cstime; f[0] is field 3.
	return n(11) + n(12), n(13) + n(14)
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
	cp, ag, py, self := b.cp-a.cp, b.agent-a.agent, b.children-a.children, b.self-a.self
	busy := b.busy - a.busy
	other := int64(busy) - int64(cp+ag+py+self)
	if other < 0 {
		other = 0
	}
	return &CPUUse{ControlPlaneMSPerReq: per(cp), AgentMSPerReq: per(ag), PythonMSPerReq: per(py), BenchMSPerReq: per(self),
		OtherMSPerReq: per(uint64(other)), MachineBusyPct: 100 * float64(busy) / float64(b.total-a.total)}
}
