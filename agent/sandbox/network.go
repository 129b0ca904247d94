package sandbox

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// With RUN_ALLOW_NETWORK=true the namespace tier still gives the run a network namespace of its
// own, and connects it to the outside through user-mode networking: slirp4netns, run by the
// agent in the host's namespace, turns the run's packets into ordinary sockets of its own. Its
// --disable-host-loopback refuses the gateway's way to the host's 127.0.0.1, and the run's
// routing table prohibits every address of the host (its interfaces, read at each run) and the
// link-local range (cloud metadata services), plus what the operator adds (RUN_NETWORK_DENY):
// the run reaches the internet, not the agent, the control plane or the database.

// alwaysDenied are refused to every run with network.
var alwaysDenied = []string{"169.254.0.0/16"}

// slirpReadyTimeout bounds how long slirp4netns may take to set up the run's network.
const slirpReadyTimeout = 10 * time.Second

// goFD is the init stage's descriptor on which it waits for the network to be ready (after the
// status pipe and the plan). The stage then adds a "prohibit" route for each denied network to
// the run's routing table, and binds a resolv.conf naming slirp4netns's DNS forwarder (10.0.2.3)
// over /etc/resolv.conf: the host's own resolver (often 127.0.0.53) is not reachable from the run.
const goFD = 5

// deniedNetworks is what a run with network must not reach: the host's own IPv4 addresses (the
// run has no IPv6), the always-denied ranges and extra.
func deniedNetworks(extra []string) ([]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list the host's addresses: %w", err)
	}
	deny := append([]string{}, alwaysDenied...)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			deny = append(deny, n.IP.String()+"/32")
		}
	}
	return append(deny, extra...), nil
}

// slirp is the user-mode network of one run.
type slirp struct {
	cmd   *exec.Cmd
	exitW *os.File // closing it tells slirp4netns to exit
}

// startSlirp connects the network namespace of pid to the outside and waits until it is
// configured (tap0 with 10.0.2.100/24, the default route, DNS at 10.0.2.3).
func startSlirp(bin string, pid int) (*slirp, error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("slirp4netns ready pipe: %w", err)
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return nil, fmt.Errorf("slirp4netns exit pipe: %w", err)
	}
	cmd := exec.Command(bin, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
		"--ready-fd=3", "--exit-fd=4", fmt.Sprint(pid), "tap0")
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		exitW.Close()
		return nil, fmt.Errorf("start slirp4netns: %w", err)
	}
	s := &slirp{cmd: cmd, exitW: exitW}
	_ = readyR.SetReadDeadline(time.Now().Add(slirpReadyTimeout))
	if _, err := readyR.Read(make([]byte, 1)); err != nil {
		s.stop()
		return nil, fmt.Errorf("slirp4netns did not get ready (%w): %s", err, out.String())
	}
	return s, nil
}

func (s *slirp) stop() {
	s.exitW.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// limitedBuffer keeps the first 4 KiB written: enough for slirp4netns's complaint.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
