package envs

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// The modes of a control plane's agents (AgentsView.Mode).
const (
	// ModeSingleHost is one agent at a fixed address (AGENT_URL), no gossip.
	ModeSingleHost = "single-host"
	// ModeFleet is agents found by gossip: the agents and control planes that share one storage
	// and one gossip cluster.
	ModeFleet = "fleet"
)

// The states of an agent in an AgentsView.
const (
	AgentAlive   = "alive"   // gossip sees it alive, or (single host) it answered just now
	AgentSuspect = "suspect" // gossip suspects it has failed
	// AgentUnreachable is the single host's agent that did not answer.
	AgentUnreachable = "unreachable"
)

// AgentsView is the agents as this control plane sees them (GET /agents). Both modes produce
// it; the single host's is a subset of the fleet's: Fleet is nil, and each agent's Gossip too.
type AgentsView struct {
	Mode   string
	Agents []AgentView
	// Fleet is the membership of this control plane in its fleet; nil on a single host.
	Fleet *FleetMembership
}

// FleetMembership is what a control plane in a fleet knows beyond its agents.
type FleetMembership struct {
	FleetID       string // the fleet's identity, held by its storage ("" until adopted)
	ControlPlane  string // this control plane's instance id
	GossipAddr    string
	ControlPlanes []string          // the other control planes seen, sorted
	Refused       map[string]string // member → why it is kept out
}

// AgentView is one agent.
type AgentView struct {
	ID           string
	URL          string
	State        string // AgentAlive, AgentSuspect or AgentUnreachable
	Sandbox      string // the sandbox tier ("" when the agent does not say)
	Version      string
	Interpreters []Interpreter // sorted by version, then path
	// Gossip is what the fleet gossips about the agent; nil on a single host.
	Gossip *AgentGossip
	// Probe is the answer of a call made for this view; nil when the view comes from gossip.
	Probe *AgentProbe
}

// AgentGossip is an agent as gossip describes it.
type AgentGossip struct {
	Addr    string
	Load    int
	FleetID string
}

// AgentProbe is the outcome of asking the agent to describe itself.
type AgentProbe struct {
	Reachable bool
	Error     string // why it is not reachable
	Storage   AgentStorage
}

// AgentStorage is how an agent uses the shared storage, as it says itself.
type AgentStorage struct {
	UVVersion    string
	EnvsBasePath string
	UVCacheDir   string
	LinkMode     string
}

// Interpreter is one Python an agent offers. A list, not a map by version: one version may be
// offered at two paths, and environments are bound to a path.
type Interpreter struct {
	Version string
	Path    string
}

// SortInterpreters orders interpreters by version, then path, for a stable view.
func SortInterpreters(ps []Interpreter) {
	slices.SortFunc(ps, func(a, b Interpreter) int {
		return cmp.Or(cmp.Compare(a.Version, b.Version), cmp.Compare(a.Path, b.Path))
	})
}

// AgentInfo is an agent's description of itself.
type AgentInfo struct {
	ID           string
	URL          string
	Version      string
	Sandbox      string
	Interpreters []Interpreter
	Storage      AgentStorage
}

// Describer is an agent that can describe itself (the agent client is one); the URL is set even
// when it fails. On a single host, the view asks it; an agent that is not one is shown by a
// ping only.
type Describer interface {
	Describe(ctx context.Context) (AgentInfo, error)
}

// Viewer produces the agents view: the single host (One) and the fleet both do.
type Viewer interface {
	View(ctx context.Context) AgentsView
}

// describeTimeout bounds the single host's call for the view.
const describeTimeout = 5 * time.Second

// View implements Viewer: the single host's agent, asked just now.
func (s *Single) View(ctx context.Context) AgentsView {
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	av := AgentView{ID: s.a.Name(), Interpreters: []Interpreter{}}
	var (
		err     error
		storage AgentStorage
	)
	if d, ok := s.a.(Describer); ok {
		var info AgentInfo
		info, err = d.Describe(ctx)
		av.URL = info.URL
		if err == nil {
			av.ID = cmp.Or(info.ID, av.ID)
			av.Version, av.Sandbox = info.Version, info.Sandbox
			av.Interpreters = append(av.Interpreters, info.Interpreters...)
			SortInterpreters(av.Interpreters)
			storage = info.Storage
		}
	} else {
		err = s.a.Ping(ctx)
	}
	av.State, av.Probe = AgentAlive, &AgentProbe{Reachable: err == nil, Storage: storage}
	if err != nil {
		av.State, av.Probe.Error = AgentUnreachable, err.Error()
	}
	return AgentsView{Mode: ModeSingleHost, Agents: []AgentView{av}}
}
