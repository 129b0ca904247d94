package gossip

import (
	"net"

	"github.com/envfabric/envfabric/shared/config"
)

// FromEnv reads the gossip settings agents and control planes share (GOSSIP_BIND_ADDR,
// GOSSIP_ADVERTISE_ADDR, GOSSIP_SEEDS, GOSSIP_KEYS, GOSSIP_PROFILE) and reports problems on r.
// NodeName is the caller's to set. An empty BindAddr means no gossip: a single host.
func FromEnv(r *config.Reader) Config {
	c := Config{
		BindAddr:      r.String("GOSSIP_BIND_ADDR", ""),
		AdvertiseAddr: r.String("GOSSIP_ADVERTISE_ADDR", ""),
		Profile:       r.String("GOSSIP_PROFILE", "lan"),
	}
	seeds, err := ParseSeeds(r.String("GOSSIP_SEEDS", ""))
	if err != nil {
		r.Fail("GOSSIP_SEEDS: %v", err)
	}
	c.Seeds = seeds
	keys, err := ParseKeys(r.String("GOSSIP_KEYS", ""))
	if err != nil {
		r.Fail("GOSSIP_KEYS: %v", err)
	}
	c.Keys = keys
	if !c.Enabled() {
		return c
	}
	host, _, err := net.SplitHostPort(c.BindAddr)
	switch {
	case err != nil:
		r.Fail("GOSSIP_BIND_ADDR=%q: want host:port", c.BindAddr)
	case len(c.Keys) == 0 && !config.IsLoopback(host) && !r.Bool("GOSSIP_ALLOW_PLAINTEXT", false):
		r.Fail("GOSSIP_KEYS is required when GOSSIP_BIND_ADDR (%s) is not a loopback address: gossip carries the fleet's membership; set GOSSIP_ALLOW_PLAINTEXT=true to accept that risk", c.BindAddr)
	}
	if c.Profile != "lan" && c.Profile != "local" {
		r.Fail("GOSSIP_PROFILE=%q: want lan or local", c.Profile)
	}
	return c
}

// Enabled reports whether the member gossips at all.
func (c Config) Enabled() bool { return c.BindAddr != "" }

// Loopback reports whether gossip stays on this machine.
func (c Config) Loopback() bool {
	host, _, err := net.SplitHostPort(c.BindAddr)
	return err == nil && config.IsLoopback(host)
}
