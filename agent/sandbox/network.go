package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
	"unsafe"
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

// goFD is the init stage's descriptor on which it waits for the network to be ready.
const goFD = 4

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

// waitForNetwork blocks the init stage until the agent says the network is set up (one byte on
// goFD; EOF means it failed).
func waitForNetwork() error {
	f := os.NewFile(goFD, "go")
	defer f.Close()
	if _, err := f.Read(make([]byte, 1)); err != nil {
		return fmt.Errorf("network set-up: %w", err)
	}
	return nil
}

// Netlink route constants the syscall package lacks.
const (
	rtTableMain   = 254
	rtprotStatic  = 4
	rtnProhibit   = 8
	rtScopeGlobal = 0
)

// prohibitRoutes adds a "prohibit" route for each IPv4 network in cidrs to the (run's) main
// routing table: a connection there fails at once (EACCES), whatever the default route.
func prohibitRoutes(cidrs []string) error {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer syscall.Close(fd)
	for i, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return fmt.Errorf("denied network %q: %w", c, err)
		}
		ip4 := n.IP.To4()
		if ip4 == nil {
			continue // the run has no IPv6 route at all
		}
		ones, _ := n.Mask.Size()
		if err := addRoute(fd, uint32(i+1), ip4, ones); err != nil {
			return fmt.Errorf("prohibit %s: %w", c, err)
		}
	}
	return nil
}

func addRoute(fd int, seq uint32, dst net.IP, ones int) error {
	const hdr, rtm, attr = syscall.SizeofNlMsghdr, syscall.SizeofRtMsg, syscall.SizeofRtAttr + 4
	msg := make([]byte, hdr+rtm+attr)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], syscall.RTM_NEWROUTE)
	binary.NativeEndian.PutUint16(msg[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_ACK|syscall.NLM_F_CREATE|syscall.NLM_F_EXCL)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	rt := (*syscall.RtMsg)(unsafe.Pointer(&msg[hdr]))
	*rt = syscall.RtMsg{Family: syscall.AF_INET, Dst_len: uint8(ones), Table: rtTableMain, Protocol: rtprotStatic, Scope: rtScopeGlobal, Type: rtnProhibit}
	binary.NativeEndian.PutUint16(msg[hdr+rtm:], attr)
	binary.NativeEndian.PutUint16(msg[hdr+rtm+2:], syscall.RTA_DST)
	copy(msg[hdr+rtm+4:], dst)
	if err := syscall.Sendto(fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := syscall.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == syscall.NLMSG_ERROR && len(m.Data) >= 4 {
			if e := -int32(binary.NativeEndian.Uint32(m.Data)); e != 0 && syscall.Errno(e) != syscall.EEXIST {
				return syscall.Errno(e)
			}
			return nil
		}
	}
	return errors.New("no answer from netlink")
}

// slirpResolvConf points the run's name resolution at slirp4netns's DNS forwarder: the host's
// own resolver (often 127.0.0.53) is not reachable from the run. The file lives in a small tmpfs
// mounted only long enough to bind it over /etc/resolv.conf.
func slirpResolvConf() error {
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		return nil
	}
	dir := "/tmp/.envfabric-net"
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "size=4k,mode=0755"); err != nil {
		return fmt.Errorf("resolv.conf tmpfs: %w", err)
	}
	f := dir + "/resolv.conf"
	if err := os.WriteFile(f, []byte("nameserver 10.0.2.3\n"), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := syscall.Mount(f, "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind resolv.conf: %w", err)
	}
	if err := syscall.Mount("", "/etc/resolv.conf", "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV, ""); err != nil {
		return fmt.Errorf("read-only resolv.conf: %w", err)
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("resolv.conf tmpfs: %w", err)
	}
	return os.Remove(dir)
}
