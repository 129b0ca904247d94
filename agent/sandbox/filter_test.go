package sandbox

import (
	"encoding/binary"
	"syscall"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData encodes struct seccomp_data for x/net/bpf's VM, which loads words big-endian as
// packet filters do: each field the filter reads is written big-endian at the offset the kernel
// would have it (for an argument, its low 32 bits).
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[seccompNr:], nr)
	binary.BigEndian.PutUint32(b[seccompArch:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[seccompArgs+8*i:], uint32(a))
	}
	return b
}

// The program's decisions, including those no real call on this host can reach (another
// architecture's entry point, the x32 ABI where the kernel has it).
func TestFilterProgram(t *testing.T) {
	if !filterSupported {
		t.Skip("no filter on this architecture")
	}
	raw, err := filterProgram()
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the assembled program does not disassemble")
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	const allow = unix.SECCOMP_RET_ALLOW
	errno := func(e syscall.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e) }
	neg := func(v int64) uint64 { return uint64(v) }
	tests := []struct {
		name string
		in   []byte
		want uint32
	}{
		{"read", seccompData(auditArch, unix.SYS_READ, 0), allow},
		{"another architecture", seccompData(0x40000003, unix.SYS_READ), unix.SECCOMP_RET_KILL_PROCESS},
		{"unshare(CLONE_NEWUSER)", seccompData(auditArch, unix.SYS_UNSHARE, unix.CLONE_NEWUSER), errno(syscall.EPERM)},
		{"unshare(CLONE_NEWTIME)", seccompData(auditArch, unix.SYS_UNSHARE, unix.CLONE_NEWTIME), errno(syscall.EPERM)},
		{"unshare(CLONE_FS)", seccompData(auditArch, unix.SYS_UNSHARE, unix.CLONE_FS), allow},
		{"clone for fork", seccompData(auditArch, unix.SYS_CLONE, uint64(syscall.SIGCHLD)|unix.CLONE_CHILD_SETTID|unix.CLONE_CHILD_CLEARTID), allow},
		{"clone for a thread", seccompData(auditArch, unix.SYS_CLONE, unix.CLONE_VM|unix.CLONE_FS|unix.CLONE_FILES|unix.CLONE_SIGHAND|unix.CLONE_THREAD|unix.CLONE_SYSVSEM), allow},
		{"clone(CLONE_NEWPID)", seccompData(auditArch, unix.SYS_CLONE, unix.CLONE_NEWPID|uint64(syscall.SIGCHLD)), errno(syscall.EPERM)},
		{"clone3", seccompData(auditArch, unix.SYS_CLONE3), errno(syscall.ENOSYS)},
		{"mount", seccompData(auditArch, unix.SYS_MOUNT), errno(syscall.EPERM)},
		{"io_uring_setup", seccompData(auditArch, unix.SYS_IO_URING_SETUP), errno(syscall.ENOSYS)},
		{"keyctl on the session keyring", seccompData(auditArch, unix.SYS_KEYCTL, keyctlGetKeyringID, neg(-3)), allow},
		{"keyctl on a key by serial", seccompData(auditArch, unix.SYS_KEYCTL, 11, 12345, 0, 0), allow},
		{"keyctl on the user keyring", seccompData(auditArch, unix.SYS_KEYCTL, keyctlGetKeyringID, neg(keySpecUserKeyring)), errno(syscall.EPERM)},
		{"keyctl link into the user-session keyring", seccompData(auditArch, unix.SYS_KEYCTL, 8, 12345, neg(keySpecUserSessionKey)), errno(syscall.EPERM)},
		{"keyctl join", seccompData(auditArch, unix.SYS_KEYCTL, keyctlJoinSessionKeyring, 0), errno(syscall.EPERM)},
		{"add_key to the session keyring", seccompData(auditArch, unix.SYS_ADD_KEY, 0, 0, 0, 0, neg(-3)), allow},
		{"add_key to the user keyring", seccompData(auditArch, unix.SYS_ADD_KEY, 0, 0, 0, 0, neg(keySpecUserKeyring)), errno(syscall.EPERM)},
		{"request_key into the user keyring", seccompData(auditArch, unix.SYS_REQUEST_KEY, 0, 0, 0, neg(keySpecUserKeyring)), errno(syscall.EPERM)},
	}
	if x32Bit != 0 {
		tests = append(tests, struct {
			name string
			in   []byte
			want uint32
		}{"x32 read", seccompData(auditArch, x32Bit|unix.SYS_READ), errno(syscall.ENOSYS)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := vm.Run(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if uint32(got) != tt.want {
				t.Errorf("got %#x; want %#x", uint32(got), tt.want)
			}
		})
	}
}
