package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/envfabric/envfabric/shared/sdnotify"
	"github.com/envfabric/envfabric/shared/testutil/fabricbin"
	"github.com/envfabric/envfabric/shared/testutil/pgtest"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
)

// member is one program of the fleet that the nemesis can kill, pause and start again. The first
// start takes any free port (port 0) for HTTP and gossip and learns from the program's readiness
// message (sd_notify's READY=1) what it bound; every restart binds those addresses again, so the
// clients' URLs and the gossip seeds stay valid.
type member struct {
	name      string // cp1, agent2
	bin       string
	env       []string // everything but the addresses and NOTIFY_SOCKET, which start adds
	listenVar string   // LISTEN_ADDR (control plane) or AGENT_LISTEN_ADDR (agent)
	readyz    bool     // a restart is over once GET /readyz answers 200 (control planes)
	logPath   string
	notify    string // the NOTIFY_SOCKET path (short: a socket path must fit in 108 bytes)

	mu         sync.Mutex
	proc       *proc // nil while down
	paused     bool
	starts     int
	seeds      []string // GOSSIP_SEEDS; set before each start by the fleet
	addr       string   // learned at the first start
	gossipAddr string
	url        string // REST (control plane) or Connect (agent) base URL, once addr is known
}

// proc is one run of a member's program.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the program has exited
	err  error
}

func (m *member) up() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil && !exited(m.proc)
}

func exited(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// anyPort is what a first start binds: any free loopback port.
const anyPort = "127.0.0.1:0"

// start runs the program (appending to its log) and waits, bounded, for its READY=1: the program
// says it once it serves, with the addresses it bound. A first start records them; a restart
// expects the same ones back.
func (m *member) start(ctx context.Context) error {
	m.mu.Lock()
	if m.proc != nil && !exited(m.proc) {
		m.mu.Unlock()
		return nil
	}
	f, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.mu.Unlock()
		return fmt.Errorf("open %s log: %w", m.name, err)
	}
	// A fresh socket per start: nothing a previous run sent can be taken for this one's READY=1.
	conn, err := sdnotify.Listen(m.notify)
	if err != nil {
		f.Close()
		m.mu.Unlock()
		return fmt.Errorf("%s notify socket: %w", m.name, err)
	}
	m.starts++
	fmt.Fprintf(f, "\n===== chaos: %s start %d at %s =====\n", m.name, m.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(m.bin)
	cmd.Env = append(append([]string{}, m.env...), m.listenVar+"="+or(m.addr, anyPort),
		"GOSSIP_BIND_ADDR="+or(m.gossipAddr, anyPort), "GOSSIP_SEEDS="+strings.Join(m.seeds, ","), "NOTIFY_SOCKET="+m.notify)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a pause stops the program and the uv or user code it runs, as a
	// frozen host would, and the harness can kill whatever is left at the end. Pdeathsig: a
	// harness that is itself killed takes the fleet with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		conn.Close()
		m.mu.Unlock()
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan map[string]string, 1)
	go func() {
		if vars, err := conn.Ready(); err == nil {
			ready <- vars
		}
	}()
	go func() {
		p.err = cmd.Wait()
		f.Close()
		conn.Close() // ends the wait if READY=1 never came
		close(p.done)
	}()
	m.proc, m.paused = p, false
	m.mu.Unlock()

	const limit = 60 * time.Second
	var vars map[string]string
	select {
	case vars = <-ready:
	case <-p.done:
		return fmt.Errorf("%s exited before it was ready: %v (log: %s)", m.name, p.err, m.logPath)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", m.name, ctx.Err())
	case <-time.After(limit):
		return fmt.Errorf("%s sent no READY=1 within %s (log: %s)", m.name, limit, m.logPath)
	}
	return m.learn(vars)
}

// learn records the addresses of a first start's READY=1, or checks that a restart bound the
// same ones.
func (m *member) learn(vars map[string]string) error {
	addr, gossip := vars[sdnotify.AddrVar], vars[sdnotify.GossipAddrVar]
	if addr == "" || gossip == "" {
		return fmt.Errorf("%s said READY=1 without %s and %s: %v", m.name, sdnotify.AddrVar, sdnotify.GossipAddrVar, vars)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.addr == "" {
		m.addr, m.gossipAddr, m.url = addr, gossip, "http://"+addr
		return nil
	}
	if addr != m.addr || gossip != m.gossipAddr {
		return fmt.Errorf("%s bound %s and gossip %s; it was told %s and %s", m.name, addr, gossip, m.addr, m.gossipAddr)
	}
	return nil
}

// restart is start for the nemesis: for a control plane it also waits until /readyz answers
// 200. READY=1 says the program serves; /readyz says it can work (its database answers and it
// sees an agent), and only then is the fault undone, so the next one finds the fleet whole.
func (m *member) restart(ctx context.Context) error {
	if err := m.start(ctx); err != nil {
		return err
	}
	if !m.readyz {
		return nil
	}
	m.mu.Lock()
	p, url := m.proc, m.url+"/readyz"
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s stopped while starting", m.name)
	}
	const limit = 60 * time.Second
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v (log: %s)", m.name, p.err, m.logPath)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s within %s (log: %s)", m.name, url, limit, m.logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// kill is kill -9 of the program (not its group: uv runs with Pdeathsig and must die with it).
func (m *member) kill() error {
	m.mu.Lock()
	p := m.proc
	m.proc, m.paused = nil, false
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s is not running", m.name)
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not die within 10s of SIGKILL", m.name)
	}
}

// pause and resume send SIGSTOP and SIGCONT to the program's whole process group.
func (m *member) pause() error  { return m.signalGroup(syscall.SIGSTOP, true) }
func (m *member) resume() error { return m.signalGroup(syscall.SIGCONT, false) }

func (m *member) signalGroup(sig syscall.Signal, paused bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return fmt.Errorf("%s is not running", m.name)
	}
	if err := syscall.Kill(-m.proc.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("%s to %s: %w", sig, m.name, err)
	}
	m.paused = paused
	return nil
}

// stop ends the program for good: SIGCONT (a paused program cannot exit), SIGTERM, and SIGKILL
// to its whole group after grace.
func (m *member) stop(grace time.Duration) {
	m.mu.Lock()
	p := m.proc
	m.proc, m.paused = nil, false
	m.mu.Unlock()
	if p == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // uv or user code left in the group
}

// fleet is the system under test: a private PostgreSQL, a local package index, control planes and
// agents on loopback sharing one data root.
type fleet struct {
	cfg      config
	log      *slog.Logger
	dataRoot string
	envsDir  string
	logs     string

	pg     *pgtest.Server
	pgUp   bool
	pgMu   sync.Mutex
	dbURL  string
	index  *pyindex.Index
	cps    []*member
	agents []*member

	apiSecret string
	sockDir   string // the members' notify sockets
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startFleet builds nothing (bins are given) and starts every part, in the order the fleet needs:
// database, index, control planes (whose gossip addresses, learned from their READY=1, the
// agents seed through), agents; then it waits until every control plane is ready and sees every
// agent alive.
func startFleet(ctx context.Context, cfg config, bins fabricbin.Binaries, log *slog.Logger) (f *fleet, err error) {
	f = &fleet{cfg: cfg, log: log, dataRoot: filepath.Join(cfg.Workdir, "data"), logs: filepath.Join(cfg.Out, "logs"),
		apiSecret: randomHex(16)}
	f.envsDir = filepath.Join(f.dataRoot, "envs")
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	for _, d := range []string{f.dataRoot, f.logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return f, err
		}
	}

	log.Info("starting PostgreSQL")
	f.pg, err = pgtest.Start(ctx, func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) })
	if err != nil {
		return f, fmt.Errorf("PostgreSQL: %w", err)
	}
	f.pgUp = true
	if err := createDatabase(ctx, f.pg.URL("postgres"), "envfabric"); err != nil {
		return f, err
	}
	f.dbURL = f.pg.URL("envfabric")

	f.index, err = pyindex.Start(universe())
	if err != nil {
		return f, fmt.Errorf("package index: %w", err)
	}

	// The notify sockets: under a short directory of their own, since a socket path must fit in
	// 108 bytes and CHAOS_WORKDIR may be long.
	if f.sockDir, err = os.MkdirTemp("", "efchaos-"); err != nil {
		return f, err
	}
	agentToken := randomHex(32)
	gossipKey := make([]byte, 32)
	_, _ = rand.Read(gossipKey)
	base := append(baseEnv(), "AGENT_TOKEN="+agentToken, "LOG_LEVEL="+cfg.LogLevel,
		"GOSSIP_KEYS="+base64.StdEncoding.EncodeToString(gossipKey), "GOSSIP_PROFILE=local", "DATA_ROOT="+f.dataRoot)
	newMember := func(name, bin, listenVar string, env ...string) (*member, error) {
		m := &member{name: name, bin: bin, env: append(append([]string{}, base...), env...), listenVar: listenVar,
			logPath: filepath.Join(f.logs, name+".log"), notify: filepath.Join(f.sockDir, name)}
		if len(m.notify) >= 108 {
			return nil, fmt.Errorf("notify socket path %s is longer than a socket path may be (set TMPDIR shorter)", m.notify)
		}
		return m, nil
	}
	for i := range cfg.ControlPlanes {
		name := fmt.Sprintf("cp%d", i+1)
		m, err := newMember(name, bins.ControlPlane, "LISTEN_ADDR", "DATABASE_URL="+f.dbURL, "INSTANCE_ID="+name,
			"LEASE_TTL="+cfg.LeaseTTL.String(), "API_TOKENS=chaos:admin:"+f.apiSecret,
			// Nothing but the clients may change environments: no scheduled cleanup or prune.
			"CLEANUP_INTERVAL=0", "CACHE_PRUNE_INTERVAL=0", "UV_OPERATION_TIMEOUT=2m")
		if err != nil {
			return f, err
		}
		m.readyz = true
		f.cps = append(f.cps, m)
	}
	for i := range cfg.Agents {
		name := fmt.Sprintf("agent%d", i+1)
		m, err := newMember(name, bins.Agent, "AGENT_LISTEN_ADDR", "AGENT_ID="+name, "UV_BIN="+cfg.UV,
			"UV_DEFAULT_INDEX="+f.index.URL, "RUN_SANDBOX="+cfg.Sandbox)
		if err != nil {
			return f, err
		}
		f.agents = append(f.agents, m)
	}

	// Control planes one after the other, each joining gossip through those before it (READY=1
	// comes once a control plane serves; it needs no agent for that). Then every member's seeds
	// are all the control planes, for the agents' first start and everyone's restarts.
	log.Info("starting the fleet", "control_planes", len(f.cps), "agents", len(f.agents))
	var seeds []string
	for _, m := range f.cps {
		m.seeds = slices.Clone(seeds)
		if err := m.start(ctx); err != nil {
			return f, err
		}
		seeds = append(seeds, m.gossipAddr)
	}
	for _, m := range f.members() {
		m.seeds = slices.Clone(seeds)
	}
	errs := make(chan error, len(f.agents))
	for _, m := range f.agents {
		go func() { errs <- m.start(ctx) }()
	}
	var startErrs []error
	for range f.agents {
		startErrs = append(startErrs, <-errs)
	}
	if err := errors.Join(startErrs...); err != nil {
		return f, err
	}
	return f, f.waitMembership(ctx, 60*time.Second)
}

// createDatabase makes dbname on the server at url (the maintenance database).
func createDatabase(ctx context.Context, url, dbname string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbname}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", dbname, err)
	}
	return nil
}

// waitMembership polls until every control plane answers /readyz and lists every agent alive.
func (f *fleet) waitMembership(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := newAPIClient(f.apiSecret, 5*time.Second)
	var last string
	for {
		last = ""
		for _, cp := range f.cps {
			if msg := c.membership(ctx, cp.url, len(f.agents)); msg != "" {
				last = cp.name + ": " + msg
				break
			}
		}
		if last == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet not whole within %s: %s", limit, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (f *fleet) members() []*member { return append(append([]*member{}, f.cps...), f.agents...) }

// stopDB and startDB take PostgreSQL away and bring it back on the same port and data.
func (f *fleet) stopDB() {
	f.pgMu.Lock()
	defer f.pgMu.Unlock()
	if f.pgUp {
		f.pg.Stop()
		f.pgUp = false
	}
}

func (f *fleet) startDB(ctx context.Context) error {
	f.pgMu.Lock()
	defer f.pgMu.Unlock()
	if f.pgUp {
		return nil
	}
	if err := f.pg.Start(ctx); err != nil {
		return fmt.Errorf("start PostgreSQL again: %w", err)
	}
	f.pgUp = true
	return nil
}

// heal undoes every fault: PostgreSQL up, every paused program continued, every dead one started.
// It returns what it could not undo.
func (f *fleet) heal(ctx context.Context) []string {
	var problems []string
	if err := f.startDB(ctx); err != nil {
		problems = append(problems, err.Error())
	}
	for _, m := range f.members() {
		m.mu.Lock()
		paused := m.paused && m.proc != nil
		m.mu.Unlock()
		if paused {
			if err := m.resume(); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	// In parallel: each start waits (bounded) for its program's READY=1; waitMembership, after
	// heal, waits for the fleet to be whole.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range f.members() {
		if m.up() {
			continue
		}
		wg.Go(func() {
			if err := m.start(ctx); err != nil {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s did not start again: %v", m.name, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return problems
}

// close stops everything it started, whatever state it is in: control planes first (they call
// the agents), then agents, the index and PostgreSQL.
func (f *fleet) close() {
	var wg sync.WaitGroup
	for _, group := range [][]*member{f.cps, f.agents} {
		for _, m := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.stop(15 * time.Second)
			}()
		}
		wg.Wait()
	}
	if f.index != nil {
		f.index.Close()
	}
	if f.pg != nil {
		f.pg.Close()
	}
	if f.sockDir != "" {
		os.RemoveAll(f.sockDir)
	}
}

// baseEnv is what every program inherits from the harness: nothing but PATH, HOME and TLS or
// proxy settings (the index is on loopback, but uv may look for interpreters and certificates).
func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range []string{"SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
