package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The stage gives the program stdin, stdout and stderr only (not an inherited descriptor without
// close-on-exec, nor its status pipe), and a host file system that is read-only wherever the
// sandbox did not mount something of the run's own: with close_range and mount_setattr, and the
// ways of kernels without them (before 5.11 and 5.12).
func TestStageDescriptorsAndReadOnlyHost(t *testing.T) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), syscall.F_SETFD, 0); errno != 0 {
		t.Fatal(errno)
	}
	hide := t.TempDir()
	for _, fallbacks := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallbacks=%v", fallbacks), func(t *testing.T) {
			cfg := Config{Tier: Namespace, UID: uid, GID: gid, Hide: []string{hide}}
			if err := cfg.Probe(Program{}); err != nil {
				t.Skipf("namespace tier unavailable: %v", err)
			}
			cmd, err := cfg.Command(Program{Path: "/bin/sh", Args: []string{"sh", "-c", "ls /proc/self/fd; echo --; cat /proc/self/mountinfo"},
				Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
			if err != nil {
				t.Fatal(err)
			}
			cmd.plan.fallbacks = fallbacks
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if err := cmd.SetupError(); err != nil {
				t.Fatal(err)
			}
			fds, mounts, _ := strings.Cut(out.String(), "--\n")
			// ls holds one more: the directory it lists.
			if got := strings.Fields(fds); len(got) != 4 || got[0] != "0" || got[1] != "1" || got[2] != "2" {
				t.Errorf("descriptors: got %q; want 0 1 2 and ls's own", got)
			}
			own := map[string]bool{"/tmp": true, "/var/tmp": true, "/dev/shm": true, "/run/lock": true, "/var/lock": true,
				"/dev/mqueue": true, "/proc": true, "/proc/keys": true, "/proc/key-users": true}
			// Only the last mount on a mount point is reachable (one mounted over another, as
			// /dev/pts may be, is hidden by it).
			options := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(mounts), "\n") {
				if f := strings.Fields(line); len(f) >= 6 {
					options[f[4]] = f[5]
				}
			}
			checked := 0
			for point, opts := range options {
				if own[point] || within(point, hide) {
					continue
				}
				checked++
				if !strings.Contains(","+opts+",", ",ro,") || !strings.Contains(","+opts+",", ",nosuid,") {
					t.Errorf("host mount %s: options %s; want ro and nosuid", point, opts)
				}
			}
			if checked == 0 {
				t.Errorf("no host mount in the sandbox's view:\n%s", mounts)
			}
		})
	}
}
