// Package sandbox starts one program (user code's interpreter) under the isolation tier the
// operator chose: a process tier (own session, resource limits, nothing of the agent's
// environment), a user tier (the same, as an unprivileged run user), and a namespace tier (the
// same, plus PID, mount, network, IPC and UTS namespaces: the program sees its environment
// read-only, none of the service's data, and no network).
//
// The isolation is set up by a small stage program in C (stage/envfabric-sandbox.c, found as
// stageprog.go says): Go cannot run code between fork and exec, and mounts, rlimits and the drop
// to the run user must happen there. The agent hands it the run's descriptors and a plan
// (plan.go, ready.go); it makes the tier's namespaces, its child is the namespace's init, and the
// init's child becomes the program.
package sandbox

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Tier is an isolation level; each includes everything of the weaker ones.
type Tier string

const (
	// Process: own session and process group, resource limits, no core dumps, an environment
	// allow-list, stdin closed, no new privileges. The code runs as the agent's own user.
	Process Tier = "process"
	// User: Process, and the code runs as the run user (the agent must be root).
	User Tier = "user"
	// Namespace: User in fresh PID, mount, IPC and UTS namespaces and (unless allowed) a network
	// namespace with only loopback. The environment is mounted read-only, DATA_ROOT and the other
	// hidden directories are empty, /tmp, /var/tmp and /dev/shm are private.
	Namespace Tier = "namespace"
)

// Tiers lists the tiers, strongest first.
var Tiers = []Tier{Namespace, User, Process}

// ParseTier reads a tier name.
func ParseTier(s string) (Tier, error) {
	for _, t := range Tiers {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("unknown sandbox tier %q: want namespace, user or process", s)
}

// DropsPrivileges reports whether code runs as the run user rather than the agent's user.
func (t Tier) DropsPrivileges() bool { return t == User || t == Namespace }

// Limits are the resource limits of a run; zero leaves a resource unlimited (as the agent has it).
// Core dumps are always off.
type Limits struct {
	CPUSeconds  uint64 `json:"cpu_seconds,omitempty"`
	MemoryBytes uint64 `json:"memory_bytes,omitempty"` // address space (RLIMIT_AS)
	FileBytes   uint64 `json:"file_bytes,omitempty"`   // largest file written (RLIMIT_FSIZE)
	OpenFiles   uint64 `json:"open_files,omitempty"`
	// Processes is RLIMIT_NPROC: the kernel counts every process of the run user, across runs.
	Processes uint64 `json:"processes,omitempty"`
}

// Config is how every run is isolated; the agent's config package fills it.
type Config struct {
	Tier Tier
	// UID and GID are the run user's (user and namespace tiers). Supplementary groups are dropped.
	UID, GID int
	// PIDNamespace gives the process and user tiers a PID namespace (the namespace tier always
	// has one). An unprivileged agent gets it inside a user namespace mapping only its own ids.
	PIDNamespace bool
	// AllowNetwork gives the namespace tier's runs the outside network through slirp4netns
	// (network.go), never the host's own addresses, nor NetworkDeny (CIDRs).
	AllowNetwork bool
	NetworkDeny  []string
	// Slirp4netns is the slirp4netns binary; empty means the one on PATH.
	Slirp4netns string
	Limits      Limits
	// RunLimits bound the run as a whole through a cgroup per run made under Cgroups (from
	// FindCgroups), which they need.
	RunLimits RunLimits
	Cgroups   *Cgroups
	// Hide are directories whose content the namespace tier replaces by an empty read-only tmpfs
	// (DATA_ROOT, ENVS_BASE_PATH, UV_CACHE_DIR, the agent's HOME); a program's ReadOnly and
	// Writable directories are mounted back inside them.
	Hide []string
	// Stage is the stage program; empty means envfabric-sandbox next to the running executable
	// (stageprog.go).
	Stage string
}

// Describe is the one-line summary for logs and /readyz.
func (c Config) Describe() string {
	var b strings.Builder
	b.WriteString(string(c.Tier))
	if c.Tier.DropsPrivileges() {
		fmt.Fprintf(&b, " uid=%d gid=%d", c.UID, c.GID)
	}
	b.WriteString(" pid_namespace=" + strconv.FormatBool(c.pidNamespace()))
	if c.Tier.DropsPrivileges() {
		b.WriteString(" syscall_filter=seccomp")
	}
	if c.RunLimits.any() {
		fmt.Fprintf(&b, " cgroup=%s run_memory_bytes=%d run_processes=%d", c.Cgroups.Describe(), c.RunLimits.MemoryBytes, c.RunLimits.Processes)
	}
	if c.Tier == Namespace {
		b.WriteString(" network=" + map[bool]string{true: "slirp4netns(no-host)", false: "none"}[c.AllowNetwork])
	}
	return b.String()
}

func (c Config) pidNamespace() bool {
	return c.Tier == Namespace || c.PIDNamespace
}

// Program is what to run.
type Program struct {
	// Path is the executable; Args its argv (Args[0] included).
	Path string
	Args []string
	// Env is the program's whole environment.
	Env []string
	// Dir is the working directory.
	Dir string
	// ReadOnly directories are mounted read-only at their own path (namespace tier), even inside
	// a hidden directory; Writable ones read-write.
	ReadOnly []string
	Writable []string
}

// Cmd is a program prepared to run in the sandbox. Set Stdin (nil or an *os.File), Stdout and
// Stderr (files are handed to the program as they are, other writers through a pipe) on Cmd.Cmd,
// then Start and Wait; ExitCode and SetupError tell what happened. The stage program, not
// exec.Cmd, starts the program: the exec.Cmd's other fields (ExtraFiles, StdinPipe and the like)
// are not used, and after Start Cmd.Cmd is the stage's process.
type Cmd struct {
	*exec.Cmd
	statusR, statusW *os.File
	planF            *os.File
	status           []byte
	plan             plan
	runLimits        RunLimits
	cgroups          *Cgroups
	cgroup           *runCgroup
	oomKills         uint64
	// The user-mode network: goW tells the init stage it is ready.
	slirpBin string
	goR, goW *os.File
	slirp    *slirp
	// netPid is the process whose network namespace is the run's.
	netPid int
	stage  string // the stage program
	// Output to writers that are not files goes through pipes read by these (ready.go).
	copies    sync.WaitGroup
	copyPipes []*os.File
}

// Command prepares p under c. The returned command's process is the leader of a new session
// (its pid is the process group to kill); with a PID namespace it is the namespace's init, or,
// when the run went to a ready stage (ready.go), the init's parent, with which the init dies:
// either way killing it kills every process in the namespace.
func (c Config) Command(p Program) (*Cmd, error) {
	pl := plan{
		Namespace:    c.Tier == Namespace,
		PIDNamespace: c.pidNamespace(),
		AllowNetwork: c.AllowNetwork,
		Drop:         c.Tier.DropsPrivileges(),
		Filter:       c.Tier.DropsPrivileges(),
		UID:          c.UID,
		GID:          c.GID,
		Limits:       c.Limits,
		Hide:         c.Hide,
		ReadOnly:     p.ReadOnly,
		Writable:     p.Writable,
		Path:         p.Path,
		Args:         p.Args,
		Env:          p.Env,
		Dir:          p.Dir,
	}
	if pl.Drop && (pl.UID == 0 || pl.GID == 0) {
		return nil, fmt.Errorf("sandbox tier %s: refusing to run code as uid %d gid %d", c.Tier, pl.UID, pl.GID)
	}
	if pl.Filter {
		if _, err := filterProgram(); err != nil {
			return nil, fmt.Errorf("sandbox tier %s: %w", c.Tier, err)
		}
	}
	if c.RunLimits.any() && c.Cgroups == nil {
		return nil, fmt.Errorf("whole-run limits (%+v) need the host's cgroups, and none were found", c.RunLimits)
	}
	stagePath, err := c.stageProgram()
	if err != nil {
		return nil, err
	}
	// Only a user namespace lets an unprivileged agent make a PID namespace. The stage maps the
	// agent's ids to themselves and nothing else, so the code is no one new, and the
	// capabilities it would hold in there end at the exec stage's execve.
	pl.UserNamespace = pl.PIDNamespace && !pl.Namespace && os.Geteuid() != 0
	var slirpBin string
	if pl.Namespace && pl.AllowNetwork {
		if slirpBin, err = exec.LookPath(cmp.Or(c.Slirp4netns, "slirp4netns")); err != nil {
			return nil, fmt.Errorf("RUN_ALLOW_NETWORK needs slirp4netns (Debian package slirp4netns): %w", err)
		}
		if pl.Deny, err = deniedNetworks(c.NetworkDeny); err != nil {
			return nil, err
		}
		pl.Slirp = true
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("status pipe: %w", err)
	}
	var goR, goW *os.File
	if pl.Slirp {
		if goR, goW, err = os.Pipe(); err != nil {
			statusR.Close()
			statusW.Close()
			return nil, fmt.Errorf("network pipe: %w", err)
		}
	}
	// The exec.Cmd carries the caller's Stdin, Stdout and Stderr until Start; from then on it is
	// the stage's process.
	cmd := &exec.Cmd{Path: stagePath, Args: []string{readyArg0}}
	return &Cmd{Cmd: cmd, statusR: statusR, statusW: statusW, plan: pl, runLimits: c.RunLimits, cgroups: c.Cgroups,
		stage: stagePath, slirpBin: slirpBin, goR: goR, goW: goW}, nil
}

// Start makes the run's cgroup (with whole-run limits) and starts the sandbox.
func (c *Cmd) Start() error {
	err := c.start()
	c.statusW.Close()
	if c.planF != nil {
		c.planF.Close()
	}
	if c.goR != nil {
		c.goR.Close()
	}
	if err == nil && c.plan.Slirp {
		err = c.startNetwork()
	}
	if err != nil {
		c.statusR.Close()
		c.closeCopies()
		if c.cgroup != nil {
			c.cgroup.remove()
		}
		return err
	}
	return nil
}

func (c *Cmd) start() error {
	var r *readyStage
	if c.runLimits.any() {
		r = c.cgroups.take(c.runLimits, c.stage)
	}
	for {
		if r == nil {
			var rc *runCgroup
			if c.runLimits.any() {
				var err error
				if rc, err = c.cgroups.create(c.runLimits); err != nil {
					return err
				}
			}
			var err error
			if r, err = newReady(c.stage, c.cgroups, rc, false); err != nil {
				return err
			}
		}
		unused := r
		f, err := planFile(c.plan)
		if err != nil {
			c.cgroups.later(func() { discard(unused) })
			return err
		}
		c.planF = f
		err = c.startReady(r, f)
		if err == nil || c.Cmd == r.cmd || r.fresh {
			if err != nil && c.Cmd != r.cmd {
				c.cgroups.later(func() { discard(unused) })
			}
			return err
		}
		// A ready stage that went away while it waited (it did not take the run): a fresh one.
		c.cgroups.later(func() { discard(unused) })
		c.planF, r = nil, nil
		f.Close()
	}
}

// startNetwork connects the started sandbox's network namespace and lets its init stage go on;
// if that fails, the sandbox is killed (its init stage sees EOF and gives up too).
func (c *Cmd) startNetwork() error {
	s, err := startSlirp(c.slirpBin, c.netPid)
	if err == nil {
		c.slirp = s
		_, err = c.goW.Write([]byte{1})
	}
	c.goW.Close()
	if err != nil {
		_ = c.Process.Kill()
		_ = c.Cmd.Wait()
		if c.slirp != nil {
			c.slirp.stop()
		}
		return fmt.Errorf("network for the run: %w", err)
	}
	return nil
}

// Wait waits for the sandbox to exit and collects what its stages reported.
func (c *Cmd) Wait() error {
	err := c.Cmd.Wait()
	c.copies.Wait()
	// Every writer of the status pipe is gone once the stage exited: the program never holds it
	// (close-on-exec) and the init stage's namespace died with it. The deadline only guards
	// against a bug.
	_ = c.statusR.SetReadDeadline(time.Now().Add(2 * time.Second))
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(c.statusR)
	c.statusR.Close()
	c.status = buf.Bytes()
	if c.slirp != nil {
		c.slirp.stop()
	}
	if c.cgroup != nil {
		c.oomKills = c.cgroup.oomKills()
		// Removed after the answer: the kernel takes a moment to release a memory cgroup.
		c.cgroups.release(c.cgroup)
	}
	return err
}

// MemoryKilled reports whether the kernel killed a process of the run because the run as a whole
// reached its memory limit (RunLimits.MemoryBytes).
func (c *Cmd) MemoryKilled() bool { return c.oomKills > 0 }

// ErrSetup is wrapped by SetupError: the sandbox could not be built or the program not started.
var ErrSetup = errors.New("sandbox set-up failed")

// ErrNotExecutable is wrapped by SetupError when the program could not be executed for lack of
// permission (for example an interpreter the run user cannot reach).
var ErrNotExecutable = errors.New("program not executable in the sandbox")

// SetupError is the failure a stage reported before the program ran, if any.
func (c *Cmd) SetupError() error {
	for _, line := range strings.Split(string(c.status), "\n") {
		if msg, ok := strings.CutPrefix(line, "error "); ok {
			if strings.HasPrefix(msg, "eacces ") {
				return fmt.Errorf("%w: %w: %s", ErrSetup, ErrNotExecutable, strings.TrimPrefix(msg, "eacces "))
			}
			return fmt.Errorf("%w: %s", ErrSetup, msg)
		}
	}
	return nil
}

// ExitCode is the program's exit status, -1 when a signal killed it (or the sandbox).
func (c *Cmd) ExitCode() int {
	for _, line := range strings.Split(string(c.status), "\n") {
		if v, ok := strings.CutPrefix(line, "exit "); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
		if strings.HasPrefix(line, "signal ") {
			return -1
		}
	}
	if c.ProcessState == nil {
		return -1
	}
	return c.ProcessState.ExitCode()
}

// Probe runs prog (by default a no-op: the stage program) under c and reports why it cannot
// run there. The agent refuses to start when its configured tier fails this.
func (c Config) Probe(prog Program) error {
	// The probe checks the isolation, not the memory bound: a program's start-up may need more
	// address space than a run's RLIMIT_AS allows (a Go binary's runtime did, now and then),
	// refusing a tier that works. The limit itself is a setrlimit that cannot fail for a lower
	// value.
	c.Limits.MemoryBytes = 0
	if prog.Path == "" {
		// The stage program itself, which exits 0 under this name (in the sandbox,
		// /proc/self/exe is the stage).
		prog = Program{Path: "/proc/self/exe", Args: []string{probeStage}}
	}
	if prog.Dir == "" {
		prog.Dir = "/"
	}
	if prog.Env == nil {
		prog.Env = []string{"PATH=/usr/bin:/bin"}
	}
	cmd, err := c.Command(prog)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	waitErr := cmd.Wait()
	if err := cmd.SetupError(); err != nil {
		return err
	}
	if code := cmd.ExitCode(); code != 0 {
		return fmt.Errorf("probe %s exited with status %d (%v): %s", filepath.Base(prog.Path), code, waitErr, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
