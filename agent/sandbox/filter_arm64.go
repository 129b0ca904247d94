package sandbox

import "golang.org/x/sys/unix"

const (
	filterSupported = true
	auditArch       = unix.AUDIT_ARCH_AARCH64
	archName        = "aarch64"
	x32Bit          = 0
)

func archRules() []rule { return []rule{deny("lookup_dcookie", unix.SYS_LOOKUP_DCOOKIE)} }
