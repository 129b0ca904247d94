// Package config loads the agent's configuration from the environment: defaults, then variables,
// then normalisation (absolute paths, uv resolved) and validation that reports every problem at
// once.
package config

import (
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/envfabric/envfabric/shared/gossip"
)

// Config is the agent's whole configuration.
type Config struct {
	ListenAddr string
	// Token is the bearer token shared with the control plane; empty means no authentication.
	Token   string
	AgentID string

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

	LogLevel  slog.Level
	LogFormat string

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
		LogFormat:      strings.ToLower(r.String("LOG_FORMAT", "text")),
		UVPassthrough:  map[string]string{},
	}
	allowNoToken := r.Bool("AGENT_ALLOW_NO_TOKEN", false)
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
	} else if c.Token == "" && !allowNoToken && !config.IsLoopback(host) {
		r.Fail("AGENT_TOKEN is required when AGENT_LISTEN_ADDR (%s) is not a loopback address; set AGENT_ALLOW_NO_TOKEN=true to run unauthenticated", c.ListenAddr)
	}

	c.Gossip = gossip.FromEnv(r)
	c.Gossip.NodeName = c.AgentID
	c.AdvertiseURL = r.String("AGENT_ADVERTISE_URL", "http://"+c.ListenAddr)
	c.UsageScanInterval = r.Duration("USAGE_SCAN_INTERVAL", 30*time.Second)
	c.CacheScanInterval = r.Duration("CACHE_SCAN_INTERVAL", 5*time.Minute)
	if c.Gossip.Enabled() {
		if u, err := url.Parse(c.AdvertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			r.Fail("AGENT_ADVERTISE_URL=%q: want an http(s) URL", c.AdvertiseURL)
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

	if err := c.LogLevel.UnmarshalText([]byte(r.String("LOG_LEVEL", "info"))); err != nil {
		r.Fail("LOG_LEVEL: %v", err)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		r.Fail("LOG_FORMAT=%q: want json or text", c.LogFormat)
	}
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
