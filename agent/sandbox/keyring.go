package sandbox

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// keyctl(2) operations and special keyring ids (linux/keyctl.h).
const (
	keyctlGetKeyringID       = 0
	keyctlJoinSessionKeyring = 1
	keyctlSetperm            = 5
	keyctlDescribe           = 6
	keyctlGetPersistent      = 22
	keySpecUserKeyring       = -4
	keySpecUserSessionKey    = -5
	// keySealed is every permission for a possessor, only "view" for the owner (so a later run
	// can see that it is sealed) and none for group or others.
	keySealed   = 0x3f010000
	keyUserView = 0x00010000
)

func keyctl(op int, args ...int64) (int, syscall.Errno) {
	var a [4]uintptr
	for i, v := range args {
		a[i] = uintptr(v) // a key serial is an int; the kernel reads only its low 32 bits
	}
	r, _, errno := syscall.RawSyscall6(syscall.SYS_KEYCTL, uintptr(op), a[0], a[1], a[2], a[3], 0)
	return int(r), errno
}

// joinFreshSessionKeyring gives the run a new anonymous session keyring, so keys it adds are its
// own and die with its last process. It is made before the drop to the run user, so it counts
// against root's key quota, not the run user's (which every run shares). A kernel without keys
// has nothing to share.
func joinFreshSessionKeyring() error {
	if _, errno := keyctl(keyctlJoinSessionKeyring, 0); errno != 0 && errno != syscall.ENOSYS {
		return fmt.Errorf("join a fresh session keyring: %w", errno)
	}
	return nil
}

// sealUserKeyrings leaves the run user's user and user-session keyrings (shared by every process
// of that uid) reachable by possessors only. A run possesses neither: its fresh session keyring
// does not link them. Without the seal, their owner (any process of the run user) has every
// permission on them, by special id (-4, -5) or by the serial number /proc/keys shows. Run as the
// run user, after the drop. The keyrings are made if they do not exist yet, so no run can make
// them open later; the system-call filter refuses the special ids to the code as well.
func sealUserKeyrings() error {
	for _, id := range []int64{keySpecUserKeyring, keySpecUserSessionKey} {
		serial, errno := keyctl(keyctlGetKeyringID, id, 1)
		switch errno {
		case 0:
		case syscall.ENOSYS:
			return nil
		case syscall.EDQUOT:
			continue // the user's key quota is full: it cannot be made, by code either
		default:
			return fmt.Errorf("find keyring %d: %w", id, errno)
		}
		_, errno = keyctl(keyctlSetperm, int64(serial), keySealed)
		if errno == syscall.EACCES && sealed(serial) {
			continue // an earlier run sealed it, and with that took the owner's right to set it
		}
		if errno != 0 {
			return fmt.Errorf("seal keyring %d (serial %d): %w", id, serial, errno)
		}
	}
	return nil
}

// sealed reports whether the keyring's permissions give its owner at most "view", and its group
// and others nothing.
func sealed(serial int) bool {
	buf := make([]byte, 256)
	n, _, errno := syscall.RawSyscall6(syscall.SYS_KEYCTL, keyctlDescribe, uintptr(serial), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 || int(n) > len(buf) {
		return false
	}
	// "type;uid;gid;perm;description"
	f := strings.SplitN(strings.TrimRight(string(buf[:n]), "\x00"), ";", 5)
	if len(f) < 5 {
		return false
	}
	perm, err := strconv.ParseUint(f[3], 16, 32)
	return err == nil && perm&0x00ffffff&^keyUserView == 0
}
