package sandbox

import (
	"errors"
	"fmt"
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
// each cgroup and each stage serve exactly one run. When none is ready (the first run, a burst),
// the run makes its own cgroup as before.

// readyStages is how many stages wait in their cgroups: enough for the runs that start at once
// on a small host; more only hold memory (one small process each).
const readyStages = 2

// readyTimeout bounds how long a new ready stage may take to join its cgroup.
const readyTimeout = 5 * time.Second

// readyStage is a stage waiting in its run cgroup.
type readyStage struct {
	cmd  *exec.Cmd
	sock *os.File // the agent's end; EOF tells the stage to go
	rc   *runCgroup
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
	failed  time.Time
	wake    chan struct{}
	removed chan *runCgroup
	stop    chan struct{}
	done    chan struct{}
}

// take returns a ready stage for a run with limits and the stage program, if one is waiting, and
// asks for another. The first call starts the pool's goroutine.
func (g *Cgroups) take(limits RunLimits, stage string) *readyStage {
	p := &g.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	g.startLocked()
	if p.limits != limits || p.stage != stage {
		// Another configuration (tests use several): what waits was made for the old one.
		for _, r := range p.ready {
			go p.discard(r)
		}
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
func (g *Cgroups) release(rc *runCgroup) {
	p := &g.pool
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		rc.remove()
		return
	}
	g.startLocked()
	p.mu.Unlock()
	select {
	case p.removed <- rc:
	default:
		rc.remove() // a backlog: the run pays, rather than the host collecting cgroups
	}
}

func (g *Cgroups) startLocked() {
	p := &g.pool
	if p.running {
		return
	}
	p.running = true
	p.wake = make(chan struct{}, 1)
	p.removed = make(chan *runCgroup, 64)
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
		p.discard(r)
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
				case rc := <-p.removed:
					rc.remove()
				default:
					return
				}
			}
		case rc := <-p.removed:
			rc.remove()
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
			case rc := <-p.removed:
				rc.remove()
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
		r, err := g.newReady(limits, stage)
		p.mu.Lock()
		if err != nil {
			p.failed = time.Now()
			p.mu.Unlock()
			return
		}
		if p.closed || p.limits != limits || p.stage != stage {
			p.mu.Unlock()
			p.discard(r)
			continue
		}
		p.ready = append(p.ready, r)
		p.mu.Unlock()
	}
}

// discard ends a ready stage that will not serve a run: it leaves and removes its cgroup itself
// on EOF; the agent makes sure.
func (p *pool) discard(r *readyStage) {
	r.sock.Close()
	_ = r.cmd.Wait()
	r.rc.remove()
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

// newReady makes a run cgroup with limits and starts a stage in it, and waits until it is in.
func (g *Cgroups) newReady(limits RunLimits, stage string) (*readyStage, error) {
	homes, err := g.homes()
	if err != nil {
		return nil, err
	}
	rc, err := g.create(limits)
	if err != nil {
		return nil, err
	}
	if len(homes) != len(rc.dirs) {
		rc.remove()
		return nil, fmt.Errorf("ready stage: %d cgroups, %d homes", len(rc.dirs), len(homes))
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		rc.remove()
		return nil, fmt.Errorf("ready stage: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "ready"), os.NewFile(uintptr(fds[1]), "ready-stage")
	args := append([]string{"envfabric-sandbox-ready", strconv.Itoa(len(rc.dirs))}, rc.dirs...)
	cmd := &exec.Cmd{
		Path:        stage,
		Args:        append(args, homes...),
		Env:         []string{},
		Dir:         "/",
		ExtraFiles:  []*os.File{theirs},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		mine.Close()
		rc.remove()
		return nil, fmt.Errorf("ready stage: %w", err)
	}
	r := &readyStage{cmd: cmd, sock: mine, rc: rc}
	_ = mine.SetReadDeadline(time.Now().Add(readyTimeout))
	b := make([]byte, 1)
	if _, err := mine.Read(b); err != nil || b[0] != 'r' {
		_ = cmd.Process.Kill()
		g.pool.discard(r)
		return nil, fmt.Errorf("ready stage did not join its cgroup: %v", err)
	}
	_ = mine.SetReadDeadline(time.Time{})
	return r, nil
}

// errNotReady: the run cannot use a ready stage (descriptors it does not have as files); it
// starts the ordinary way.
var errNotReady = errors.New("no ready stage for this run")

// stdio is the descriptor for one of the run's standard streams.
func stdio(v any, flag int) (*os.File, bool, error) {
	switch f := v.(type) {
	case nil:
		null, err := os.OpenFile(os.DevNull, flag, 0)
		return null, true, err
	case *os.File:
		return f, false, nil
	}
	return nil, false, errNotReady
}

// startReady hands the run to r: its stdin, stdout, stderr, status pipe, plan and network pipe,
// as one message. c then is r's process.
func (c *Cmd) startReady(r *readyStage, plan *os.File) error {
	var files []*os.File
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for i, s := range []any{c.Stdin, c.Stdout, c.Stderr} {
		var v any
		if s != nil {
			v = s
		}
		flag := os.O_WRONLY
		if i == 0 {
			flag = os.O_RDONLY
		}
		f, mine, err := stdio(v, flag)
		if err != nil {
			return err
		}
		if mine {
			opened = append(opened, f)
		}
		files = append(files, f)
	}
	files = append(files, c.statusW, plan)
	if c.goR != nil {
		files = append(files, c.goR)
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	if err := unix.Sendmsg(int(r.sock.Fd()), []byte{'g'}, unix.UnixRights(fds...), nil, unix.MSG_NOSIGNAL); err != nil {
		return fmt.Errorf("hand the run to a ready stage: %w", err)
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
