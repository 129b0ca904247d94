package sandbox

import (
	"os"
	"syscall"
	"testing"
)

// The fallback for kernels without CLOSE_RANGE_CLOEXEC marks an inherited descriptor too.
func TestCloexecEach(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	flags := func() uintptr {
		v, _, errno := syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), syscall.F_GETFD, 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		return v
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), syscall.F_SETFD, 0); errno != 0 {
		t.Fatal(errno)
	}
	if flags()&syscall.FD_CLOEXEC != 0 {
		t.Fatal("FD_CLOEXEC still set")
	}
	if err := cloexecEach(); err != nil {
		t.Fatal(err)
	}
	if flags()&syscall.FD_CLOEXEC == 0 {
		t.Errorf("fd %d: got no FD_CLOEXEC; want it set", w.Fd())
	}
}
