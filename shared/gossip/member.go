package gossip

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config says how a member joins the fleet.
type Config struct {
	// NodeName is unique in the fleet: the agent id, or the control plane's instance id.
	NodeName string
	// BindAddr is host:port for gossip (UDP and TCP on the same port).
	BindAddr string
	// AdvertiseAddr is host:port others reach this member at; empty: derived from BindAddr.
	AdvertiseAddr string
	// Seeds are host:port of members to join through; more are found by gossip.
	Seeds []string
	// Keys is the keyring: the first key encrypts, every key decrypts, so a key can be rotated by
	// rolling restarts (add the new key second, then make it first, then drop the old one).
	// Empty means plain-text gossip, which the binaries allow only on loopback.
	Keys [][]byte
	// Profile is "lan" (memberlist's LAN timings) or "local" (fast failure detection, for one
	// machine and tests).
	Profile string
	// RejoinInterval is how often a member that knows no peer tries its seeds again.
	RejoinInterval time.Duration
}

// ParseKeys reads a comma-separated list of base64 keys of 16, 24 or 32 bytes.
func ParseKeys(s string) ([][]byte, error) {
	var keys [][]byte
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			return nil, fmt.Errorf("key %d: not base64: %w", i+1, err)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("key %d: %d bytes; want 16, 24 or 32 (e.g. `openssl rand -base64 32`)", i+1, n)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// ParseSeeds reads a comma-separated list of host:port.
func ParseSeeds(s string) ([]string, error) {
	var seeds []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(part); err != nil {
			return nil, fmt.Errorf("seed %q: want host:port", part)
		}
		seeds = append(seeds, part)
	}
	return seeds, nil
}

// Hooks connect a Member to its owner. Every hook is called from memberlist's goroutines and must
// not block.
type Hooks struct {
	// Meta returns the member's current metadata.
	Meta func() Meta
	// Accept decides whether a peer may be part of this member's view; an error keeps it out.
	Accept func(Meta) error
	// Changed is told that the view changed (a join, a leave or new metadata).
	Changed func()
}

// Peer is a member as seen from here.
type Peer struct {
	Name  string
	Addr  string
	Meta  Meta
	State string // alive or suspect
}

// Member is this process in the fleet.
type Member struct {
	ml     *memberlist.Memberlist
	hooks  Hooks
	log    *slog.Logger
	cfg    Config
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu      sync.Mutex
	refused map[string]string  // node name → why, for peers Accept kept out
	decoded map[string]decoded // node name → its metadata, decoded once per change
}

// decoded is a peer's metadata as last seen on the wire and as read from it.
type decoded struct {
	raw  []byte
	meta Meta
	err  error
}

// Join starts gossip and joins the seeds. It does not fail when no seed answers (the member may be
// the first of its fleet, or the seeds are restarting): it keeps trying in the background until it
// has a peer. Close stops it.
func Join(ctx context.Context, cfg Config, hooks Hooks, logger *slog.Logger) (*Member, error) {
	if hooks.Meta == nil {
		return nil, errors.New("gossip: Hooks.Meta is required")
	}
	if _, err := hooks.Meta().Encode(); err != nil {
		// Serf refuses over-large tags at start-up too: better than a member nobody can read.
		return nil, fmt.Errorf("gossip: %w", err)
	}
	var mc *memberlist.Config
	switch cfg.Profile {
	case "", "lan":
		mc = memberlist.DefaultLANConfig()
	case "local":
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 500 * time.Millisecond
		mc.ProbeTimeout = 250 * time.Millisecond
		mc.GossipInterval = 100 * time.Millisecond
		mc.PushPullInterval = 5 * time.Second
		mc.SuspicionMult = 2
	default:
		return nil, fmt.Errorf("gossip: profile %q: want lan or local", cfg.Profile)
	}
	mc.Name = cfg.NodeName
	host, port, err := splitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip bind address: %w", err)
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if cfg.AdvertiseAddr != "" {
		ah, ap, err := splitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise address: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	m := &Member{hooks: hooks, log: logger.With("component", "gossip"), cfg: cfg, done: make(chan struct{}), refused: map[string]string{}, decoded: map[string]decoded{}}
	d := &delegate{m: m}
	mc.Delegate, mc.Events, mc.Alive = d, d, d
	mc.Logger = log.New(&logWriter{log: m.log}, "", 0)
	if m.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("gossip: start memberlist on %s: %w", cfg.BindAddr, err)
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 5 * time.Second
	}
	m.cfg = cfg
	m.join()
	ctx, m.cancel = context.WithCancel(ctx)
	go m.rejoin(ctx)
	return m, nil
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q", p)
	}
	return host, port, nil
}

func (m *Member) join() {
	if len(m.cfg.Seeds) == 0 {
		return
	}
	n, err := m.ml.Join(m.cfg.Seeds)
	if err != nil && n == 0 {
		m.log.Warn("no gossip seed answered; retrying", "seeds", m.cfg.Seeds, "err", err)
		return
	}
	m.log.Info("joined the fleet", "contacted", n, "members", m.ml.NumMembers())
}

// rejoin tries the seeds again while this member is alone: seeds may start after it.
func (m *Member) rejoin(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if m.ml.NumMembers() <= 1 {
				m.join()
			}
		}
	}
}

// Peers returns the other members this one sees alive (or suspect), with their metadata. It is on
// the path of every routed operation, so metadata is decoded only when a peer's bytes change.
func (m *Member) Peers() []Peer {
	var out []Peer
	self := m.ml.LocalNode().Name
	for _, n := range m.ml.Members() {
		if n.Name == self {
			continue
		}
		meta, err := m.decode(n.Name, n.Meta)
		if err != nil {
			continue
		}
		state := "alive"
		if n.State == memberlist.StateSuspect {
			state = "suspect"
		}
		out = append(out, Peer{Name: n.Name, Addr: n.Address(), Meta: meta, State: state})
	}
	return out
}

func (m *Member) decode(name string, raw []byte) (Meta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.decoded[name]; ok && bytes.Equal(d.raw, raw) {
		return d.meta, d.err
	}
	meta, err := DecodeMeta(raw)
	// memberlist may reuse the buffer: keep a copy to compare with.
	m.decoded[name] = decoded{raw: bytes.Clone(raw), meta: meta, err: err}
	return meta, err
}

// Refused returns the peers Accept kept out, by node name, with the reason.
func (m *Member) Refused() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.refused))
	for k, v := range m.refused {
		out[k] = v
	}
	return out
}

// Addr is the address this member gossips on.
func (m *Member) Addr() string { return m.ml.LocalNode().Address() }

// UpdateMeta pushes this member's current metadata to the fleet.
func (m *Member) UpdateMeta(timeout time.Duration) error {
	return m.ml.UpdateNode(timeout)
}

// Close leaves the fleet gracefully and stops gossip. It is idempotent.
func (m *Member) Close() error {
	var err error
	m.once.Do(func() {
		m.cancel()
		<-m.done
		if lerr := m.ml.Leave(2 * time.Second); lerr != nil {
			m.log.Warn("leaving the fleet", "err", lerr)
		}
		err = m.ml.Shutdown()
	})
	return err
}

// delegate adapts memberlist's callbacks. None of them blocks.
type delegate struct{ m *Member }

func (d *delegate) NodeMeta(limit int) []byte {
	b, dropped, err := d.m.hooks.Meta().Fit()
	if err != nil || len(b) > limit {
		d.m.log.Error("node metadata does not fit; gossiping without it", "err", err)
		return nil
	}
	if dropped > 0 {
		d.m.log.Warn("node metadata too large: interpreters left out", "dropped", dropped)
	}
	return b
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name == d.m.cfg.NodeName {
		return nil
	}
	meta, err := DecodeMeta(peer.Meta)
	if err == nil && d.m.hooks.Accept != nil {
		err = d.m.hooks.Accept(meta)
	}
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	if err != nil {
		if d.m.refused[peer.Name] != err.Error() {
			d.m.log.Warn("refused a peer", "peer", peer.Name, "addr", peer.Address(), "reason", err)
		}
		d.m.refused[peer.Name] = err.Error()
		return err
	}
	delete(d.m.refused, peer.Name)
	return nil
}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.m.log.Info("member joined", "peer", n.Name, "addr", n.Address())
	d.changed()
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	d.m.log.Info("member left", "peer", n.Name, "addr", n.Address())
	d.m.mu.Lock()
	delete(d.m.decoded, n.Name)
	d.m.mu.Unlock()
	d.changed()
}

func (d *delegate) NotifyUpdate(*memberlist.Node) { d.changed() }

func (d *delegate) changed() {
	if d.m.hooks.Changed != nil {
		d.m.hooks.Changed()
	}
}

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog records.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[INFO]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "memberlist: "); i >= 0 {
		line = line[i+len("memberlist: "):]
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
