// Package fleet is this control plane's membership in the fleet (the agents and control planes
// that share one storage and one gossip cluster): it joins the gossip cluster, keeps out agents
// of another fleet (another storage), picks the agent for each operation (one that has the
// environment's interpreter at the same path, the least loaded first) and tells the lifecycle
// when an agent is gone for good.
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/agentclient"
	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/fleettls"
	"github.com/envfabric/envfabric/shared/gossip"
)

// Settings is the part of the store the membership needs: the fleet id it adopted.
type Settings interface {
	AdoptSetting(ctx context.Context, name, value string, now time.Time) (string, error)
	Setting(ctx context.Context, name string) (string, error)
}

// Config configures a Fleet.
type Config struct {
	Instance   string // this control plane's id, its gossip node name
	Version    string
	Gossip     gossip.Config
	AgentToken string
	// AgentTLS reaches agents over mutual TLS (nil: plaintext, to loopback agents only unless
	// AllowPlaintext).
	AgentTLS       *fleettls.Source
	AllowPlaintext bool
	// FleetID pins the fleet's identity (held by its storage); empty: adopted from the first
	// agents that join.
	FleetID string
	// GoneWait bounds how long Gone waits for gossip to confirm that an agent which stopped
	// answering is dead (default 20s).
	GoneWait time.Duration
}

// Fleet is this control plane in its fleet: the gossip-backed envs.Agents and envs.Viewer.
type Fleet struct {
	cfg      Config
	settings Settings
	log      *slog.Logger
	member   *gossip.Member
	fleetID  atomic.Pointer[string]

	mu      sync.Mutex
	clients map[string]*counted // by agent id
	// certs is what this control plane found of each agent's certificate (mutual TLS only).
	certs   map[string]certCheck // by agent id
	changed chan struct{}        // membership changed: adopt looks again
	probe   chan struct{}        // membership changed: verifyCertificates looks again

	stop context.CancelFunc
	done chan struct{} // adopt and verifyCertificates have returned
	once sync.Once
}

// certCheck is the last look at an agent's certificate at url: refused says why this control
// plane and the agent do not accept each other's certificates ("" accepted).
type certCheck struct {
	url     string
	refused string
	at      time.Time
}

var _ envs.Agents = (*Fleet)(nil)

// Join starts the control plane's membership and returns once gossip is up (agents may join
// later). Close leaves.
func Join(ctx context.Context, cfg Config, settings Settings, reg prometheus.Registerer, log *slog.Logger) (*Fleet, error) {
	if cfg.GoneWait <= 0 {
		cfg.GoneWait = 20 * time.Second
	}
	f := &Fleet{cfg: cfg, settings: settings, log: log.With("component", "fleet"), clients: map[string]*counted{},
		certs: map[string]certCheck{}, changed: make(chan struct{}, 1), probe: make(chan struct{}, 1), done: make(chan struct{})}
	empty := ""
	f.fleetID.Store(&empty)
	id := cfg.FleetID
	if id != "" {
		adopted, err := settings.AdoptSetting(ctx, store.SettingFleetID, id, time.Now())
		if err != nil {
			return nil, fmt.Errorf("recording the fleet id: %w", err)
		}
		if adopted != id {
			return nil, fmt.Errorf("FLEET_ID=%s, but the database belongs to fleet %s", id, adopted)
		}
	} else {
		var err error
		if id, err = settings.Setting(ctx, store.SettingFleetID); err != nil {
			return nil, fmt.Errorf("reading the fleet id: %w", err)
		}
	}
	f.fleetID.Store(&id)

	cfg.Gossip.NodeName = cfg.Instance
	member, err := gossip.Join(ctx, cfg.Gossip, gossip.Hooks{
		Meta:    f.meta,
		Accept:  f.accept,
		Changed: f.notify,
	}, f.log)
	if err != nil {
		return nil, err
	}
	f.member = member
	if reg != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_agents_alive", Help: "Agents this control plane sees alive in its fleet."},
				func() float64 { return float64(len(f.agents(false))) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_agents_refused", Help: "Members refused: wrong storage, unreadable metadata, or a certificate refused."},
				func() float64 { return float64(len(f.member.Refused()) + len(f.certRefused())) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_controlplanes_alive", Help: "Other control planes seen alive."},
				func() float64 { return float64(len(f.controlPlanes())) }),
		)
	}
	var lctx context.Context
	lctx, f.stop = context.WithCancel(context.WithoutCancel(ctx))
	adopted, verified := make(chan struct{}), make(chan struct{})
	go f.adopt(lctx, adopted)
	go f.verifyCertificates(lctx, verified)
	go func() {
		<-adopted
		<-verified
		close(f.done)
	}()
	return f, nil
}

func (f *Fleet) meta() gossip.Meta {
	return gossip.Meta{Role: gossip.RoleControlPlane, ID: f.cfg.Instance, Fleet: *f.fleetID.Load(), Version: f.cfg.Version}
}

func (f *Fleet) accept(peer gossip.Meta) error {
	id := *f.fleetID.Load()
	if id != "" && peer.Fleet != "" && peer.Fleet != id {
		return fmt.Errorf("wrong storage: member %s mounts fleet %s, this fleet is %s", peer.ID, peer.Fleet, id)
	}
	return nil
}

func (f *Fleet) notify() {
	for _, c := range []chan struct{}{f.changed, f.probe} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// adopt records the storage identity of the first agents to join, when the database has none
// yet. The database arbitrates between control planes: the first to adopt wins, the others read
// its choice.
func (f *Fleet) adopt(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.changed:
		case <-t.C:
		}
		if *f.fleetID.Load() != "" {
			continue
		}
		candidate := ""
		counts := map[string]int{}
		for _, p := range f.member.Peers() {
			if p.Meta.Fleet != "" {
				counts[p.Meta.Fleet]++
			}
		}
		for id, n := range counts {
			if candidate == "" || n > counts[candidate] || (n == counts[candidate] && id < candidate) {
				candidate = id
			}
		}
		if candidate == "" {
			continue
		}
		adopted, err := f.settings.AdoptSetting(ctx, store.SettingFleetID, candidate, time.Now())
		if err != nil {
			f.log.Warn("adopting the fleet id", "err", err)
			continue
		}
		f.fleetID.Store(&adopted)
		f.log.Info("fleet id adopted: agents on other storage will be refused", "fleet_id", adopted)
		if err := f.member.UpdateMeta(2 * time.Second); err != nil {
			f.log.Debug("gossiping the fleet id", "err", err)
		}
	}
}

// FleetID is the fleet's identity, adopted from its storage ("" until the first agent joins).
func (f *Fleet) FleetID() string { return *f.fleetID.Load() }

// Addr is the gossip address this control plane is reached at.
func (f *Fleet) Addr() string { return f.member.Addr() }

// agents returns the live agents of this fleet; withSuspect includes those gossip suspects.
func (f *Fleet) agents(withSuspect bool) []gossip.Peer {
	id := *f.fleetID.Load()
	var out []gossip.Peer
	for _, p := range f.member.Peers() {
		if p.Meta.Role != gossip.RoleAgent || id == "" || p.Meta.Fleet != id || p.Meta.URL == "" {
			continue
		}
		if p.State != "alive" && !withSuspect {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (f *Fleet) controlPlanes() []gossip.Peer {
	var out []gossip.Peer
	for _, p := range f.member.Peers() {
		if p.Meta.Role == gossip.RoleControlPlane {
			out = append(out, p)
		}
	}
	return out
}

// client returns the (cached) RPC client of an agent.
func (f *Fleet) client(p gossip.Peer) *counted {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.clients[p.Meta.ID]
	if !ok || c.URL() != p.Meta.URL {
		c = &counted{Client: agentclient.Named(p.Meta.ID, p.Meta.URL, f.cfg.AgentToken,
			agentclient.WithTLS(f.cfg.AgentTLS), agentclient.AllowPlaintext(f.cfg.AllowPlaintext)),
			note: func(err error) { f.noteCert(p, err) }}
		f.clients[p.Meta.ID] = c
	}
	return c
}

// Pick implements envs.Agents: among live agents of this fleet that meet need, the one with the
// least work (its gossiped load plus what this control plane has sent it since), ties broken at
// random so that equal agents share the work.
func (f *Fleet) Pick(_ context.Context, need envs.Need) (envs.Agent, error) {
	peers := f.agents(false)
	var best []*counted
	bestLoad := 0
	for _, p := range peers {
		if p.Meta.ID == need.Avoid || f.refusedCert(p) != "" {
			continue
		}
		if need.PythonPath != "" && !p.Meta.HasPython(need.PythonPath) {
			continue
		}
		if need.PythonVersion != "" && p.Meta.PythonFor(need.PythonVersion) == "" {
			continue
		}
		c := f.client(p)
		load := p.Meta.Load + int(c.inFlight.Load())
		switch {
		case len(best) == 0 || load < bestLoad:
			best, bestLoad = []*counted{c}, load
		case load == bestLoad:
			best = append(best, c)
		}
	}
	if len(best) == 0 {
		return nil, f.noAgent(need, peers)
	}
	return best[rand.IntN(len(best))], nil
}

func (f *Fleet) noAgent(need envs.Need, peers []gossip.Peer) error {
	if *f.fleetID.Load() == "" || len(peers) == 0 {
		return errcode.New(errcode.NoAgentAvailable, "no agent is alive in the fleet")
	}
	var what string
	switch {
	case need.PythonPath != "":
		what = fmt.Sprintf("has the interpreter %s that the environment is bound to", need.PythonPath)
	case need.PythonVersion != "":
		what = fmt.Sprintf("offers Python %s", need.PythonVersion)
	default:
		what = "can take it"
	}
	var names []string
	for _, p := range peers {
		if p.Meta.ID != need.Avoid {
			names = append(names, p.Meta.ID)
		}
	}
	sort.Strings(names)
	return &envs.NoAgentError{Need: need,
		Message: fmt.Sprintf("no live agent %s (live agents: %s)", what, strings.Join(names, ", "))}
}

// All implements envs.Agents.
func (f *Fleet) All(context.Context) []envs.Agent {
	var out []envs.Agent
	for _, p := range f.agents(false) {
		if f.refusedCert(p) == "" {
			out = append(out, f.client(p))
		}
	}
	return out
}

// Gone implements envs.Agents. An agent counts as gone once gossip no longer lists it (it left or
// was declared dead). One that still answers is not gone; one that neither answers nor leaves the
// member list within GoneWait is treated as not gone, because its uv may still be running.
func (f *Fleet) Gone(ctx context.Context, name string) bool {
	deadline := time.Now().Add(f.cfg.GoneWait)
	for {
		var peer *gossip.Peer
		for _, p := range f.agents(true) {
			if p.Meta.ID == name {
				peer = &p
				break
			}
		}
		if peer == nil {
			return true
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := f.client(*peer).Ping(pctx)
		cancel()
		if err == nil {
			return false
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

var _ envs.Viewer = (*Fleet)(nil)

// View implements envs.Viewer: the fleet as this control plane's gossip sees it.
func (f *Fleet) View(context.Context) envs.AgentsView {
	m := &envs.FleetMembership{FleetID: *f.fleetID.Load(), ControlPlane: f.cfg.Instance, GossipAddr: f.member.Addr(),
		ControlPlanes: []string{}, Refused: f.member.Refused()}
	v := envs.AgentsView{Mode: envs.ModeFleet, Agents: []envs.AgentView{}, Fleet: m}
	for _, p := range f.agents(true) {
		if why := f.refusedCert(p); why != "" {
			m.Refused[p.Meta.ID] = why
			continue
		}
		c := f.client(p)
		av := envs.AgentView{ID: p.Meta.ID, URL: p.Meta.URL, State: p.State, Sandbox: p.Meta.Sandbox, Version: p.Meta.Version,
			Interpreters: []envs.Interpreter{},
			Gossip:       &envs.AgentGossip{Addr: p.Addr, Load: p.Meta.Load + int(c.inFlight.Load()), FleetID: p.Meta.Fleet}}
		for _, py := range p.Meta.Pythons {
			av.Interpreters = append(av.Interpreters, envs.Interpreter{Version: py.Version, Path: py.Path})
		}
		envs.SortInterpreters(av.Interpreters)
		v.Agents = append(v.Agents, av)
	}
	sort.Slice(v.Agents, func(i, j int) bool { return v.Agents[i].ID < v.Agents[j].ID })
	for _, p := range f.controlPlanes() {
		m.ControlPlanes = append(m.ControlPlanes, p.Meta.ID)
	}
	sort.Strings(m.ControlPlanes)
	// Agents of another fleet that slipped in before adoption are refused too.
	for _, p := range f.member.Peers() {
		if p.Meta.Role == gossip.RoleAgent && m.FleetID != "" && p.Meta.Fleet != m.FleetID {
			m.Refused[p.Name] = fmt.Sprintf("wrong storage: fleet %s", p.Meta.Fleet)
		}
	}
	return v
}

// Close leaves the fleet. It is idempotent.
func (f *Fleet) Close() error {
	var err error
	f.once.Do(func() {
		f.stop()
		<-f.done
		err = f.member.Close()
	})
	return err
}

// counted is an agent client that counts the work this control plane has in flight on it, so that
// a burst of requests spreads before the agents' gossiped load catches up.
type counted struct {
	*agentclient.Client
	inFlight atomic.Int64
	note     func(error) // what a call says of the certificates (noteCert)
}

func (c *counted) track() func() {
	c.inFlight.Add(1)
	return func() { c.inFlight.Add(-1) }
}

func (c *counted) Lock(ctx context.Context, r envs.LockRequest) (envs.Locked, error) {
	defer c.track()()
	res, err := c.Client.Lock(ctx, r)
	c.note(err)
	return res, err
}

func (c *counted) Build(ctx context.Context, r envs.BuildRequest) (envs.Build, error) {
	defer c.track()()
	res, err := c.Client.Build(ctx, r)
	c.note(err)
	return res, err
}

func (c *counted) Run(ctx context.Context, r envs.RunSpec) (envs.RunResult, error) {
	defer c.track()()
	res, err := c.Client.Run(ctx, r)
	c.note(err)
	return res, err
}
