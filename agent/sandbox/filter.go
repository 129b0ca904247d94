package sandbox

import (
	"fmt"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The system-call filter of the user and namespace tiers: a seccomp BPF program, installed by
// the exec stage just before execve and inherited by everything the code starts. It is a deny
// list: what the scientific stack needs (threads, fork, mmap, NUMA and affinity calls, futexes)
// stays, and what only serves to reach more of the kernel, or other processes, is refused with an
// errno (so programs see a clean failure, not a crash):
//
//   - new namespaces: unshare and clone with a CLONE_NEW* flag, setns. clone3 answers ENOSYS,
//     as on an older kernel, since its flags sit in memory the filter cannot read; the C
//     library then falls back to clone, whose flags it can.
//   - mounts of any kind, pivot_root, chroot;
//   - io_uring (ENOSYS, as where it is compiled out), bpf, perf_event_open, userfaultfd;
//   - reaching other processes: ptrace, process_vm_readv/writev, pidfd_getfd, process_madvise;
//   - kernel modules, kexec, reboot, swap, quotas, accounting, the clock, the host name;
//   - keys beyond the run's own session keyring: the user and user-session keyrings (-4, -5)
//     in any argument of keyctl, add_key and request_key, the persistent keyring, and joining
//     or replacing a session keyring by name.
//
// A system call made through another architecture's entry point (int 0x80 from a 64-bit process)
// has other numbers and kills the process; the x32 ABI answers ENOSYS.

// Offsets in struct seccomp_data (little-endian: the low half of an argument comes first).
const (
	seccompNr   = 0
	seccompArch = 4
	seccompArgs = 16
)

// Namespace flags (CLONE_NEW*). CLONE_NEWTIME shares its bit with clone's exit signal, so it
// only counts for unshare.
const (
	cloneNewMask   = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET
	unshareNewMask = cloneNewMask | unix.CLONE_NEWTIME
)

// A rule refuses one system call with errno: always, or when an argument's low 32 bits have any
// bit of mask set or equal one of values.
type rule struct {
	name   string
	nr     uint32
	errno  syscall.Errno
	arg    int // the argument the condition reads; ignored without one
	mask   uint32
	values []uint32
}

func (r rule) conditional() bool { return r.mask != 0 || len(r.values) > 0 }

func deny(name string, nr int) rule { return rule{name: name, nr: uint32(nr), errno: syscall.EPERM} }

func absent(name string, nr int) rule { return rule{name: name, nr: uint32(nr), errno: syscall.ENOSYS} }

func denyIfBits(name string, nr, arg int, mask uint32) rule {
	return rule{name: name, nr: uint32(nr), errno: syscall.EPERM, arg: arg, mask: mask}
}

func denyIfArg(name string, nr, arg int, values ...uint32) rule {
	return rule{name: name, nr: uint32(nr), errno: syscall.EPERM, arg: arg, values: values}
}

// userKeyrings are KEY_SPEC_USER_KEYRING and KEY_SPEC_USER_SESSION_KEYRING as 32-bit values.
var userKeyrings = []uint32{0xfffffffc, 0xfffffffb} // -4, -5

// filterRules is the deny list; archRules (per architecture) adds the calls only some have.
func filterRules() []rule {
	rs := []rule{
		denyIfBits("unshare(CLONE_NEW*)", unix.SYS_UNSHARE, 0, unshareNewMask),
		denyIfBits("clone(CLONE_NEW*)", unix.SYS_CLONE, 0, cloneNewMask),
		absent("clone3", unix.SYS_CLONE3),
		deny("setns", unix.SYS_SETNS),
		deny("mount", unix.SYS_MOUNT),
		deny("umount2", unix.SYS_UMOUNT2),
		deny("pivot_root", unix.SYS_PIVOT_ROOT),
		deny("chroot", unix.SYS_CHROOT),
		deny("open_tree", unix.SYS_OPEN_TREE),
		deny("move_mount", unix.SYS_MOVE_MOUNT),
		deny("fsopen", unix.SYS_FSOPEN),
		deny("fsconfig", unix.SYS_FSCONFIG),
		deny("fsmount", unix.SYS_FSMOUNT),
		deny("fspick", unix.SYS_FSPICK),
		deny("mount_setattr", unix.SYS_MOUNT_SETATTR),
		absent("io_uring_setup", unix.SYS_IO_URING_SETUP),
		absent("io_uring_enter", unix.SYS_IO_URING_ENTER),
		absent("io_uring_register", unix.SYS_IO_URING_REGISTER),
		deny("ptrace", unix.SYS_PTRACE),
		deny("process_vm_readv", unix.SYS_PROCESS_VM_READV),
		deny("process_vm_writev", unix.SYS_PROCESS_VM_WRITEV),
		deny("pidfd_getfd", unix.SYS_PIDFD_GETFD),
		deny("process_madvise", unix.SYS_PROCESS_MADVISE),
		deny("bpf", unix.SYS_BPF),
		deny("perf_event_open", unix.SYS_PERF_EVENT_OPEN),
		deny("userfaultfd", unix.SYS_USERFAULTFD),
		deny("kexec_load", unix.SYS_KEXEC_LOAD),
		deny("kexec_file_load", unix.SYS_KEXEC_FILE_LOAD),
		deny("init_module", unix.SYS_INIT_MODULE),
		deny("finit_module", unix.SYS_FINIT_MODULE),
		deny("delete_module", unix.SYS_DELETE_MODULE),
		deny("reboot", unix.SYS_REBOOT),
		deny("swapon", unix.SYS_SWAPON),
		deny("swapoff", unix.SYS_SWAPOFF),
		deny("acct", unix.SYS_ACCT),
		deny("quotactl", unix.SYS_QUOTACTL),
		deny("quotactl_fd", unix.SYS_QUOTACTL_FD),
		deny("open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT),
		deny("syslog", unix.SYS_SYSLOG),
		deny("vhangup", unix.SYS_VHANGUP),
		deny("fanotify_init", unix.SYS_FANOTIFY_INIT),
		deny("clock_settime", unix.SYS_CLOCK_SETTIME),
		deny("clock_adjtime", unix.SYS_CLOCK_ADJTIME),
		deny("adjtimex", unix.SYS_ADJTIMEX),
		deny("settimeofday", unix.SYS_SETTIMEOFDAY),
		deny("sethostname", unix.SYS_SETHOSTNAME),
		deny("setdomainname", unix.SYS_SETDOMAINNAME),
		denyIfArg("keyctl(join, persistent, session to parent)", unix.SYS_KEYCTL, 0, keyctlJoinSessionKeyring, keyctlGetPersistent, unix.KEYCTL_SESSION_TO_PARENT),
	}
	// keyctl takes keys and keyrings in its second to fifth arguments, depending on the operation.
	for arg := 1; arg <= 4; arg++ {
		rs = append(rs, denyIfArg(fmt.Sprintf("keyctl(arg %d: user keyrings)", arg+1), unix.SYS_KEYCTL, arg, userKeyrings...))
	}
	rs = append(rs,
		denyIfArg("add_key(user keyrings)", unix.SYS_ADD_KEY, 4, userKeyrings...),
		denyIfArg("request_key(user keyrings)", unix.SYS_REQUEST_KEY, 3, userKeyrings...),
	)
	return append(rs, archRules()...)
}

// ret is the seccomp action for r.
func (r rule) ret() bpf.RetConstant {
	return bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(r.errno)}
}

// filterProgram is the filter, assembled once: every run's plan carries it.
var filterProgram = sync.OnceValues(assembleFilter)

// assembleFilter assembles the filter. Every jump is forward and short: a rule's instructions
// end in its own return, so no offset grows with the length of the list.
func assembleFilter() ([]bpf.RawInstruction, error) {
	if !filterSupported {
		return nil, fmt.Errorf("no system-call filter for this architecture")
	}
	loadNr := bpf.LoadAbsolute{Off: seccompNr, Size: 4}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		loadNr,
	}
	if x32Bit != 0 {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit, SkipFalse: 1},
			bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(syscall.ENOSYS)},
		)
	}
	for _, r := range filterRules() {
		if !r.conditional() {
			prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: r.nr, SkipFalse: 1}, r.ret())
			continue
		}
		body := []bpf.Instruction{bpf.LoadAbsolute{Off: uint32(seccompArgs + 8*r.arg), Size: 4}}
		if r.mask != 0 {
			body = append(body, bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: r.mask, SkipFalse: 1}, r.ret())
		}
		for _, v := range r.values {
			body = append(body, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1}, r.ret())
		}
		body = append(body, loadNr)
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: r.nr, SkipFalse: uint8(len(body))})
		prog = append(prog, body...)
	}
	prog = append(prog, bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble the system-call filter: %w", err)
	}
	return raw, nil
}

// FilterSummary describes the system-call filter of the user and namespace tiers, for logs and
// `make sandbox-tier`.
func FilterSummary() string {
	prog, err := filterProgram()
	if err != nil {
		return "none (" + err.Error() + ")"
	}
	var names []string
	for _, r := range filterRules() {
		if n, _, _ := strings.Cut(r.name, "("); len(names) == 0 || !strings.HasPrefix(names[len(names)-1], n) {
			names = append(names, r.name)
		}
	}
	return fmt.Sprintf("seccomp-bpf, %d instructions, arch %s (other entry points kill the process%s); refuses %s",
		len(prog), archName, map[bool]string{true: ", x32 answers ENOSYS", false: ""}[x32Bit != 0], strings.Join(names, ", "))
}
