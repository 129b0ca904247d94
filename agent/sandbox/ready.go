package sandbox

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Joining a cgroup (writing cgroup.procs) waits for an RCU grace period, about 10 ms on the test
// VM, and removing a memory cgroup waits for the kernel to release it: together more than the
// rest of the sandbox. So the run cgroups are made ahead of the runs, each with a stage process
// already inside it (the stage program's ready mode), and removed after the answer. A run takes
// one (Cmd.Start), hands it its descriptors and plan, and the stage makes the namespaces itself;
// each cgroup and each stage serve exactly one run. When none is ready (the first run, a burst,
// a run without whole-run limits), the run starts a stage of its own the same way.

// readyStages is how many stages wait in their cgroups: enough for the runs that start at once
// on a small host; more only hold memory (one small process each).
const readyStages = 2

// readyTimeout bounds how long a new ready stage may take to join its cgroup.
const readyTimeout = 5 * time.Second

// readyStage is a stage waiting for its run (in its run cgroup, if any).
type readyStage struct {
	cmd  *exec.Cmd
	sock *os.File // the agent's end; EOF tells the stage to go
	rc   *runCgroup
	// fresh: started for the run at hand, not taken from the pool.
	fresh bool
}

// pool is a Cgroups' ready stages and its cgroups waiting for removal, kept by one goroutine.
type pool struct {
	mu      sync.Mutex
	limits  RunLimits
	stage   string
	ready   []*readyStage
	closed  bool
	running bool
	// failed is when making a ready stage last failed: the pool rests a while.
	failed time.Time
	wake   chan struct{}
	// cleanups are removals of run cgroups and ends of unused stages, done by the goroutine.
	cleanups chan func()
	stop     chan struct{}
	done     chan struct{}
}

// take returns a ready stage for a run with limits and the stage program, if one is waiting, and
// asks for another. The first call starts the pool's goroutine.
func (g *Cgroups) take(limits RunLimits, stage string) *readyStage {
	p := &g.pool
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	g.startLocked()
	var stale []*readyStage
	if p.limits != limits || p.stage != stage {
		// Another configuration (tests use several): what waits was made for the old one.
		stale = p.ready
		p.ready, p.limits, p.stage = nil, limits, stage
	}
	var r *readyStage
	if n := len(p.ready); n > 0 {
		r, p.ready = p.ready[n-1], p.ready[:n-1]
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
	p.mu.Unlock()
	for _, s := range stale {
		g.later(func() { discard(s) })
	}
	return r
}

// prepare starts making ready stages for runs with limits and the stage program.
func (g *Cgroups) prepare(limits RunLimits, stage string) {
	if r := g.take(limits, stage); r != nil {
		g.pool.mu.Lock()
		g.pool.ready = append(g.pool.ready, r)
		g.pool.mu.Unlock()
	}
}

// release removes a run's cgroup after the run, off its critical path.
func (g *Cgroups) release(rc *runCgroup) { g.later(rc.remove) }

// later has the pool's goroutine do f (at once, here, without a pool or with a backlog: the
// caller pays, rather than the host collecting cgroups and processes).
func (g *Cgroups) later(f func()) {
	if g == nil {
		f()
		return
	}
	p := &g.pool
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		f()
		return
	}
	g.startLocked()
	p.mu.Unlock()
	select {
	case p.cleanups <- f:
	default:
		f()
	}
}

func (g *Cgroups) startLocked() {
	p := &g.pool
	if p.running {
		return
	}
	p.running = true
	p.wake = make(chan struct{}, 1)
	p.cleanups = make(chan func(), 64)
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	go g.loop()
}

// Close stops making ready stages, ends those waiting and removes every run cgroup left to
// remove. Runs started afterwards make their own cgroups. It is idempotent.
func (g *Cgroups) Close() {
	p := &g.pool
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	running := p.running
	ready := p.ready
	p.ready = nil
	p.mu.Unlock()
	if running {
		close(p.stop)
		<-p.done
	}
	for _, r := range ready {
		discard(r)
	}
}

func (g *Cgroups) loop() {
	p := &g.pool
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			for {
				select {
				case f := <-p.cleanups:
					f()
				default:
					return
				}
			}
		case f := <-p.cleanups:
			f()
		case <-p.wake:
			g.fill()
		}
	}
}

// failureRest is how long the pool rests after it could not make a ready stage (the runs make
// their own cgroups meanwhile).
const failureRest = 10 * time.Second

// fill makes ready stages until readyStages wait, removing cgroups in between.
func (g *Cgroups) fill() {
	p := &g.pool
	for {
		for drained := false; !drained; {
			select {
			case f := <-p.cleanups:
				f()
			default:
				drained = true
			}
		}
		p.mu.Lock()
		if p.closed || len(p.ready) >= readyStages || time.Since(p.failed) < failureRest {
			p.mu.Unlock()
			return
		}
		limits, stage := p.limits, p.stage
		p.mu.Unlock()
		var r *readyStage
		rc, err := g.create(limits)
		if err == nil {
			r, err = newReady(stage, g, rc, true)
		}
		p.mu.Lock()
		if err != nil {
			p.failed = time.Now()
			p.mu.Unlock()
			return
		}
		if p.closed || p.limits != limits || p.stage != stage {
			p.mu.Unlock()
			discard(r)
			continue
		}
		p.ready = append(p.ready, r)
		p.mu.Unlock()
	}
}

// discard ends a ready stage that will not serve a run: it leaves and removes its cgroup itself
// on EOF; the agent makes sure.
func discard(r *readyStage) {
	r.sock.Close()
	_ = r.cmd.Wait()
	if r.rc != nil {
		r.rc.remove()
	}
}

// homes are the cgroup directories a ready stage returns to before it removes its own: the
// agent's own cgroups.
func (g *Cgroups) homes() ([]string, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	keys := []string{"memory", "pids"}
	if g.Version == 2 {
		keys = []string{""}
	}
	var homes []string
	for _, k := range keys {
		m, ok := mounts[k]
		if k == "" {
			m, ok = mounts["cgroup2"]
		}
		if !ok {
			return nil, fmt.Errorf("no cgroup mount for %q", k)
		}
		dir, ok := m.dir(own[k])
		if !ok {
			return nil, fmt.Errorf("own cgroup %q not under %s", own[k], m.point)
		}
		homes = append(homes, dir)
	}
	return homes, nil
}

// newReady starts a stage (in rc, when there is one). The pool's wait until the stage is in;
// one started for the run at hand is handed the run at once (it reads it once it is in, and
// reports a failure to join on the run's status pipe).
func newReady(stage string, g *Cgroups, rc *runCgroup, wait bool) (*readyStage, error) {
	announce := map[bool]string{true: "1", false: "0"}[wait]
	args := []string{readyArg0, announce, "0"}
	if rc != nil {
		homes, err := g.homes()
		if err == nil && len(homes) != len(rc.dirs) {
			err = fmt.Errorf("%d cgroups, %d homes", len(rc.dirs), len(homes))
		}
		if err != nil {
			rc.remove()
			return nil, fmt.Errorf("start the sandbox: %w", err)
		}
		args = append(append([]string{readyArg0, announce, strconv.Itoa(len(rc.dirs))}, rc.dirs...), homes...)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if rc != nil {
			rc.remove()
		}
		return nil, fmt.Errorf("start the sandbox: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "ready"), os.NewFile(uintptr(fds[1]), "ready-stage")
	cmd := &exec.Cmd{
		Path: stage,
		Args: args,
		// Nothing: the stage, and what it starts, never see the agent's environment
		// (AGENT_TOKEN and the like); the program's own comes in the plan.
		Env:        []string{},
		Dir:        "/",
		ExtraFiles: []*os.File{theirs},
		// Its own session: its pid is the run's process group. It dies with the agent once it
		// has a run (it sets PR_SET_PDEATHSIG then); until then it sees EOF instead.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		mine.Close()
		if rc != nil {
			rc.remove()
		}
		return nil, fmt.Errorf("start the sandbox: %w", err)
	}
	r := &readyStage{cmd: cmd, sock: mine, rc: rc, fresh: !wait}
	if !wait {
		return r, nil
	}
	_ = mine.SetReadDeadline(time.Now().Add(readyTimeout))
	b := make([]byte, 1)
	if _, err := mine.Read(b); err != nil || b[0] != 'r' {
		_ = cmd.Process.Kill()
		discard(r)
		return nil, fmt.Errorf("start the sandbox: the stage did not get ready (it joins the run's cgroup): %v", err)
	}
	_ = mine.SetReadDeadline(time.Time{})
	return r, nil
}

// interfaceEqual is a == b, false where the dynamic type is not comparable.
func interfaceEqual(a, b any) (eq bool) {
	defer func() { _ = recover() }()
	return a == b
}

// stdio are the descriptors of the run's stdin, stdout and stderr: files as they are, nil as
// /dev/null, other writers through a pipe copied into them until the run's last writer closes it
// (Wait waits for that, as exec.Cmd does).
func (c *Cmd) stdio() ([]*os.File, error) {
	var files []*os.File
	in, ok := c.Stdin.(*os.File)
	switch {
	case c.Stdin == nil:
		null, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		c.copyPipes = append(c.copyPipes, null)
		in = null
	case !ok:
		return nil, fmt.Errorf("sandbox: Stdin must be nil or an *os.File, not %T", c.Stdin)
	}
	files = append(files, in)
	for i, w := range []io.Writer{c.Stdout, c.Stderr} {
		if i == 1 && c.Stderr != nil && interfaceEqual(c.Stderr, c.Stdout) {
			files = append(files, files[1])
			continue
		}
		if f, ok := w.(*os.File); ok {
			files = append(files, f)
			continue
		}
		if w == nil {
			null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				return nil, err
			}
			c.copyPipes = append(c.copyPipes, null)
			files = append(files, null)
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		c.copyPipes = append(c.copyPipes, pw)
		c.copies.Go(func() {
			_, _ = io.Copy(w, pr)
			pr.Close()
		})
		files = append(files, pw)
	}
	return files, nil
}

// closeCopies closes the agent's ends the run holds now (or, after a failed start, never will).
func (c *Cmd) closeCopies() {
	for _, f := range c.copyPipes {
		f.Close()
	}
	c.copyPipes = nil
}

// startReady hands the run to r: its stdin, stdout, stderr, status pipe, plan and network pipe,
// as one message. c then is r's process.
func (c *Cmd) startReady(r *readyStage, plan *os.File) error {
	c.closeCopies()
	files, err := c.stdio()
	if err != nil {
		return err
	}
	files = append(files, c.statusW, plan)
	if c.goR != nil {
		files = append(files, c.goR)
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	err = unix.Sendmsg(int(r.sock.Fd()), []byte{'g'}, unix.UnixRights(fds...), nil, unix.MSG_NOSIGNAL)
	c.closeCopies()
	if err != nil {
		return fmt.Errorf("hand the run to the sandbox's stage: %w", err)
	}
	c.Cmd = r.cmd
	c.cgroup = r.rc
	c.netPid = r.cmd.Process.Pid
	defer r.sock.Close()
	if c.plan.Slirp {
		// The network belongs to the stage's child, the namespace's init.
		_ = r.sock.SetReadDeadline(time.Now().Add(readyTimeout))
		b := make([]byte, 32)
		n, err := r.sock.Read(b)
		if err == nil {
			c.netPid, err = strconv.Atoi(strings.TrimSpace(string(b[:n])))
		}
		if err != nil {
			_ = c.Process.Kill()
			_ = c.Cmd.Wait()
			return fmt.Errorf("ready stage: the init stage's pid: %w", err)
		}
	}
	return nil
}
