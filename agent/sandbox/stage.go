package sandbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
)

// The stages are this binary re-executed under these argv[0] values, with the plan in planVar
// and the status pipe on fd 3. Each stage reports a failure as one line "error <message>"; the
// init stage reports the program's end as "exit <code>" or "signal <number>".
const (
	// initStage is pid 1 of the new PID namespace: it builds the mount view, starts execStage,
	// reaps every orphan and, by exiting, makes the kernel kill whatever is left.
	initStage = "envfabric-sandbox-init"
	// execStage sets the limits, drops to the run user and becomes the program (execve).
	execStage = "envfabric-sandbox-exec"
	// probeStage exits 0: the default program of Probe.
	probeStage = "envfabric-sandbox-probe"
	planVar    = "ENVFABRIC_SANDBOX_PLAN"
	statusFD   = 3
)

// exitSetup is the status of a stage that failed before the program ran.
const exitSetup = 125

// init runs the stages before anything else of the binary (its main, its tests): that is what
// lets every binary importing this package, test binaries included, be its own sandbox helper.
func init() {
	switch os.Args[0] {
	case initStage, execStage:
		status := os.NewFile(statusFD, "status")
		var pl plan
		if err := json.Unmarshal([]byte(os.Getenv(planVar)), &pl); err != nil {
			fmt.Fprintf(status, "error decode plan: %v\n", err)
			os.Exit(exitSetup)
		}
		if os.Args[0] == initStage {
			os.Exit(runInit(pl, status))
		}
		os.Exit(runExec(pl, status))
	case probeStage:
		os.Exit(0)
	}
}

func fail(status *os.File, format string, args ...any) int {
	fmt.Fprintf(status, "error "+format+"\n", args...)
	return exitSetup
}

// runInit is pid 1 of the sandbox's PID namespace.
func runInit(pl plan, status *os.File) int {
	// First of all: nothing of the run may start outside its cgroup.
	if err := joinCgroups(pl.Cgroups); err != nil {
		return fail(status, "%v", err)
	}
	// What the agent inherited goes no further than this stage (the exec stage does the same for
	// every tier).
	if err := closeExtraFDs(); err != nil {
		return fail(status, "descriptors: %v", err)
	}
	if pl.Namespace {
		if err := setupMounts(pl); err != nil {
			return fail(status, "mounts: %v", err)
		}
		// The UTS namespace is new either way; a seccomp filter (systemd's ProtectHostname=)
		// may forbid naming it, which costs nothing but the name.
		_ = syscall.Sethostname([]byte("sandbox"))
		// A network namespace starts with loopback down; code that talks to itself over
		// 127.0.0.1 (test servers, kernels) expects it up. It is the run's own.
		if err := loopbackUp(); err != nil {
			return fail(status, "loopback: %v", err)
		}
		if pl.Slirp {
			if err := waitForNetwork(); err != nil {
				return fail(status, "%v", err)
			}
			if err := prohibitRoutes(pl.Deny); err != nil {
				return fail(status, "network: %v", err)
			}
		}
	}
	proc, err := os.StartProcess("/proc/self/exe", []string{execStage}, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{planVar + "=" + os.Getenv(planVar)},
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, status},
	})
	if err != nil {
		return fail(status, "start exec stage: %v", err)
	}
	// Reap everything: orphans of the program are re-parented to us. Only the program's own end
	// ends the sandbox.
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fail(status, "wait: %v", err)
		}
		if pid != proc.Pid {
			continue
		}
		if ws.Signaled() {
			fmt.Fprintf(status, "signal %d\n", int(ws.Signal()))
			return 128 + int(ws.Signal())
		}
		fmt.Fprintf(status, "exit %d\n", ws.ExitStatus())
		return ws.ExitStatus()
	}
}

// Linux constants the syscall package lacks.
const (
	rlimitNproc          = 6
	oPath                = 0x200000
	prSetNoNewPrivs      = 38
	prCapAmbient         = 47
	prCapAmbientClearAll = 4
	defaultTmpfsSize     = 256 << 20
)

// runExec sets the limits, drops privileges and execs the program.
func runExec(pl plan, status *os.File) int {
	// The filter is installed on this thread (and synchronised to the others), which is the one
	// that calls execve.
	runtime.LockOSThread()
	if !pl.PIDNamespace {
		// This is the first stage (the init stage joined otherwise).
		if err := joinCgroups(pl.Cgroups); err != nil {
			return fail(status, "%v", err)
		}
	}
	var filter []bpf.RawInstruction
	if pl.Filter {
		var err error
		if filter, err = filterProgram(); err != nil {
			return fail(status, "%v", err)
		}
	}
	// The program gets stdin, stdout and stderr, and not one descriptor more (the status pipe
	// included).
	if err := closeExtraFDs(); err != nil {
		return fail(status, "descriptors: %v", err)
	}
	// No setuid binary (su, sudo, ping) can give the code more than it starts with.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); errno != 0 {
		return fail(status, "no_new_privs: %v", errno)
	}
	// An agent given capabilities as ambient ones (systemd AmbientCapabilities=) would pass them
	// through execve to the code, even after the drop to the run user: clear them. EINVAL means
	// a kernel without ambient capabilities, so there are none.
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, prCapAmbient, prCapAmbientClearAll, 0, 0, 0, 0); errno != 0 && errno != syscall.EINVAL {
		return fail(status, "clear ambient capabilities: %v", errno)
	}
	limits := []struct {
		name     string
		resource int
		value    uint64
		set      bool
	}{
		{"core", syscall.RLIMIT_CORE, 0, true},
		{"cpu", syscall.RLIMIT_CPU, pl.Limits.CPUSeconds, pl.Limits.CPUSeconds > 0},
		{"fsize", syscall.RLIMIT_FSIZE, pl.Limits.FileBytes, pl.Limits.FileBytes > 0},
		{"nofile", syscall.RLIMIT_NOFILE, pl.Limits.OpenFiles, pl.Limits.OpenFiles > 0},
		// NPROC before the drop: setuid then marks the process, and its execve fails with EAGAIN
		// when the run user already has that many processes.
		{"nproc", rlimitNproc, pl.Limits.Processes, pl.Limits.Processes > 0},
	}
	for _, l := range limits {
		if !l.set {
			continue
		}
		if err := syscall.Setrlimit(l.resource, &syscall.Rlimit{Cur: l.value, Max: l.value}); err != nil {
			return fail(status, "rlimit %s=%d: %v", l.name, l.value, err)
		}
	}
	if err := joinFreshSessionKeyring(); err != nil {
		return fail(status, "%v", err)
	}
	if pl.Drop {
		if err := syscall.Setgroups([]int{}); err != nil {
			return fail(status, "setgroups: %v", err)
		}
		if err := syscall.Setgid(pl.GID); err != nil {
			return fail(status, "setgid %d: %v", pl.GID, err)
		}
		if err := syscall.Setuid(pl.UID); err != nil {
			return fail(status, "setuid %d: %v", pl.UID, err)
		}
		if err := sealUserKeyrings(); err != nil {
			return fail(status, "%v", err)
		}
	}
	if err := syscall.Chdir(pl.Dir); err != nil {
		return fail(status, "chdir %s: %v", pl.Dir, err)
	}
	// The address-space limit binds this Go process too, whose address space is already large:
	// after it, nothing may allocate (a heap growth would be fatal). So everything execve needs
	// is built first, and the limit and the execve are raw system calls.
	argv0, err := syscall.BytePtrFromString(pl.Path)
	if err != nil {
		return fail(status, "exec %s: %v", pl.Path, err)
	}
	argv, err := syscall.SlicePtrFromStrings(pl.Args)
	if err != nil {
		return fail(status, "exec %s: %v", pl.Path, err)
	}
	envv, err := syscall.SlicePtrFromStrings(pl.Env)
	if err != nil {
		return fail(status, "exec %s: %v", pl.Path, err)
	}
	// The failure reports are built now too: after a failed execve the limit is still in force.
	eaccesMsg := fmt.Sprintf("error eacces exec %s as uid %d: permission denied (every directory on the way to it, and the interpreter it links to, must be readable and searchable by the run user)\n", pl.Path, os.Getuid())
	eagainMsg := fmt.Sprintf("error exec %s: uid %d already has its process limit (RUN_LIMIT_PROCESSES=%d counts every run at once): resource temporarily unavailable\n", pl.Path, os.Getuid(), pl.Limits.Processes)
	otherMsg := fmt.Sprintf("error exec %s: ", pl.Path)
	// Last before the limit: from here on the code's rules bind this stage too.
	if filter != nil {
		if err := installFilter(filter); err != nil {
			return fail(status, "%v", err)
		}
	}
	as := syscall.Rlimit{Cur: pl.Limits.MemoryBytes, Max: pl.Limits.MemoryBytes}
	if pl.Limits.MemoryBytes > 0 {
		if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, 0, syscall.RLIMIT_AS, uintptr(unsafe.Pointer(&as)), 0, 0, 0); errno != 0 {
			return fail(status, "rlimit as=%d: %v", pl.Limits.MemoryBytes, errno)
		}
	}
	_, _, errno := syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(argv0)),
		uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])))
	runtime.KeepAlive(argv0)
	runtime.KeepAlive(argv)
	runtime.KeepAlive(envv)
	switch errno {
	case syscall.EACCES:
		rawWrite(statusFD, eaccesMsg)
	case syscall.EAGAIN:
		rawWrite(statusFD, eagainMsg)
	default:
		rawWrite(statusFD, otherMsg)
		rawWrite(statusFD, errno.Error()) // a static string: no allocation
		rawWrite(statusFD, "\n")
	}
	return exitSetup
}

// rawWrite writes s to fd without allocating.
func rawWrite(fd int, s string) {
	if len(s) > 0 {
		_, _, _ = syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(len(s)))
	}
}

// setupMounts builds the program's view of the file system in the new mount namespace: nothing
// propagates back to the host; the host's file system is read-only; /tmp, /var/tmp, /dev/shm,
// /run/lock and /dev/mqueue are private and empty; every Hide
// directory is an empty read-only tmpfs; the ReadOnly and Writable directories are bound back at
// their own paths; /proc shows only the new PID namespace.
func setupMounts(pl plan) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	// Open what is bound back before anything is hidden: afterwards its path leads into a tmpfs.
	type bind struct {
		path string
		fd   int
		ro   bool
	}
	var binds []bind
	for i, p := range slices.Concat(pl.ReadOnly, pl.Writable) {
		fd, err := syscall.Open(p, oPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", p, err)
		}
		binds = append(binds, bind{path: p, fd: fd, ro: i < len(pl.ReadOnly)})
	}
	// From here on the host's file system is read-only; what is mounted next is the run's own.
	if err := readOnlyRoot(); err != nil {
		return err
	}
	// The private writable places live in memory (charged to the run's memory cgroup): each no
	// bigger than one file may be, and never large.
	size := uint64(defaultTmpfsSize)
	if pl.Limits.FileBytes > 0 && pl.Limits.FileBytes < size {
		size = pl.Limits.FileBytes
	}
	if err := privateWritable(size); err != nil {
		return err
	}
	if pl.Slirp {
		if err := slirpResolvConf(); err != nil {
			return err
		}
	}
	var hidden []string
	for _, d := range outermost(pl.Hide) {
		// A directory under one already replaced (say DATA_ROOT under /tmp) is gone already.
		if !isDir(d) {
			continue
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
			return fmt.Errorf("hide %s: %w", d, err)
		}
		hidden = append(hidden, d)
	}
	for _, b := range binds {
		if err := os.MkdirAll(b.path, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", b.path, err)
		}
		src := "/proc/self/fd/" + strconv.Itoa(b.fd)
		if err := syscall.Mount(src, b.path, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", b.path, err)
		}
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_NOSUID | syscall.MS_NODEV)
		if b.ro {
			flags |= syscall.MS_RDONLY
		}
		if err := syscall.Mount("", b.path, "", flags, ""); err != nil {
			return fmt.Errorf("remount %s: %w", b.path, err)
		}
		syscall.Close(b.fd)
	}
	for _, d := range hidden {
		if err := syscall.Mount("", d, "", syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", d, err)
		}
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return hideKeyList()
}

// outermost drops the directories that lie inside another of dirs.
func outermost(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		d = filepath.Clean(d)
		inside := false
		for _, o := range dirs {
			o = filepath.Clean(o)
			if o != d && within(d, o) {
				inside = true
				break
			}
		}
		if !inside && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// within reports whether p is dir or lies below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// loopbackUp sets IFF_UP on lo with the classic ioctls, which need no netlink code.
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr [40]byte // struct ifreq: name[16], then a union whose first member is short flags
	copy(ifr[:], "lo")
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		return fmt.Errorf("SIOCGIFFLAGS: %w", errno)
	}
	flags := binary.NativeEndian.Uint16(ifr[16:18]) | syscall.IFF_UP
	binary.NativeEndian.PutUint16(ifr[16:18], flags)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		return fmt.Errorf("SIOCSIFFLAGS: %w", errno)
	}
	return nil
}
