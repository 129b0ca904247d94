// Package config loads the control plane's configuration: defaults, then the environment
// (the TRD's variable names), then normalisation and validation that reports every problem at once.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/fleettls"
	"github.com/envfabric/envfabric/shared/gossip"
	"github.com/envfabric/envfabric/shared/httpserver"
	"github.com/envfabric/envfabric/shared/logging"
)

// Config is everything the control plane reads at start-up.
type Config struct {
	ListenAddr         string
	DataRoot           string
	DatabaseURL        string // empty: embedded SQLite at SQLitePath
	SQLitePath         string
	ReservePath        string // the SQLite database's disk reserve, beside it
	AgentURL           string
	AgentToken         string
	DefaultPython      string
	ExecutionTimeout   time.Duration
	MaxExecutionTime   time.Duration
	MaxOutputBytes     int64
	CleanupIdle        time.Duration
	CleanupInterval    time.Duration // 0 disables the scheduled cleanup
	IdleAfter          time.Duration
	HostPyproject      string
	LeaseTTL           time.Duration
	OperationTimeout   time.Duration
	MaxBodyBytes       int64
	InstanceID         string
	Log                logging.Config
	AllowRemoteNoToken bool
	// AgentTLS is this control plane's certificate for calling agents, its key and the fleet's CA
	// bundle (FLEET_TLS_*); unset, agents are reached in plaintext, which beyond loopback needs
	// AllowPlaintext (AGENT_ALLOW_PLAINTEXT).
	AgentTLS       fleettls.Files
	AllowPlaintext bool

	// Gossip is this control plane's membership in a fleet (the agents and control planes that
	// share one storage and one gossip cluster): when Enabled, agents are found by gossip and
	// AgentURL is not used.
	Gossip gossip.Config
	// FleetID pins the fleet's identity (FLEET_ID), the one its storage holds in
	// $DATA_ROOT/.envfabric-fleet-id; empty: adopted from the first agents.
	FleetID string
	// CachePruneInterval is how often the cleanup leader prunes the uv cache; 0 never.
	CachePruneInterval time.Duration
	// OSVData names the offline advisories (OSV_DATA): a directory of OSV JSON records or a zip
	// in OSV's export layout (the PyPI ecosystem's all.zip); empty: no advisories. It is polled
	// every OSVPollInterval (OSV_POLL_INTERVAL) and reloaded when it changes.
	OSVData         string
	OSVPollInterval time.Duration
	// PackagePolicy names the install policy (PACKAGE_POLICY): a TOML file of deny rules that
	// create, add and update are checked against (controlplane/pkgpolicy); empty: none.
	PackagePolicy string
	// HibernateAfter: a build unused this long is removed and its environments show HIBERNATED
	// until their next run or sync wakes them (HIBERNATE_AFTER; 0, the default: never).
	HibernateAfter time.Duration
	// DiskBudgetBytes: beyond this many bytes held by builds the least recently used are
	// hibernated first (DISK_BUDGET_BYTES; 0, the default: no budget).
	DiskBudgetBytes int64
	// BuildVerifyInterval is how often the maintenance pass verifies a few builds against their
	// packages' RECORD files (BUILD_VERIFY_INTERVAL; 0: never).
	BuildVerifyInterval time.Duration
	API                 API // callers and package references the REST API admits (apiauth.go)

	// MinFreeBytes is the free space under DATA_ROOT below which /readyz fails; 0 turns the check off.
	MinFreeBytes int64
	// ReserveBytes is the ballast kept under DATA_ROOT/controlplane for the SQLite audit database,
	// released when the disk fills up so that deletes and cleanups can still be recorded; 0 none.
	ReserveBytes int64
	// HTTP bounds what clients can hold of the REST server (HTTP_*).
	HTTP httpserver.Limits
}

// DefaultHTTP are the control plane's HTTP_* defaults but HTTP_WORK_TIMEOUT, which follows the
// longest work a request can wait for (see Load).
var DefaultHTTP = httpserver.Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       time.Minute,
	WriteTimeout:      time.Minute,
	// Longer than common clients' keep-alive (Go's transport: 90s), so they close first.
	IdleTimeout:    2 * time.Minute,
	MaxHeaderBytes: 64 << 10,
	MaxConns:       2048,
	ProbeConns:     16,
}

// workMargin is what a request that does work may take beyond the run or the uv operation it
// waits for: audit writes, the lease, a restore after a failure.
const workMargin = 5 * time.Minute

// Gossiping reports whether this control plane is in a fleet: agents found by gossip, not one
// agent at AGENT_URL.
func (c Config) Gossiping() bool { return c.Gossip.Enabled() }

// Load reads the configuration from src.
func Load(src config.Source) (Config, error) {
	r := config.NewReader(src)
	host, _ := os.Hostname()
	c := Config{
		ListenAddr:         r.String("LISTEN_ADDR", "127.0.0.1:8080"),
		DataRoot:           r.String("DATA_ROOT", "/mnt/nas"),
		DatabaseURL:        r.String("DATABASE_URL", ""),
		AgentURL:           r.String("AGENT_URL", "http://127.0.0.1:8081"),
		AgentToken:         r.String("AGENT_TOKEN", ""),
		DefaultPython:      r.String("DEFAULT_PYTHON", "3.11"),
		ExecutionTimeout:   r.Seconds("EXECUTION_TIMEOUT", 30*time.Second),
		MaxExecutionTime:   r.Seconds("MAX_EXECUTION_TIMEOUT", 10*time.Minute),
		MaxOutputBytes:     int64(r.Int("RUN_MAX_OUTPUT_BYTES", 1<<20)),
		CleanupIdle:        time.Duration(r.Float("CLEANUP_IDLE_HOURS", 72) * float64(time.Hour)),
		CleanupInterval:    r.Duration("CLEANUP_INTERVAL", time.Hour),
		IdleAfter:          r.Duration("IDLE_AFTER", time.Hour),
		HostPyproject:      r.String("HOST_PYPROJECT", ""),
		LeaseTTL:           r.Duration("LEASE_TTL", 30*time.Second),
		OperationTimeout:   r.Duration("UV_OPERATION_TIMEOUT", 30*time.Minute),
		MaxBodyBytes:       int64(r.Int("MAX_BODY_BYTES", 8<<20)),
		InstanceID:         r.String("INSTANCE_ID", host+"-"+fmt.Sprint(os.Getpid())),
		AllowRemoteNoToken: r.Bool("AGENT_ALLOW_NO_TOKEN", false),
	}
	c.Log = logging.FromEnv(r)
	c.AgentTLS = fleettls.FromEnv(r)
	c.AllowPlaintext = r.Bool("AGENT_ALLOW_PLAINTEXT", false)
	c.Gossip = gossip.FromEnv(r)
	c.Gossip.NodeName = c.InstanceID
	c.FleetID = r.String("FLEET_ID", "")
	c.CachePruneInterval = r.Duration("CACHE_PRUNE_INTERVAL", 24*time.Hour)
	c.HibernateAfter = r.Duration("HIBERNATE_AFTER", 0)
	c.OSVData = r.String("OSV_DATA", "")
	c.OSVPollInterval = r.Duration("OSV_POLL_INTERVAL", time.Minute)
	if c.OSVPollInterval <= 0 {
		r.Fail("OSV_POLL_INTERVAL must be positive")
	}
	c.PackagePolicy = r.String("PACKAGE_POLICY", "")
	for name, p := range map[string]*string{"OSV_DATA": &c.OSVData, "PACKAGE_POLICY": &c.PackagePolicy} {
		if *p == "" {
			continue
		}
		if abs, err := filepath.Abs(*p); err != nil {
			r.Fail("%s=%q: %v", name, *p, err)
		} else if _, err := os.Stat(abs); err != nil {
			r.Fail("%s=%q: %v", name, *p, err)
		} else {
			*p = abs
		}
	}
	c.DiskBudgetBytes = int64(r.Int("DISK_BUDGET_BYTES", 0))
	c.BuildVerifyInterval = r.Duration("BUILD_VERIFY_INTERVAL", time.Hour)
	if c.HibernateAfter < 0 {
		r.Fail("HIBERNATE_AFTER must not be negative (0 never hibernates)")
	}
	if c.DiskBudgetBytes < 0 {
		r.Fail("DISK_BUDGET_BYTES must not be negative (0 is no budget)")
	}
	if c.BuildVerifyInterval < 0 {
		r.Fail("BUILD_VERIFY_INTERVAL must not be negative (0 never verifies)")
	}
	c.MinFreeBytes = int64(r.Int("DATA_ROOT_MIN_FREE_BYTES", 512<<20))
	c.ReserveBytes = int64(r.Int("DATA_ROOT_RESERVE_BYTES", 16<<20))
	if c.MinFreeBytes < 0 {
		r.Fail("DATA_ROOT_MIN_FREE_BYTES must not be negative")
	}
	if c.ReserveBytes < 0 {
		r.Fail("DATA_ROOT_RESERVE_BYTES must not be negative")
	}
	if c.Gossiping() && c.AgentToken == "" && !c.AllowRemoteNoToken && !c.Gossip.Loopback() {
		r.Fail("AGENT_TOKEN is required in a fleet beyond loopback: agents accept RPCs only from an authenticated control plane; set AGENT_ALLOW_NO_TOKEN=true to accept that risk")
	}
	if c.Gossiping() && !c.AgentTLS.Set() && !c.AllowPlaintext && !c.Gossip.Loopback() {
		r.Fail("FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA are required in a fleet beyond loopback: calls to agents carry the token and user code (make them with envfabric-ca); set AGENT_ALLOW_PLAINTEXT=true to accept plaintext")
	}
	if c.CachePruneInterval < 0 {
		r.Fail("CACHE_PRUNE_INTERVAL must not be negative")
	}
	c.API = loadAPI(r, c.ListenAddr)
	// A request that does work waits for a run or a uv operation: its answer must not be cut before
	// either can end.
	longest := max(c.MaxExecutionTime, c.OperationTimeout)
	httpDef := DefaultHTTP
	httpDef.WorkTimeout = longest + workMargin
	c.HTTP = httpserver.FromEnv(r, httpDef)
	if c.HTTP.WorkTimeout < longest {
		r.Fail("HTTP_WORK_TIMEOUT (%s) is shorter than the longest run or uv operation (%s): their answers would be cut", c.HTTP.WorkTimeout, longest)
	}
	if !filepath.IsAbs(c.DataRoot) {
		abs, err := filepath.Abs(c.DataRoot)
		if err != nil {
			r.Fail("DATA_ROOT=%q: %v", c.DataRoot, err)
		}
		c.DataRoot = abs
	}
	c.SQLitePath = filepath.Join(c.DataRoot, "controlplane", "fabric.db")
	c.ReservePath = filepath.Join(c.DataRoot, "controlplane", "reserve")
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		r.Fail("LISTEN_ADDR=%q: want host:port", c.ListenAddr)
	}
	if u, err := url.Parse(c.AgentURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.Fail("AGENT_URL=%q: want an http:// or https:// URL", c.AgentURL)
	} else if !c.Gossiping() {
		if c.AgentToken == "" && !c.AllowRemoteNoToken && !config.IsLoopback(u.Hostname()) {
			r.Fail("AGENT_TOKEN is required to reach an agent beyond loopback (%s); set AGENT_ALLOW_NO_TOKEN=true to accept that risk", c.AgentURL)
		}
		switch {
		case u.Scheme == "https" && !c.AgentTLS.Set():
			r.Fail("AGENT_URL=%q is https: set FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA (this control plane's certificate and the fleet's CA)", c.AgentURL)
		case u.Scheme == "http" && !c.AllowPlaintext && !config.IsLoopback(u.Hostname()):
			r.Fail("AGENT_URL=%q is plaintext beyond loopback: give the agent a certificate and use https://, or set AGENT_ALLOW_PLAINTEXT=true", c.AgentURL)
		}
	}
	if c.ExecutionTimeout > c.MaxExecutionTime {
		r.Fail("EXECUTION_TIMEOUT (%s) exceeds MAX_EXECUTION_TIMEOUT (%s)", c.ExecutionTimeout, c.MaxExecutionTime)
	}
	if c.CleanupIdle <= 0 {
		r.Fail("CLEANUP_IDLE_HOURS must be positive")
	}
	if c.LeaseTTL < 3*time.Second {
		r.Fail("LEASE_TTL=%s: at least 3s", c.LeaseTTL)
	}
	if c.MaxOutputBytes < 1024 {
		r.Fail("RUN_MAX_OUTPUT_BYTES must be at least 1024")
	}
	return c, errors.Join(r.Errs()...)
}
