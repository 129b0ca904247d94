package main

import (
	"fmt"
	"strings"
)

// phase returns the p50 of the named phase in the run profile, or 0.
func phase(pr *RunProfile, name string) float64 {
	for _, s := range pr.Phases {
		if s.Name == name {
			return s.Summary.Median
		}
	}
	return 0
}

// profileNotes reads the run profile: how the API's time splits between HTTP, the store, the
// agent and python.
func profileNotes(r *Results) string {
	pr := r.RunProfile
	var api, direct float64
	for _, rc := range r.Run {
		if rc.ID == "trivial" {
			api, direct = rc.Methods[0].Summary.Median, rc.Methods[1].Summary.Median
		}
	}
	if pr == nil || api == 0 {
		return ""
	}
	svc, rpc, runner := phase(pr, phServiceRun), phase(pr, phAgentRPC), phase(pr, phRunner)
	var storeSum float64
	var calls []string
	for _, s := range pr.Phases {
		if strings.HasPrefix(s.Name, "store.") {
			storeSum += s.Summary.Median
			calls = append(calls, strings.TrimPrefix(s.Name, "store."))
		}
	}
	var w strings.Builder
	fmt.Fprintf(&w, "Reading the table (p50s of runs interleaved with the ones above, so the parts add up only roughly): a trivial run through the API took %.1f ms against %.1f ms for python started directly, %+.1f ms.\n", api, direct, api-direct)
	fmt.Fprintf(&w, "- **HTTP layer**: the API (%.1f ms) minus the same lifecycle code in process (%.1f ms): %.1f ms of HTTP, routing and JSON in the control plane and the extra process hop.\n", api, svc, api-svc)
	fmt.Fprintf(&w, "- **Store**: %d calls per run (%s), %.1f ms together; each write is its own SQLite transaction (`BEGIN IMMEDIATE`, WAL). In process, `envs.Service.Run` minus the agent RPC is %.1f ms.\n", len(calls), strings.Join(calls, ", "), storeSum, svc-rpc)
	fmt.Fprintf(&w, "- **Agent**: the Run RPC took %.1f ms, python inside it %.0f ms (the agent's own clock, whole ms): %.1f ms for Connect, the work directory, `main.py` and the pipes.\n", rpc, runner, rpc-runner)
	fmt.Fprintf(&w, "- **Python**: %.0f ms in the agent against %.1f ms started directly by the bench. The agent's timer covers the process as the runner starts it, inside the run sandbox of the agent's tier (docs/sandbox.md has the cost per tier); the bench's direct python has no sandbox.\n", runner, direct)
	return w.String()
}

// diskNotes explains the disk figures: what each hardlinked environment still owns.
func diskNotes(r *Results) string {
	d := r.Disk
	var last DiskPoint
	for _, p := range d.Points {
		if p.Mode == "hardlink" && p.Envs > last.Envs {
			last = p
		}
	}
	if last.Envs == 0 {
		return ""
	}
	n := int64(last.Envs)
	per := last.EnvBytes / n
	var w strings.Builder
	fmt.Fprintf(&w, "Each hardlinked environment still owns %s: %d directories (%s; a hardlink shares a file, never a directory,\n",
		mib(per), last.EnvDirs/n, mib(last.EnvDirBytes/n))
	fmt.Fprintf(&w, "and numpy + pandas install a few hundred of them) and %s of files of its own", mib((last.EnvBytes-last.EnvDirBytes)/n))
	if d.OwnFileCount > 0 {
		fmt.Fprintf(&w, " (in the first environment: %d files not linked to the cache, %s; the largest: %s)",
			d.OwnFileCount, mib(d.OwnFilesBytes), strings.Join(quoteAll(d.OwnFiles), ", "))
	}
	fmt.Fprintf(&w, ". So N environments cost\n")
	fmt.Fprintf(&w, "about cache + N × %s, and \"within 1.1x of one\" holds only while N × %s ≤ 0.1 × %s, that is up to about %d\n",
		mib(per), mib(per), mib(last.CacheBytes), int64(float64(last.CacheBytes)*0.1/float64(max(per, 1)))+1)
	fmt.Fprintf(&w, "environments. Copies cost the whole install per environment.\n")
	return w.String()
}

// concurrencyNotes reads the CPU figures of the concurrency runs.
func concurrencyNotes(r *Results) string {
	c := r.Concurrency
	if c == nil || len(c.Runs) == 0 {
		return ""
	}
	top := c.Runs[len(c.Runs)-1]
	if top.CPU == nil {
		return ""
	}
	cpu := top.CPU
	fab := cpu.FabricMSPerReq()
	var w strings.Builder
	fmt.Fprintf(&w, "At %d clients a run cost %.1f ms of CPU: control plane %.2f, agent %.2f, the Python process and its sandbox %.1f", top.Clients, fab,
		cpu.ControlPlaneMSPerReq, cpu.AgentMSPerReq, cpu.PythonMSPerReq)
	fmt.Fprintf(&w, " (plus %.2f in the load generator). With the machine to itself, %d cores would do at most about %.0f such runs per second;\n",
		cpu.BenchMSPerReq, r.Meta.CPUs, float64(r.Meta.CPUs)*1000/(fab+cpu.BenchMSPerReq))
	fmt.Fprintf(&w, "other work on the host took a further %.1f ms per run (the machine was %.0f%% busy). ", cpu.OtherMSPerReq, cpu.MachineBusyPct)
	own := cpu.ControlPlaneMSPerReq + cpu.AgentMSPerReq
	if own < cpu.PythonMSPerReq {
		fmt.Fprintf(&w, "The fabric's own processes are %.0f%% of a run's CPU; the rest is starting Python, so once the cores are\n", 100*own/fab)
		fmt.Fprintf(&w, "busy more clients only queue, and p99 grows with them.\n\n")
	} else {
		fmt.Fprintf(&w, "The fabric's own processes are %.0f%% of a run's CPU: the first thing to reduce.\n\n", 100*own/fab)
	}
	return w.String()
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = "`" + x + "`"
	}
	return out
}
