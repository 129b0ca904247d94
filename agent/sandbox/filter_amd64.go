package sandbox

import "golang.org/x/sys/unix"

const (
	filterSupported = true
	auditArch       = unix.AUDIT_ARCH_X86_64
	archName        = "x86_64"
	// x32Bit marks the x32 ABI's system calls, which share the x86_64 architecture value.
	x32Bit = 0x40000000
)

func archRules() []rule {
	return []rule{
		deny("iopl", unix.SYS_IOPL),
		deny("ioperm", unix.SYS_IOPERM),
		deny("uselib", unix.SYS_USELIB),
		deny("_sysctl", unix.SYS__SYSCTL),
		deny("create_module", unix.SYS_CREATE_MODULE),
		deny("lookup_dcookie", unix.SYS_LOOKUP_DCOOKIE),
	}
}
