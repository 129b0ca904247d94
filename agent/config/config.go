// Package config loads the agent's configuration from the environment: defaults, then variables,
// then normalisation (absolute paths, uv resolved) and validation that reports every problem at
// once.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/fleettls"
	"github.com/envfabric/envfabric/shared/gossip"
	"github.com/envfabric/envfabric/shared/httpserver"
	"github.com/envfabric/envfabric/shared/logging"
)

// Config is the agent's whole configuration.
type Config struct {
	ListenAddr string
	// Token is the bearer token shared with the control plane; empty means no authentication.
	Token   string
	AgentID string
	// MetricsToken is the read-only credential for /metrics and the probes (AGENT_METRICS_TOKEN).
	MetricsToken string
	// TLS is the agent's certificate, key and the fleet's CA bundle (FLEET_TLS_*); unset, the agent
	// speaks plaintext, which beyond loopback needs AllowPlaintext (AGENT_ALLOW_PLAINTEXT).
	TLS            fleettls.Files
	AllowPlaintext bool

	DataRoot     string
	EnvsBasePath string
	UVCacheDir   string

	// UVBin is the absolute path of the uv binary.
	UVBin string
	// UVLinkMode is "hardlink" or "copy"; copy only when UV_LINK_MODE says so.
	UVLinkMode     string
	UVDefaultIndex string
	// UVPassthrough holds the uv.PassthroughVars set in the agent's environment.
	UVPassthrough map[string]string
	// Path and Home are the agent's PATH and HOME, handed to uv.
	Path string
	Home string

	DefaultPython     string
	RunMaxOutputBytes int64

	Log logging.Config

	// Gossip is the fleet membership; not Enabled means a single host without gossip.
	Gossip gossip.Config
	// AdvertiseURL is the Connect address control planes use to reach this agent.
	AdvertiseURL string

	UsageScanInterval time.Duration
	CacheScanInterval time.Duration
	// UVWheelsOnly makes uv install wheels only (UV_NO_BUILD): building a source distribution
	// runs its code on the agent, with the agent's rights.
	UVWheelsOnly bool
	// Sandbox is how user code is isolated (docs/sandbox.md).
	Sandbox Sandbox
	// Warm is the pool of warm interpreters (WARM_*).
	Warm Warm
	// HTTP bounds what clients can hold of the agent's server (HTTP_*).
	HTTP httpserver.Limits
}

// Sandbox is the RUN_* block.
type Sandbox struct {
	// Tier is RUN_SANDBOX; the default is the strongest, and the agent refuses to start when the
	// host cannot provide the configured tier.
	Tier sandbox.Tier
	// User is RUN_USER, resolved to UID and GID at load (user and namespace tiers).
	User     string
	UID, GID int
	// AllowNetwork is RUN_ALLOW_NETWORK (namespace tier); NetworkDeny is RUN_NETWORK_DENY, the
	// networks (CIDRs) such runs must not reach beyond the host's own addresses.
	AllowNetwork bool
	NetworkDeny  []string
	Limits       sandbox.Limits
	// RunLimits are RUN_LIMIT_TOTAL_*: the run as a whole, through a cgroup per run.
	RunLimits sandbox.RunLimits
}

// Default RUN_LIMIT_* values: backstops behind the run timeout, generous enough for scientific
// Python (address space is not resident memory: numpy and friends reserve much more than they
// touch).
const (
	DefaultRunCPUSeconds  = 600
	DefaultRunMemoryBytes = 4 << 30
	DefaultRunFileBytes   = 256 << 20
	DefaultRunOpenFiles   = 1024
	DefaultRunProcesses   = 512
	// The whole-run bounds (cgroup) of the user and namespace tiers; the process tier, meant for
	// agents without root (which usually cannot make cgroups), has none unless they are set.
	DefaultRunTotalMemoryBytes = 4 << 30
	DefaultRunTotalProcesses   = 512
)

// DefaultHTTP are the agent's HTTP_* defaults. Requests that do work (every RPC) get an hour to
// answer: longer than the control planes' defaults for a run (MAX_EXECUTION_TIMEOUT 10m) and a uv
// operation (UV_OPERATION_TIMEOUT 30m) with room, so HTTP_WORK_TIMEOUT needs raising
// only with those. The connection cap is for a few control planes and Prometheus, with room.
var DefaultHTTP = httpserver.Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       time.Minute,
	WriteTimeout:      time.Minute,
	WorkTimeout:       time.Hour,
	// Longer than the control plane's keep-alive (90s), so the client closes first and never
	// sends on a connection the agent is closing.
	IdleTimeout:    2 * time.Minute,
	MaxHeaderBytes: 64 << 10,
	MaxConns:       512,
	ProbeConns:     8,
}

// Load reads the configuration from src.
func Load(src config.Source) (Config, error) {
	r := config.NewReader(src)
	c := Config{
		ListenAddr:     r.String("AGENT_LISTEN_ADDR", "127.0.0.1:8081"),
		Token:          r.String("AGENT_TOKEN", ""),
		DataRoot:       r.String("DATA_ROOT", "/mnt/nas"),
		UVLinkMode:     strings.ToLower(r.String("UV_LINK_MODE", "hardlink")),
		UVDefaultIndex: r.String("UV_DEFAULT_INDEX", ""),
		DefaultPython:  r.String("DEFAULT_PYTHON", "3.11"),
		Path:           r.String("PATH", "/usr/local/bin:/usr/bin:/bin"),
		Home:           r.String("HOME", "/root"),
		UVPassthrough:  map[string]string{},
	}
	allowNoToken := r.Bool("AGENT_ALLOW_NO_TOKEN", false)
	c.MetricsToken = r.String("AGENT_METRICS_TOKEN", "")
	c.TLS = fleettls.FromEnv(r)
	c.AllowPlaintext = r.Bool("AGENT_ALLOW_PLAINTEXT", false)
	c.RunMaxOutputBytes = int64(r.Int("RUN_MAX_OUTPUT_BYTES", 1<<20))

	hostname, _ := os.Hostname()
	c.AgentID = r.String("AGENT_ID", hostname)
	if c.AgentID == "" {
		r.Fail("AGENT_ID: not set and the hostname is unknown")
	}

	c.DataRoot = absPath(r, "DATA_ROOT", c.DataRoot)
	c.EnvsBasePath = absPath(r, "ENVS_BASE_PATH", r.String("ENVS_BASE_PATH", filepath.Join(c.DataRoot, "envs")))
	c.UVCacheDir = absPath(r, "UV_CACHE_DIR", r.String("UV_CACHE_DIR", filepath.Join(c.DataRoot, "uv_cache")))
	if c.EnvsBasePath == c.UVCacheDir {
		r.Fail("ENVS_BASE_PATH and UV_CACHE_DIR must differ (both %s)", c.EnvsBasePath)
	}

	bin, err := lookPath(r.String("UV_BIN", "uv"), c.Path)
	if err != nil {
		r.Fail("UV_BIN: %v", err)
	}
	c.UVBin = bin

	if c.UVLinkMode != "hardlink" && c.UVLinkMode != "copy" {
		r.Fail("UV_LINK_MODE=%q: want hardlink or copy", c.UVLinkMode)
	}
	if c.UVDefaultIndex != "" {
		if u, err := url.Parse(c.UVDefaultIndex); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			r.Fail("UV_DEFAULT_INDEX=%q: want an http(s) URL", c.UVDefaultIndex)
		}
	}
	for _, name := range uv.PassthroughVars {
		if v, ok := src(name); ok && v != "" {
			c.UVPassthrough[name] = v
		}
	}
	if c.RunMaxOutputBytes <= 0 {
		r.Fail("RUN_MAX_OUTPUT_BYTES=%d: must be positive", c.RunMaxOutputBytes)
	}

	host, _, err := net.SplitHostPort(c.ListenAddr)
	if err != nil {
		r.Fail("AGENT_LISTEN_ADDR=%q: %v", c.ListenAddr, err)
	} else {
		if c.Token == "" && !allowNoToken && !config.IsLoopback(host) {
			r.Fail("AGENT_TOKEN is required when AGENT_LISTEN_ADDR (%s) is not a loopback address; set AGENT_ALLOW_NO_TOKEN=true to run unauthenticated", c.ListenAddr)
		}
		if !c.TLS.Set() && !c.AllowPlaintext && !config.IsLoopback(host) {
			r.Fail("FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA are required when AGENT_LISTEN_ADDR (%s) is not a loopback address: control planes' calls carry the token and user code (make them with envfabric-ca); set AGENT_ALLOW_PLAINTEXT=true to accept plaintext", c.ListenAddr)
		}
	}
	switch {
	case c.MetricsToken == "":
	case c.Token == "":
		r.Fail("AGENT_METRICS_TOKEN without AGENT_TOKEN: an agent without a token is open to everyone anyway")
	case c.MetricsToken == c.Token:
		r.Fail("AGENT_METRICS_TOKEN must differ from AGENT_TOKEN: it is the credential that cannot run code")
	}

	c.Gossip = gossip.FromEnv(r)
	c.Gossip.NodeName = c.AgentID
	scheme := "http"
	if c.TLS.Set() {
		scheme = "https"
	}
	c.AdvertiseURL = r.String("AGENT_ADVERTISE_URL", scheme+"://"+c.ListenAddr)
	c.UsageScanInterval = r.Duration("USAGE_SCAN_INTERVAL", 30*time.Second)
	c.CacheScanInterval = r.Duration("CACHE_SCAN_INTERVAL", 5*time.Minute)
	if c.Gossip.Enabled() {
		if u, err := url.Parse(c.AdvertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			r.Fail("AGENT_ADVERTISE_URL=%q: want an http(s) URL", c.AdvertiseURL)
		} else if u.Scheme != scheme {
			r.Fail("AGENT_ADVERTISE_URL=%q: this agent speaks %s (FLEET_TLS_* set or not); advertise a %s:// URL", c.AdvertiseURL, scheme, scheme)
		} else if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
			r.Fail("AGENT_ADVERTISE_URL=%q: an unspecified address cannot be reached; set AGENT_ADVERTISE_URL to this host's address", c.AdvertiseURL)
		}
	}
	if c.UsageScanInterval < time.Second {
		r.Fail("USAGE_SCAN_INTERVAL must be at least 1s")
	}
	if c.CacheScanInterval < time.Second {
		r.Fail("CACHE_SCAN_INTERVAL must be at least 1s")
	}
	c.UVWheelsOnly = r.Bool("UV_WHEELS_ONLY", false)
	c.Sandbox = loadSandbox(r)
	c.Warm = loadWarm(r)
	c.HTTP = httpserver.FromEnv(r, DefaultHTTP)

	c.Log = logging.FromEnv(r)
	return c, errors.Join(r.Errs()...)
}

func loadSandbox(r *config.Reader) Sandbox {
	s := Sandbox{
		User:         r.String("RUN_USER", "nobody"),
		AllowNetwork: r.Bool("RUN_ALLOW_NETWORK", false),
	}
	for _, c := range strings.Split(r.String("RUN_NETWORK_DENY", ""), ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		if _, n, err := net.ParseCIDR(c); err != nil || n.IP.To4() == nil {
			r.Fail("RUN_NETWORK_DENY: %q is not an IPv4 CIDR (runs have no IPv6)", c)
			continue
		}
		s.NetworkDeny = append(s.NetworkDeny, c)
	}
	tier, err := sandbox.ParseTier(r.String("RUN_SANDBOX", string(sandbox.Namespace)))
	if err != nil {
		r.Fail("RUN_SANDBOX: %v", err)
	}
	s.Tier = tier
	limit := func(name string, def int) uint64 {
		v := r.Int(name, def)
		if v < 0 {
			r.Fail("%s=%d: must be 0 (unlimited) or positive", name, v)
			return 0
		}
		return uint64(v)
	}
	s.Limits = sandbox.Limits{
		CPUSeconds:  limit("RUN_LIMIT_CPU_SECONDS", DefaultRunCPUSeconds),
		MemoryBytes: limit("RUN_LIMIT_MEMORY_BYTES", DefaultRunMemoryBytes),
		FileBytes:   limit("RUN_LIMIT_FILE_BYTES", DefaultRunFileBytes),
		OpenFiles:   limit("RUN_LIMIT_OPEN_FILES", DefaultRunOpenFiles),
		Processes:   limit("RUN_LIMIT_PROCESSES", DefaultRunProcesses),
	}
	totalMemory, totalProcesses := DefaultRunTotalMemoryBytes, DefaultRunTotalProcesses
	if !tier.DropsPrivileges() {
		totalMemory, totalProcesses = 0, 0
	}
	s.RunLimits = sandbox.RunLimits{
		MemoryBytes: limit("RUN_LIMIT_TOTAL_MEMORY_BYTES", totalMemory),
		Processes:   limit("RUN_LIMIT_TOTAL_PROCESSES", totalProcesses),
	}
	if tier.DropsPrivileges() {
		uid, gid, err := LookupRunUser(s.User)
		if err != nil {
			r.Fail("RUN_USER: %v", err)
		}
		s.UID, s.GID = uid, gid
	}
	return s
}

// LookupRunUser resolves a user name (or numeric uid) to its uid and primary gid, and refuses
// root: code must never run with the agent's privileges in the tiers that drop them.
func LookupRunUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return 0, 0, fmt.Errorf("user %q does not exist on this host (create it, see docs/sandbox.md)", name)
		}
	}
	uid, errU := strconv.Atoi(u.Uid)
	gid, errG := strconv.Atoi(u.Gid)
	if errU != nil || errG != nil {
		return 0, 0, fmt.Errorf("user %q has a non-numeric uid or gid", name)
	}
	if uid == 0 || gid == 0 {
		return 0, 0, fmt.Errorf("user %q has uid %d gid %d; the run user must not be root or in group 0", name, uid, gid)
	}
	return uid, gid, nil
}

func absPath(r *config.Reader, name, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		r.Fail("%s=%q: %v", name, p, err)
		return p
	}
	return a
}

// lookPath resolves name like a shell would with PATH=path: a name with a slash is taken as a
// path, others are searched in path. The result is absolute and executable.
func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		abs, err := filepath.Abs(name)
		if err != nil {
			return "", err
		}
		if !executable(abs) {
			return "", fmt.Errorf("%s is not an executable file", abs)
		}
		return abs, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		if p := filepath.Join(dir, name); executable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH", name)
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
