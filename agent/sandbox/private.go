package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// writablePlaces are the world-writable directories a run may expect to write to (temporary
// files, lock files, POSIX shared memory). In the namespace tier each is a fresh tmpfs of the run,
// gone with its mount namespace; everything else of the host's file system is read-only.
// /var/lock is usually a symlink to /run/lock and then shares its tmpfs.
var writablePlaces = []string{"/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock"}

// Linux mount_setattr(2) (5.12), which the syscall package lacks; the number is the same on every
// architecture.
const (
	sysMountSetattr  = 442
	atRecursive      = 0x8000
	atFdcwd          = -100
	mountAttrRdonly  = 0x1
	mountAttrNosuid  = 0x2
	tmpfsMaxInodes   = 65536
	mqueueMountPoint = "/dev/mqueue"
)

// mountAttr is struct mount_attr.
type mountAttr struct {
	set, clr, propagation, usernsFD uint64
}

// readOnlyRoot makes every mount of the (private) mount namespace read-only and nosuid, so that
// no world-writable directory of the host (a /run/lock, a forgotten /srv/incoming) is a channel
// between runs or a way to fill the host's disk. Mounts made afterwards (the private tmpfs, the
// work directory) are not affected. Device nodes stay usable: a read-only mount only refuses
// changes to the file system itself.
func readOnlyRoot() error {
	attr := mountAttr{set: mountAttrRdonly | mountAttrNosuid}
	fd := atFdcwd
	atFdcwdArg := uintptr(fd)
	root := []byte("/\x00")
	_, _, errno := syscall.Syscall6(sysMountSetattr, atFdcwdArg, uintptr(unsafe.Pointer(&root[0])),
		atRecursive, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno == 0 {
		return nil
	}
	if errno != syscall.ENOSYS {
		return fmt.Errorf("mount_setattr / read-only: %w", errno)
	}
	return readOnlyEach()
}

// readOnlyEach is readOnlyRoot for kernels before 5.12: every mount point in turn, outermost
// first, keeping the flags it has (a bind remount must repeat them).
func readOnlyEach() error {
	points, err := mountPoints()
	if err != nil {
		return err
	}
	for _, p := range points {
		var st syscall.Statfs_t
		if err := syscall.Statfs(p, &st); err != nil {
			continue // a mount point under one that was covered: not reachable
		}
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY | syscall.MS_NOSUID)
		for _, f := range []struct{ st, ms int64 }{{0x4, syscall.MS_NODEV}, {0x8, syscall.MS_NOEXEC}, {0x400, syscall.MS_NOATIME}, {0x1000, syscall.MS_RELATIME}} {
			if st.Flags&f.st != 0 {
				flags |= uintptr(f.ms)
			}
		}
		if err := syscall.Mount("", p, "", flags, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", p, err)
		}
	}
	return nil
}

// mountPoints lists the mount points of this mount namespace in the order they were mounted.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			points = append(points, unescapeMountinfo(fields[4]))
		}
	}
	return points, sc.Err()
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// privateWritable mounts a fresh tmpfs of size bytes on every writable place that is a real
// directory (a symlink shares its target's), and the run's own POSIX message queue file system
// (that of its new IPC namespace) on /dev/mqueue.
func privateWritable(size uint64) error {
	opts := "mode=1777,size=" + strconv.FormatUint(size, 10) + ",nr_inodes=" + strconv.Itoa(tmpfsMaxInodes)
	for _, d := range writablePlaces {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
			return fmt.Errorf("private %s: %w", d, err)
		}
	}
	if fi, err := os.Lstat(mqueueMountPoint); err == nil && fi.IsDir() {
		if err := syscall.Mount("mqueue", mqueueMountPoint, "mqueue", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("private %s: %w", mqueueMountPoint, err)
		}
	}
	return nil
}

// hideKeyList covers /proc/keys and /proc/key-users of the new /proc with an empty file: they
// list the serial numbers of other processes' keys and keyrings of the run user, which a serial
// is all it takes to address.
func hideKeyList() error {
	for _, p := range []string{"/proc/keys", "/proc/key-users"} {
		if _, err := os.Stat(p); err != nil {
			continue // a kernel without keys
		}
		if err := syscall.Mount("/dev/null", p, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("hide %s: %w", p, err)
		}
	}
	return nil
}
