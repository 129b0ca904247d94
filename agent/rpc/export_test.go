package rpc

import (
	"os"
	"syscall"
	"testing"

	"github.com/envfabric/envfabric/shared/envid"
)

// holdLock takes key's lock on the shared storage from outside the agent, as another agent
// would, until the returned function is called.
func holdLock(t *testing.T, envsBase string, key envid.Key) (release func()) {
	t.Helper()
	path := (&Server{cfg: Config{EnvsBasePath: envsBase}}).lockPath(key)
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			fh.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// HoldLock is holdLock for the rpc_test package.
var HoldLock = holdLock
