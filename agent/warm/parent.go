package warm

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
)

//go:embed server.py
var serverScript string

// modulesFile is where a child lists the top-level modules it ended with (written after the
// code ran; read with O_NOFOLLOW and filtered, since the code could have written it too).
const modulesFile = ".envfabric-modules"

// identifier is what a module name must look like to be preloaded.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// drainGrace bounds how long output pipes are read after the run's processes were killed (as in
// agent/runner).
const drainGrace = 2 * time.Second

// errNotStarted: the run never reached its code (the parent died or refused before "go"); it can
// go cold with nothing done twice.
var errNotStarted = errors.New("warm run not started")

// message is what a parent says on its control socket.
type message struct {
	Ready     bool     `json:"ready"`
	Pid       int      `json:"pid"`
	Ppid      int      `json:"ppid"`
	Pgid      int      `json:"pgid"`
	Preloaded []string `json:"preloaded"`
	Failed    []string `json:"failed"`
	Seconds   float64  `json:"seconds"`
	Exit      *int     `json:"exit"`
	Signal    int      `json:"signal"`
	Clean     *bool    `json:"clean"`
	Error     string   `json:"error"`
	hostPid   int
}

// parent is one warm interpreter: a python process in its own sandbox, serving one run at a
// time.
type parent struct {
	b       *build
	cfg     *Config
	log     *slog.Logger
	cmd     *sandbox.Cmd
	conn    *net.UnixConn
	runsDir string
	release func()
	msgs    chan message
	done    chan struct{} // closed when the sandbox exited
	started time.Time
	hostPid int
	guard   string
	baseMem uint64
	preload []string // what it was asked to import
	runs    int
	seq     atomic.Int64
	stopped sync.Once
	reading bool
	// nextGroup is the next run's cgroup, made after the last run (off its answer's path).
	nextGroup *sandbox.RunGroup
	// armed is the next run's child, forked ahead and already in that run's cgroup: a run finds
	// the fork and the cgroup join (an RCU grace period on cgroup v1) done.
	armed *armedChild
	wg    sync.WaitGroup
}

// armedChild is a child forked ahead of its run, waiting for it on conn.
type armedChild struct {
	conn  *net.UnixConn
	pid   int // in the agent's PID namespace
	group *sandbox.RunGroup
	work  string // its working directory, in which it already is
	at    time.Time
}

// kill ends an armed child that will not run, and removes its cgroup.
func (a *armedChild) kill() {
	_ = syscall.Kill(-a.pid, syscall.SIGKILL)
	_ = syscall.Kill(a.pid, syscall.SIGKILL)
	if a.group != nil {
		a.group.KillAll()
		a.group.Remove()
	}
	a.conn.Close()
	_ = os.RemoveAll(a.work)
}

// arm forks the next run's child and puts it in its cgroup. A parent that cannot arm is of no
// use: the error means it was stopped.
func (p *parent) arm() error {
	sb := p.cfg.Sandbox
	work := filepath.Join(p.runsDir, strconv.FormatInt(p.seq.Add(1), 10))
	if err := os.Mkdir(work, 0o700); err != nil {
		return fmt.Errorf("make work dir: %w", err)
	}
	if sb.Tier.DropsPrivileges() {
		if err := os.Chown(work, sb.UID, sb.GID); err != nil {
			_ = os.RemoveAll(work)
			return fmt.Errorf("hand the work dir to the run user: %w", err)
		}
	}
	runConn, childEnd, err := runSocket()
	if err != nil {
		_ = os.RemoveAll(work)
		return err
	}
	req, _ := json.Marshal(map[string]any{"arm": true, "dir": work, "env": runner.Env(p.b.spec.Venv, work), "guard": p.guard})
	_, _, err = p.conn.WriteMsgUnix(req, unix.UnixRights(int(childEnd.Fd())), nil)
	childEnd.Close()
	if err != nil {
		runConn.Close()
		_ = os.RemoveAll(work)
		p.stop()
		return fmt.Errorf("arm the warm interpreter: %w", err)
	}
	// The child's first message: its host pid, before it has run anything.
	pid, err := hello(runConn, p.cfg.ReadyTimeout)
	if err != nil {
		runConn.Close()
		_ = os.RemoveAll(work)
		p.stop()
		return err
	}
	a := &armedChild{conn: runConn, pid: pid, work: work, at: time.Now()}
	if p.limited() {
		a.group, p.nextGroup = p.nextGroup, nil
		if a.group == nil {
			a.group, err = sb.Cgroups.NewRunGroup(sb.RunLimits)
		}
		if err == nil {
			if err = a.group.Add(pid); err != nil {
				a.group.Remove()
				a.group = nil
			}
		}
		if err != nil {
			a.kill()
			p.stop()
			return fmt.Errorf("put the warm child in its cgroup: %w", err)
		}
	}
	p.armed = a
	return nil
}

// startParent starts a parent for b and waits until it has preloaded (or failed).
func startParent(ctx context.Context, cfg *Config, b *build, preload []string, log *slog.Logger) (*parent, error) {
	p := &parent{b: b, cfg: cfg, log: log, msgs: make(chan message, 4), done: make(chan struct{}), started: time.Now(), preload: preload}
	ok := false
	defer func() {
		if !ok {
			p.stop()
		}
	}()
	if b.spec.Hold != nil {
		release, err := b.spec.Hold(ctx)
		if err != nil {
			return nil, fmt.Errorf("hold build %s: %w", b.spec.ID, err)
		}
		p.release = release
	}
	sb := cfg.Sandbox
	dir, err := os.MkdirTemp(cfg.RunsDir, "envfabric-run-warm-*")
	if err != nil {
		return nil, fmt.Errorf("make runs dir: %w", err)
	}
	p.runsDir = dir
	// The run user passes through to its own work directory, and may list nothing else.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, fmt.Errorf("make runs dir: %w", err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "warm-control"), os.NewFile(uintptr(fds[1]), "warm-control-parent")
	defer theirs.Close()
	// Every message then carries its sender's credentials: the parent's host pid.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		ours.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	p.conn = fc.(*net.UnixConn)

	venv := b.spec.Venv
	python := filepath.Join(venv, "bin", "python")
	conf, _ := json.Marshal(map[string]any{
		"preload":       preload,
		"pid_namespace": sb.Warm(),
		"namespace":     sb.Namespaced(),
		"sys_keyctl":    unix.SYS_KEYCTL,
		"sys_shmctl":    unix.SYS_SHMCTL,
		"sys_msgctl":    unix.SYS_MSGCTL,
		"sys_semctl":    unix.SYS_SEMCTL,
	})
	cmd, err := sb.Command(sandbox.Program{
		Path:     python,
		Args:     []string{python, "-c", serverScript, string(conf)},
		Env:      runner.Env(venv, dir),
		Dir:      "/",
		ReadOnly: runner.ReadOnlyDirs(venv, sb),
		Writable: []string{dir},
	})
	if err != nil {
		return nil, err
	}
	lw := &logWriter{log: log, build: b.spec.ID}
	cmd.Stdin = theirs
	cmd.Stdout = lw
	cmd.Stderr = lw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start warm interpreter: %w", err)
	}
	p.cmd = cmd
	p.wg.Go(func() {
		_ = cmd.Wait()
		if err := cmd.SetupError(); err != nil {
			log.Warn("warm interpreter sandbox", "build", b.spec.ID, "err", err)
		}
		close(p.done)
		p.conn.Close()
	})
	p.reading = true
	p.wg.Go(p.read)

	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case m, alive := <-p.msgs:
		if !alive || !m.Ready {
			return nil, fmt.Errorf("warm interpreter for build %s ended before it was ready (%s)", b.spec.ID, m.Error)
		}
		p.hostPid = m.hostPid
		if p.guard, err = sandbox.GuardProgram([]int{m.Pid, m.Ppid}, []int{m.Pgid}); err != nil {
			return nil, err
		}
		p.baseMem = rss(p.hostPid)
		if err := p.arm(); err != nil {
			return nil, fmt.Errorf("warm interpreter for build %s: %w", b.spec.ID, err)
		}
		log.Info("warm interpreter ready", "build", b.spec.ID, "preloaded", m.Preloaded, "failed", m.Failed,
			"seconds", m.Seconds, "rss_bytes", p.baseMem)
	case <-timer.C:
		return nil, fmt.Errorf("warm interpreter for build %s not ready after %s", b.spec.ID, cfg.ReadyTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ok = true
	return p, nil
}

// read forwards the parent's messages to msgs, and closes it when the parent is gone.
func (p *parent) read() {
	defer close(p.msgs)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(16))
	for {
		n, oobn, _, _, err := p.conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return
		}
		var m message
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			p.log.Warn("warm interpreter said something unreadable", "build", p.b.spec.ID, "err", err)
			return
		}
		m.hostPid = credPid(oob[:oobn])
		p.msgs <- m
	}
}

// credPid is the sender's pid, in the agent's PID namespace, from SCM_CREDENTIALS.
func credPid(oob []byte) int {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for i := range cms {
		if c, err := unix.ParseUnixCredentials(&cms[i]); err == nil {
			return int(c.Pid)
		}
	}
	return 0
}

func (p *parent) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop kills the parent (its sandbox: with a PID namespace everything in it), waits for it and
// releases what it held. Idempotent.
func (p *parent) stop() {
	p.stopped.Do(func() {
		if p.conn != nil {
			p.conn.Close()
		}
		if p.cmd != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Kill()
		}
		if p.reading {
			for range p.msgs { // what nobody will read any more, until the reader ends
			}
		}
		p.wg.Wait()
		if p.armed != nil {
			p.armed.kill()
			p.armed = nil
		}
		if p.nextGroup != nil {
			p.nextGroup.Remove()
		}
		if p.runsDir != "" {
			_ = os.RemoveAll(p.runsDir)
		}
		if p.release != nil {
			p.release()
		}
	})
}

// memory is the parent's proportional share of memory now.
// It is the parent's resident set, not its proportional share: the pages it shares with its
// children (an armed one, one tearing down after its answer) would split that share at random
// moments, while the resident set is what the parent holds whoever forked from it. What a child
// adds is its run's, charged to the run's cgroup.
func (p *parent) memory() uint64 { return rss(p.hostPid) }

// run runs spec in a child of p. errNotStarted means nothing of the code ran. Otherwise finish
// must be called once the answer is out: it removes what the run left (the parent's report that it
// cleaned up, the run's cgroup and work directory, the message queues) and prepares the next
// run's cgroup, off the answer's path; false means the parent was retired.
func (p *parent) run(ctx context.Context, spec runner.Spec) (res runner.Result, mods []string, finish func() bool, err error) {
	sb := p.cfg.Sandbox
	start := time.Now()
	if p.armed == nil {
		// Not armed ahead (arming after the last run failed): now, then.
		if err := p.arm(); err != nil {
			return runner.Result{}, nil, nil, fmt.Errorf("%w: %w", errNotStarted, err)
		}
	}
	a := p.armed
	p.armed = nil
	work := a.work
	removeWork := func() { _ = os.RemoveAll(work) }
	started := false
	defer func() {
		if !started {
			a.kill() // it waits for a run that will not come; the parent waits for it
			p.stop()
		}
		if finish == nil {
			removeWork()
		}
	}()
	main := filepath.Join(work, "main.py")
	if err := os.WriteFile(main, []byte(spec.Code), 0o600); err != nil {
		return runner.Result{}, nil, nil, fmt.Errorf("%w: write main.py: %w", errNotStarted, err)
	}
	if sb.Tier.DropsPrivileges() {
		if err := os.Chown(main, sb.UID, sb.GID); err != nil {
			return runner.Result{}, nil, nil, fmt.Errorf("%w: hand main.py to the run user: %w", errNotStarted, err)
		}
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return runner.Result{}, nil, nil, fmt.Errorf("%w: pipe: %w", errNotStarted, err)
	}
	defer stdoutR.Close()
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutW.Close()
		return runner.Result{}, nil, nil, fmt.Errorf("%w: pipe: %w", errNotStarted, err)
	}
	defer stderrR.Close()
	childPid, group := a.pid, a.group
	forked := time.Now()
	_, _, err = a.conn.WriteMsgUnix([]byte(`{"run":true}`), unix.UnixRights(int(stdoutW.Fd()), int(stderrW.Fd())), nil)
	stdoutW.Close()
	stderrW.Close()
	defer a.conn.Close()
	if err != nil {
		// The armed child is gone (killed while it waited): nothing of the code ran.
		return runner.Result{}, nil, nil, fmt.Errorf("%w: hand the run to the warm child: %w", errNotStarted, err)
	}
	started = true
	sent := time.Now()

	stdout, stderr := runner.NewCapped(spec.MaxOutput), runner.NewCapped(spec.MaxOutput)
	var drained sync.WaitGroup
	drained.Go(func() { _, _ = io.Copy(stdout, stdoutR) })
	drained.Go(func() { _, _ = io.Copy(stderr, stderrR) })
	// drainDone is closed when both output streams reached their end.
	drainDone := make(chan struct{})
	go func() { drained.Wait(); close(drainDone) }()
	kill := func() {
		_ = syscall.Kill(-childPid, syscall.SIGKILL)
		if group != nil {
			group.KillAll()
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	expired := runCtx.Done()
	// Once the output is closed, the exit status is read as soon as the kernel has it, before the
	// child's teardown; the parent's report (after waitpid) covers every other end.
	reported := make(chan int, 1)
	var watcher sync.WaitGroup
	defer watcher.Wait()
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	watcher.Go(func() {
		select {
		case <-drainDone:
		case <-watchCtx.Done():
			return
		}
		if code, ok := exitedEarly(watchCtx, childPid); ok {
			reported <- code
		}
	})
	var timedOut, parentGone bool
	exitCode := -1
wait:
	for {
		select {
		case code := <-reported:
			exitCode = code
			break wait
		case m, alive := <-p.msgs:
			if !alive {
				parentGone = true
				break wait
			}
			if m.Exit != nil {
				exitCode = *m.Exit
				break wait
			}
		case <-expired:
			expired = nil
			timedOut = ctx.Err() == nil
			kill()
		}
	}
	exited := time.Now()
	// Whatever the code left running in its group, or anywhere in its cgroup, goes too.
	kill()
	var oom uint64
	if group != nil {
		oom = group.OOMKills()
	}
	select {
	case <-drainDone:
	case <-time.After(drainGrace):
		stdoutR.Close()
		stderrR.Close()
		<-drainDone
	}
	res = runner.Result{
		Stdout:          stdout.Bytes(),
		Stderr:          stderr.Bytes(),
		StdoutTruncated: stdout.Truncated(),
		StderrTruncated: stderr.Truncated(),
		ExitCode:        exitCode,
		Duration:        time.Since(start),
		TimedOut:        timedOut,
	}
	switch {
	case timedOut:
		res.ExitReason = runner.ExitTimeout
	case oom > 0:
		res.ExitReason = runner.ExitMemory
	case exitCode == -1:
		res.ExitReason = runner.ExitSignal
	default:
		res.ExitReason = runner.ExitedNormally
	}
	mods = readModules(filepath.Join(work, modulesFile))
	answered := time.Now()
	finish = func() bool {
		defer func() {
			p.log.Debug("warm run", "build", p.b.spec.ID, "prepare", forked.Sub(start), "hand over", sent.Sub(forked),
				"run", exited.Sub(sent), "drain", answered.Sub(exited), "clean and arm", time.Since(answered))
		}()
		defer removeWork()
		if group != nil {
			group.Remove()
		}
		switch {
		case parentGone, !p.awaitClean():
			p.stop()
			return false
		case sb.Namespaced():
			// POSIX message queues: the one thing of its IPC namespace the parent cannot list.
			if err := sandbox.WipeMessageQueues(p.hostPid); err != nil {
				p.log.Warn("warm interpreter retired: its message queues could not be removed", "build", p.b.spec.ID, "err", err)
				p.stop()
				return false
			}
		}
		if p.limited() {
			if g, err := sb.Cgroups.NewRunGroup(sb.RunLimits); err == nil {
				p.nextGroup = g
			}
		}
		// The next run's child, forked and placed now, off any answer's path.
		if err := p.arm(); err != nil {
			p.log.Warn("warm interpreter retired: it could not fork the next run's child", "build", p.b.spec.ID, "err", err)
			return false
		}
		return true
	}
	if ctx.Err() != nil {
		return res, mods, finish, fmt.Errorf("run cancelled: %w", ctx.Err())
	}
	return res, mods, finish, nil
}

// pfExiting is PF_EXITING, set on a task as it enters do_exit. The kernel then records the exit
// status, and only then (exit_mm) drops the task's address space: the mm pointer first, which
// makes the stat's vsize 0, then the teardown itself. PF_EXITING with a vsize of 0 therefore
// means the status is there, before the milliseconds of teardown.
const pfExiting = 0x4

// exitedEarly polls /proc/<pid>/stat until the process is exiting by itself (an exit status,
// not a signal) and returns that status, or gives up (false) when the process is gone, killed,
// or ctx ends. It lets the answer skip the child's teardown, which for a child of an interpreter
// holding numpy and pandas costs milliseconds.
func exitedEarly(ctx context.Context, pid int) (int, bool) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	wait := 50 * time.Microsecond
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, false
		}
		// After the command: field 3 (state) is f[0], so field n is f[n-3].
		f := strings.Fields(s[i+1:])
		if len(f) >= 52-2 {
			flags, _ := strconv.ParseUint(f[9-3], 10, 64)
			vsize := f[23-3]
			status, _ := strconv.Atoi(f[52-3])
			if flags&pfExiting != 0 && vsize == "0" {
				// The waitpid form: an exit has its code in bits 8-15 and no signal.
				if status&0x7f == 0 {
					return (status >> 8) & 0xff, true
				}
				return 0, false
			}
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Millisecond)
	}
}

// limited reports whether runs get a cgroup of their own (whole-run limits).
func (p *parent) limited() bool {
	sb := p.cfg.Sandbox
	return sb.Cgroups != nil && (sb.RunLimits.MemoryBytes > 0 || sb.RunLimits.Processes > 0)
}

// awaitClean waits for the parent to report that it removed what the run left.
func (p *parent) awaitClean() bool {
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case m, alive := <-p.msgs:
			if !alive {
				return false
			}
			if m.Clean != nil {
				return *m.Clean
			}
		case <-timer.C:
			p.log.Warn("warm interpreter did not clean up after a run", "build", p.b.spec.ID)
			return false
		}
	}
}

// runSocket is a run's own socket pair; the agent's end receives the child's credentials.
func runSocket() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("run socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "warm-run"), os.NewFile(uintptr(fds[1]), "warm-run-child")
	defer ours.Close()
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		theirs.Close()
		return nil, nil, fmt.Errorf("run socket: %w", err)
	}
	fc, err := net.FileConn(ours)
	if err != nil {
		theirs.Close()
		return nil, nil, fmt.Errorf("run socket: %w", err)
	}
	return fc.(*net.UnixConn), theirs, nil
}

// hello reads the child's first message and returns its host pid.
func hello(c *net.UnixConn, timeout time.Duration) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return 0, fmt.Errorf("wait for the warm child: %w", err)
	}
	if n == 0 {
		return 0, errors.New("the warm interpreter went away before its child started")
	}
	pid := credPid(oob[:oobn])
	if pid <= 1 {
		return 0, errors.New("the warm child's message carried no credentials")
	}
	_ = c.SetReadDeadline(time.Time{})
	return pid, nil
}

// readModules is the child's list of top-level modules, each a Python identifier.
func readModules(path string) []string {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() && len(out) < 512 {
		if s := sc.Text(); identifier.MatchString(s) {
			out = append(out, s)
		}
	}
	return out
}

// rss is a process's resident set size in bytes (0 when unknown).
func rss(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Rss:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// logWriter logs what a parent prints (import failures, warnings), a line at a time.
type logWriter struct {
	log   *slog.Logger
	build string
	mu    sync.Mutex
	buf   []byte
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.log.Info("warm interpreter", "build", w.build, "line", string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 4096 {
		w.log.Info("warm interpreter", "build", w.build, "line", string(w.buf))
		w.buf = nil
	}
	return len(b), nil
}
