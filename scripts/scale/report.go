package main

import (
	"fmt"
	"time"
)

// The old use signal: every agent stat()ed every environment's pyvenv.cfg each
// USAGE_SCAN_INTERVAL (30 s), besides reading every workflow and node directory.
const oldScanInterval = 30 * time.Second

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func printReport(cfg config, reports []dbReport, g gossipResult) {
	fmt.Println()
	fmt.Println("==== figures ====")
	for _, r := range reports {
		fmt.Printf("%s, %d environments (filled in %s):\n", r.name, r.envCount, r.fill.Round(time.Second))
		for _, p := range paths {
			l := r.latency[p.name]
			fmt.Printf("  %-28s n=%-5d p50 %-9s p99 %-9s max %-9s %6.0f req/s with 8 clients\n", p.name, l.n,
				l.p50.Round(10*time.Microsecond), l.p99.Round(10*time.Microsecond), l.max.Round(10*time.Microsecond), r.throughput[p.name])
		}
		c := r.cleanup
		fmt.Printf("  cleanup pass over every environment: %s (%d candidates: %d removed, %d kept as used on the storage, %d skipped; %d builds removed)\n",
			c.took.Round(time.Millisecond), c.candidates, c.removed, c.kept, c.skipped, c.buildsRemoved)
		fmt.Printf("  shared-storage metadata calls of the pass: %.0f (%.2f a candidate)\n", c.storageCalls, c.storageCalls/float64(max(1, c.candidates)))
		fmt.Printf("  database beyond the distinct lock contents: %.0f bytes an environment (the %d distinct pyproject+lock contents: %s)\n",
			r.bytesPerEnv, 300, mib(r.lockBytes))
		fmt.Printf("  memory: control plane RSS %s (peak %s), agent RSS %s (peak %s)\n", mib(r.cpRSS), mib(r.cpPeak), mib(r.agentRSS), mib(r.agentPeak))
	}
	fmt.Printf("gossip, %d memberlist members (LAN profile) on loopback:\n", g.members)
	fmt.Printf("  joins: every member knows every other %s after the first join, %s after the last (converged: %v; %d of %d views' entries suspect then)\n",
		g.joinAll.Round(10*time.Millisecond), g.afterLastJoin.Round(10*time.Millisecond), g.converged, g.suspect, g.inProcess*(g.members-1))
	fmt.Printf("  a crash of %d members (SIGKILL): every other member drops them after %s (detected: %v)\n", g.killed, g.failure.Round(10*time.Millisecond), g.detected)
	fmt.Printf("  memberlist's configured detection time at %d members: %s to %s (probe + timeout + suspicion, min to max)\n",
		g.members, g.detectMin.Round(10*time.Millisecond), g.detectMax.Round(10*time.Millisecond))
	fmt.Printf("  memory: %d KiB a member (this process's RSS growth / %d members)\n", g.rssPerMember>>10, g.inProcess)

	fmt.Println()
	fmt.Println("==== model: a million environments, a thousand agents ====")
	for _, r := range reports {
		if r.name != "PostgreSQL" {
			continue
		}
		c := r.cleanup
		perCandidate := c.storageCalls / float64(max(1, c.candidates))
		cand1M := 1_000_000 / cfg.every
		fmt.Printf("  use signal, hourly cleanup: %.0f metadata calls an hour (%d candidates × %.2f), whatever the number of agents\n",
			float64(cand1M)*perCandidate, cand1M, perCandidate)
		fmt.Printf("  before (every agent walked every pyvenv.cfg each %s): %.3g calls an hour (%.3g a second)\n", oldScanInterval,
			1e6*1000*float64(time.Hour/oldScanInterval), 1e6*1000/oldScanInterval.Seconds())
		scale := 1_000_000 / float64(r.envCount)
		fmt.Printf("  database at a million environments: %.1f GiB beyond the lock contents\n", r.bytesPerEnv*1e6/(1<<30))
		if scale != 1 {
			fmt.Printf("  (measured at %d environments; the read paths are index lookups, O(log n), and a cleanup pass reads its candidates only)\n", r.envCount)
		}
	}

	fmt.Println()
	fmt.Println("==== goals (issue 15) ====")
	for _, r := range reports {
		if r.name != "PostgreSQL" {
			continue
		}
		at := ""
		if r.envCount < 1_000_000 {
			at = fmt.Sprintf(" [measured at %d environments, not a million]", r.envCount)
		}
		st, dp, ls := r.latency[paths[0].name], r.latency[paths[1].name], r.latency[paths[2].name]
		c := r.cleanup
		fmt.Printf("  status p99 < 20 ms:              %-9s %s%s\n", st.p99.Round(10*time.Microsecond), verdict(st.p99 < 20*time.Millisecond), at)
		fmt.Printf("  deps p99 < 20 ms:                %-9s %s%s\n", dp.p99.Round(10*time.Microsecond), verdict(dp.p99 < 20*time.Millisecond), at)
		fmt.Printf("  list of one workflow p99 < 50 ms: %-9s %s%s\n", ls.p99.Round(10*time.Microsecond), verdict(ls.p99 < 50*time.Millisecond), at)
		fmt.Printf("  full cleanup pass < 60 s:        %-9s %s%s\n", c.took.Round(time.Millisecond), verdict(c.took < time.Minute), at)
		fmt.Printf("  ≤ 2 KiB an environment:          %-9s %s%s\n", fmt.Sprintf("%.0f B", r.bytesPerEnv), verdict(r.bytesPerEnv <= 2048), at)
		fmt.Printf("  storage calls ∝ candidates:      %-9s %s (at most 2 a candidate, none for the other %d environments)\n",
			fmt.Sprintf("%.0f/%d", c.storageCalls, c.candidates), verdict(c.storageCalls <= 2*float64(c.candidates)), r.envCount-c.candidates)
	}
	fmt.Printf("  %d members converge after joins within the detection time (%s): %s %s\n", g.members, g.detectMax.Round(time.Second),
		g.afterLastJoin.Round(10*time.Millisecond), verdict(g.converged && g.afterLastJoin <= g.detectMax))
	fmt.Printf("  %d members converge after a crash within the detection time (%s): %s %s\n", g.members, g.detectMax.Round(time.Second),
		g.failure.Round(10*time.Millisecond), verdict(g.detected && g.failure <= g.detectMax))
}
