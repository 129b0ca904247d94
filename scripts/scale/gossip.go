package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/envfabric/envfabric/shared/gossip"
)

// childVar makes the harness's own binary a host of gossip members (the ones it kills).
const childVar = "SCALE_GOSSIP_CHILD"

type gossipResult struct {
	members, inProcess, killed int
	joinAll                    time.Duration // from the first join to every member seeing every other
	afterLastJoin              time.Duration // from the last join returning to the same
	failure                    time.Duration // from SIGKILL to no member seeing a killed one
	detectMin, detectMax       time.Duration // memberlist's configured failure detection window
	rssPerMember               int64
	converged, detected        bool
	suspect                    int // suspect entries in all views at convergence
}

// lanTimings are the timings gossip.Join uses in a fleet (profile lan): memberlist's LAN defaults.
func detectionWindow(n int) (lo, hi time.Duration) {
	c := memberlist.DefaultLANConfig()
	// A member is probed within a probe interval (every member probes one a round), declared
	// suspect after the probe timeout, and dead when its suspicion timeout ends: at least
	// SuspicionMult × log10(n) probe intervals (with enough independent confirmations), at most
	// SuspicionMaxTimeoutMult times that (memberlist's suspicion.go).
	min := time.Duration(float64(c.SuspicionMult) * math.Max(1, math.Log10(float64(n))) * float64(c.ProbeInterval))
	base := c.ProbeInterval + c.ProbeTimeout
	return base + min, base + time.Duration(c.SuspicionMaxTimeoutMult)*min
}

func member(ctx context.Context, i int, seed string) (*gossip.Member, error) {
	addr, err := freeUDPTCP()
	if err != nil {
		return nil, err
	}
	var seeds []string
	if seed != "" {
		seeds = []string{seed}
	}
	meta := gossip.Meta{Role: gossip.RoleAgent, ID: fmt.Sprintf("agent-%03d", i), URL: "http://" + addr, Fleet: "scale", Version: "scale",
		Pythons: []gossip.Python{{Version: "3.11", Path: "/usr/bin/python3"}}, Sandbox: "namespace"}
	return gossip.Join(ctx, gossip.Config{NodeName: meta.ID, BindAddr: addr, Seeds: seeds, Profile: "lan"},
		gossip.Hooks{Meta: func() gossip.Meta { return meta }}, slog.New(slog.DiscardHandler))
}

// freeUDPTCP finds a loopback port free for both TCP and UDP (memberlist binds both).
func freeUDPTCP() (string, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free loopback port for TCP and UDP")
}

// gossipChild hosts n members joined through seed and waits to be killed.
func gossipChild(spec string) error {
	nStr, seed, _ := strings.Cut(spec, ",")
	first, seed, _ := strings.Cut(seed, ",")
	n, _ := strconv.Atoi(nStr)
	f, _ := strconv.Atoi(first)
	for i := 0; i < n; i++ {
		if _, err := member(context.Background(), f+i, seed); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	select {}
}

// measureGossip starts total members, killed of them in a child process, and measures how long
// the others take to see every member after the joins, and to drop the child's after it is killed
// with SIGKILL (no leave message: a crash).
func measureGossip(ctx context.Context, total, killed int) (gossipResult, error) {
	res := gossipResult{members: total, inProcess: total - killed, killed: killed}
	res.detectMin, res.detectMax = detectionWindow(total)
	before, _ := rssOf(os.Getpid())
	var ms []*gossip.Member
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	start := time.Now()
	first, err := member(ctx, 0, "")
	if err != nil {
		return res, err
	}
	ms = append(ms, first)
	seed := first.Addr()
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	child := exec.Command(self)
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%s", childVar, killed, total-killed, seed))
	out, err := child.StdoutPipe()
	if err != nil {
		return res, err
	}
	child.Stderr = os.Stderr
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := child.Start(); err != nil {
		return res, err
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	for i := 1; i < total-killed; i++ {
		m, err := member(ctx, i, seed)
		if err != nil {
			return res, err
		}
		ms = append(ms, m)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		return res, fmt.Errorf("gossip child: %q, %v", line, err)
	}
	lastJoin := time.Now()
	sees := func(ok func(peers []gossip.Peer) bool) bool {
		for _, m := range ms {
			if !ok(m.Peers()) {
				return false
			}
		}
		return true
	}
	wait := func(limit time.Duration, ok func([]gossip.Peer) bool) bool {
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if sees(ok) {
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false
	}
	// Converged: every member knows every other (alive, or suspect for a moment: on a loaded
	// machine a probe answered late makes a member suspect until it refutes, which is liveness,
	// not membership).
	res.converged = wait(3*time.Minute, func(p []gossip.Peer) bool { return len(p) == total-1 })
	res.joinAll, res.afterLastJoin = time.Since(start), time.Since(lastJoin)
	for _, m := range ms {
		for _, x := range m.Peers() {
			if x.State == "suspect" {
				res.suspect++
			}
		}
	}
	after, _ := rssOf(os.Getpid())
	res.rssPerMember = (after - before) / int64(res.inProcess)

	// Let the cluster settle before the crash (gossip of the joins is over).
	time.Sleep(5 * time.Second)
	kill := time.Now()
	_ = child.Process.Kill()
	res.detected = wait(3*time.Minute, func(p []gossip.Peer) bool {
		for _, x := range p {
			if n, _ := strconv.Atoi(strings.TrimPrefix(x.Name, "agent-")); n >= total-killed {
				return false
			}
		}
		return true
	})
	res.failure = time.Since(kill)
	return res, nil
}
