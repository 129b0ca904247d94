package sandbox

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// RunGroup is a run's cgroup for a process the sandbox did not start itself: a warm
// interpreter's child (agent/warm), put in it by host pid before it runs any code. It bounds the
// run as a whole exactly as a cold run's cgroup does (RunLimits).
type RunGroup struct{ rc *runCgroup }

// NewRunGroup makes a cgroup with limits in force under g.
func (g *Cgroups) NewRunGroup(limits RunLimits) (*RunGroup, error) {
	rc, err := g.create(limits)
	if err != nil {
		return nil, err
	}
	return &RunGroup{rc: rc}, nil
}

// Add moves the process with host pid into the group (its threads and later children follow).
func (r *RunGroup) Add(pid int) error {
	for _, f := range r.rc.procsFiles() {
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("move pid %d into the run cgroup: %w", pid, err)
		}
	}
	return nil
}

// KillAll kills every process in the group.
func (r *RunGroup) KillAll() {
	for _, d := range r.rc.dirs {
		killAll(d)
	}
}

// OOMKills is how many processes of the run the kernel killed for want of memory.
func (r *RunGroup) OOMKills() uint64 { return r.rc.oomKills() }

// Remove kills what is left and removes the group.
func (r *RunGroup) Remove() { r.rc.remove() }

// MemoryCurrent is the memory charged to the group (0 when unknown).
func (r *RunGroup) MemoryCurrent() uint64 {
	file := "memory.usage_in_bytes"
	if r.rc.g.Version == 2 {
		file = "memory.current"
	}
	b, err := os.ReadFile(filepath.Join(r.rc.memoryDir(), file))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	return n
}

// Warm says whether c's runs may be forked from a warm interpreter (agent/warm): only where the
// interpreter has a PID namespace of its own, so that what a run leaves behind can be found and
// killed (kill(-1) inside it) without touching anything outside.
func (c Config) Warm() bool { return c.pidNamespace() }

// Namespaced says whether c gives the program private /tmp, /var/tmp, /dev/shm and IPC (the
// namespace tier), which a warm interpreter wipes after every run.
func (c Config) Namespaced() bool { return c.Tier == Namespace }

// GuardProgram is the extra system-call filter a warm interpreter's child installs before it
// runs code (as hex, the raw struct sock_filter array): it refuses to signal, or open a pidfd of,
// any of pids (the interpreter, its parent stage), to signal their process groups (-pgid) or every
// process (-1), to make them a descriptor's owner (F_SETOWN: SIGIO, or any signal after F_SETSIG),
// and refuses tkill, pidfd_send_signal (which takes a /proc/<pid> directory as well as a pidfd),
// F_SETOWN_EX, FIOSETOWN, SIOCSPGRP, ptrace and process_vm_readv/writev outright. The run's own processes stay
// reachable. Allowed system calls fall through to the sandbox's filter.
func GuardProgram(pids, pgids []int) (string, error) {
	if !filterSupported {
		return "", fmt.Errorf("no system-call filter for this architecture")
	}
	eperm := bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(syscall.EPERM)}
	var targets []uint32
	for _, p := range pids {
		targets = append(targets, uint32(p))
	}
	killTargets := append([]uint32{0xffffffff}, targets...)
	for _, g := range pgids {
		killTargets = append(killTargets, uint32(int32(-g)))
	}
	loadNr := bpf.LoadAbsolute{Off: seccompNr, Size: 4}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		loadNr,
	}
	for _, nr := range []int{unix.SYS_TKILL, unix.SYS_PIDFD_SEND_SIGNAL, unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV} {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipFalse: 1}, eperm)
	}
	// The first argument names the target process (kill: or group, or -1).
	for _, c := range []struct {
		nr     int
		values []uint32
	}{
		{unix.SYS_KILL, killTargets},
		{unix.SYS_TGKILL, targets},
		{unix.SYS_RT_SIGQUEUEINFO, targets},
		{unix.SYS_RT_TGSIGQUEUEINFO, targets},
		{unix.SYS_PIDFD_OPEN, targets},
	} {
		body := []bpf.Instruction{bpf.LoadAbsolute{Off: seccompArgs, Size: 4}}
		for _, v := range c.values {
			body = append(body, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1}, eperm)
		}
		body = append(body, loadNr)
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(c.nr), SkipFalse: uint8(len(body))})
		prog = append(prog, body...)
	}
	// Signals by proxy: a descriptor's owner gets SIGIO (or, after F_SETSIG, any signal) when it
	// is ready. fcntl(F_SETOWN) may not name the targets; F_SETOWN_EX and the ioctls (whose pid
	// sits in memory the filter cannot read) are refused outright.
	owner := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArgs + 8, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.F_SETOWN_EX, SkipFalse: 1}, eperm,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.F_SETOWN, SkipTrue: 1},
		bpf.Jump{Skip: uint32(2*len(killTargets) + 1)},
		bpf.LoadAbsolute{Off: seccompArgs + 16, Size: 4},
	}
	for _, v := range killTargets {
		owner = append(owner, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1}, eperm)
	}
	owner = append(owner, loadNr)
	prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.SYS_FCNTL), SkipFalse: uint8(len(owner))})
	prog = append(prog, owner...)
	ioctls := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArgs + 8, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: fioSetOwn, SkipFalse: 1}, eperm,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: siocSPgrp, SkipFalse: 1}, eperm,
		loadNr,
	}
	prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.SYS_IOCTL), SkipFalse: uint8(len(ioctls))})
	prog = append(prog, ioctls...)
	prog = append(prog, bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return "", fmt.Errorf("assemble the warm run's guard: %w", err)
	}
	return hex.EncodeToString(rawFilter(raw)), nil
}

// WipeMessageQueues removes every POSIX message queue of the IPC namespace of the process with
// host pid (a warm interpreter of the namespace tier, between runs). A queue has no other name
// than its entry in an mqueue file system, which the sandbox may not have mounted (a host
// without /dev/mqueue): so one thread of the agent joins that IPC namespace just long enough to
// open its mqueue file system as a detached mount (fsopen, fsmount: attached nowhere, seen by
// no one), goes back to its own, and unlinks every entry through the mount. The thread is given
// back to the Go scheduler only once it is in its own namespace again; otherwise it ends with
// its goroutine.
func WipeMessageQueues(pid int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := wipeMessageQueues(pid)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func wipeMessageQueues(pid int) (restored bool, err error) {
	own, err := unix.Open("/proc/thread-self/ns/ipc", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open own IPC namespace: %w", err)
	}
	defer unix.Close(own)
	target, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/ipc", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open the IPC namespace of pid %d: %w", pid, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWIPC); err != nil {
		return true, fmt.Errorf("join the IPC namespace of pid %d: %w", pid, err)
	}
	// The file system context takes the IPC namespace of its maker, at fsopen.
	fs, fsErr := unix.Fsopen("mqueue", unix.FSOPEN_CLOEXEC)
	if err := unix.Setns(own, unix.CLONE_NEWIPC); err != nil {
		if fsErr == nil {
			unix.Close(fs)
		}
		return false, fmt.Errorf("return to own IPC namespace: %w", err)
	}
	if fsErr != nil {
		return true, fmt.Errorf("open its message queues: %w", fsErr)
	}
	defer unix.Close(fs)
	if err := unix.FsconfigCreate(fs); err != nil {
		return true, fmt.Errorf("open its message queues: %w", err)
	}
	mnt, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open its message queues: %w", err)
	}
	defer unix.Close(mnt)
	dfd, err := unix.Openat(mnt, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("list its message queues: %w", err)
	}
	dir := os.NewFile(uintptr(dfd), "mqueue")
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return true, fmt.Errorf("list its message queues: %w", err)
	}
	for _, n := range names {
		if err := unix.Unlinkat(dfd, n, 0); err != nil && err != unix.ENOENT {
			return true, fmt.Errorf("remove message queue %s: %w", n, err)
		}
	}
	return true, nil
}

// ioctl requests that set a descriptor's owner (asm-generic/sockios.h, the same on amd64 and
// arm64).
const (
	fioSetOwn = 0x8901
	siocSPgrp = 0x8902
)
