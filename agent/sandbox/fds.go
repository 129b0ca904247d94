package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Linux close_range(2), which the syscall package lacks; the number is the same on every
// architecture.
const (
	sysCloseRange     = 436
	closeRangeCloexec = 1 << 2 // CLOSE_RANGE_CLOEXEC, Linux 5.11
)

// closeExtraFDs makes every descriptor above stderr close-on-exec, so that the program starts
// with 0, 1 and 2 and nothing else: not the status pipe, and not what the agent inherited without
// close-on-exec from its own parent (a shell's log pipe, which code could write forged log lines
// into). Go only closes what it opened itself; an inherited descriptor passes through every
// fork and exec unless someone closes it.
//
// Close-on-exec rather than close: until execve the Go runtime holds descriptors of its own
// (the netpoller's epoll), and closing those under it is fatal; and a failed execve must still be
// able to report on the status pipe. After a successful execve the effect is the same.
func closeExtraFDs() error {
	_, _, errno := syscall.RawSyscall(sysCloseRange, 3, uintptr(^uint32(0)), closeRangeCloexec)
	if errno == 0 {
		return nil
	}
	if errno != syscall.ENOSYS && errno != syscall.EINVAL {
		return fmt.Errorf("close_range: %w", errno)
	}
	// Kernels before 5.11: one descriptor at a time.
	return cloexecEach()
}

// cloexecEach sets FD_CLOEXEC on every open descriptor above stderr, as listed by /proc, or by
// trying every number below the open-files limit when /proc is not there.
func cloexecEach() error {
	var fds []int
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				fds = append(fds, fd)
			}
		}
	} else {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("open-files limit: %w", err)
		}
		for fd := 3; uint64(fd) < min(lim.Cur, 1<<20); fd++ {
			fds = append(fds, fd)
		}
	}
	for _, fd := range fds {
		// EBADF: the directory listing's own descriptor, or a number not in use.
		if _, _, errno := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, syscall.FD_CLOEXEC); errno != 0 && errno != syscall.EBADF {
			return fmt.Errorf("close-on-exec fd %d: %w", fd, errno)
		}
	}
	return nil
}
