package config_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	agentconfig "github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/gossip"
	"github.com/envfabric/envfabric/shared/logging"
)

// nobody is the default run user; every Debian host has it.
var nobodyUID, nobodyGID = func() (int, int) {
	uid, gid, err := agentconfig.LookupRunUser("nobody")
	if err != nil {
		panic(err)
	}
	return uid, gid
}()

func TestLoad(t *testing.T) {
	bin := t.TempDir()
	uvPath := filepath.Join(bin, "uv")
	if err := os.WriteFile(uvPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"PATH": bin, "AGENT_ID": "a1"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c agentconfig.Config)
		wantErr []string
	}{
		{
			name: "defaults",
			env:  with(),
			check: func(t *testing.T, c agentconfig.Config) {
				want := agentconfig.Config{
					ListenAddr: "127.0.0.1:8081", AgentID: "a1", DataRoot: "/mnt/nas",
					EnvsBasePath: "/mnt/nas/envs", UVCacheDir: "/mnt/nas/uv_cache", UVBin: uvPath,
					UVLinkMode: "hardlink", DefaultPython: "3.11", RunMaxOutputBytes: 1 << 20,
					Log: logging.Config{Level: slog.LevelInfo, Format: "text"}, Path: bin, Home: "/root",
					Gossip: gossip.Config{NodeName: "a1", Profile: "lan"}, AdvertiseURL: "http://127.0.0.1:8081",
					UsageScanInterval: 30 * time.Second, CacheScanInterval: 5 * time.Minute,
					Sandbox: agentconfig.Sandbox{
						Tier: sandbox.Namespace, User: "nobody", UID: nobodyUID, GID: nobodyGID,
						Limits:    sandbox.Limits{CPUSeconds: 600, MemoryBytes: 4 << 30, FileBytes: 256 << 20, OpenFiles: 1024, Processes: 512},
						RunLimits: sandbox.RunLimits{MemoryBytes: 4 << 30, Processes: 512},
					},
					Warm: agentconfig.Warm{
						MemoryBytes: 2 << 30, ParentsPerBuild: runtime.NumCPU(), MaxRuns: 100, TTL: 10 * time.Minute,
						MaxGrowth: 2, Start: "first-run", WaitFree: time.Second,
					},
					HTTP: agentconfig.DefaultHTTP,
				}
				if len(c.UVPassthrough) != 0 {
					t.Errorf("passthrough: got %v; want none", c.UVPassthrough)
				}
				c.UVPassthrough = nil
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got %+v; want %+v", c, want)
				}
			},
		},
		{
			name: "warm interpreters",
			env:  with("WARM_MEMORY_BYTES", "0", "WARM_PARENTS_PER_BUILD", "3", "WARM_MAX_RUNS", "0", "WARM_TTL", "1h", "WARM_MAX_GROWTH", "1.5", "WARM_START", "create", "WARM_WAIT", "0s"),
			check: func(t *testing.T, c agentconfig.Config) {
				want := agentconfig.Warm{MemoryBytes: 0, ParentsPerBuild: 3, MaxRuns: 0, TTL: time.Hour, MaxGrowth: 1.5, Start: "create"}
				if c.Warm != want {
					t.Errorf("got %+v; want %+v", c.Warm, want)
				}
			},
		},
		{
			name:    "bad warm settings, all reported",
			env:     with("WARM_MEMORY_BYTES", "-1", "WARM_PARENTS_PER_BUILD", "0", "WARM_MAX_GROWTH", "0.5", "WARM_START", "boot"),
			wantErr: []string{"WARM_MEMORY_BYTES=-1", "WARM_PARENTS_PER_BUILD=0", "WARM_MAX_GROWTH=0.5", `WARM_START="boot"`},
		},
		{
			name: "data root moves envs and cache, relative paths made absolute",
			env:  with("DATA_ROOT", "data", "UV_LINK_MODE", "copy", "LOG_LEVEL", "debug", "UV_BIN", uvPath),
			check: func(t *testing.T, c agentconfig.Config) {
				wd, _ := os.Getwd()
				if c.EnvsBasePath != filepath.Join(wd, "data", "envs") || c.UVCacheDir != filepath.Join(wd, "data", "uv_cache") {
					t.Errorf("got %q %q; want under %s/data", c.EnvsBasePath, c.UVCacheDir, wd)
				}
				if c.UVLinkMode != "copy" || c.Log.Level != slog.LevelDebug {
					t.Errorf("got %q %v; want copy, debug", c.UVLinkMode, c.Log.Level)
				}
			},
		},
		{
			name: "explicit paths, passthrough and index",
			env: with("ENVS_BASE_PATH", "/srv/e", "UV_CACHE_DIR", "/srv/c", "UV_DEFAULT_INDEX", "https://pypi.example/simple/",
				"HTTPS_PROXY", "http://proxy:3128", "DATABASE_URL", "postgres://secret"),
			check: func(t *testing.T, c agentconfig.Config) {
				if c.EnvsBasePath != "/srv/e" || c.UVCacheDir != "/srv/c" || c.UVDefaultIndex != "https://pypi.example/simple/" {
					t.Errorf("got %+v", c)
				}
				if len(c.UVPassthrough) != 1 || c.UVPassthrough["HTTPS_PROXY"] != "http://proxy:3128" {
					t.Errorf("passthrough: got %v; want only HTTPS_PROXY", c.UVPassthrough)
				}
			},
		},
		{
			name: "public address with token and TLS",
			env: with("AGENT_LISTEN_ADDR", "0.0.0.0:8081", "AGENT_TOKEN", "s3cret", "AGENT_METRICS_TOKEN", "m3trics",
				"FLEET_TLS_CERT", "/etc/f/a.crt", "FLEET_TLS_KEY", "/etc/f/a.key", "FLEET_TLS_CA", "/etc/f/ca.crt",
				"GOSSIP_BIND_ADDR", "10.0.0.5:7946", "GOSSIP_KEYS", "MDEyMzQ1Njc4OWFiY2RlZg==", "AGENT_ADVERTISE_URL", "https://10.0.0.5:8081"),
			check: func(t *testing.T, c agentconfig.Config) {
				if c.Token != "s3cret" || c.MetricsToken != "m3trics" || c.TLS.Cert != "/etc/f/a.crt" || c.TLS.CA != "/etc/f/ca.crt" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "plaintext beyond loopback when the operator says so",
			env:  with("AGENT_LISTEN_ADDR", "0.0.0.0:8081", "AGENT_TOKEN", "s3cret", "AGENT_ALLOW_PLAINTEXT", "true"),
			check: func(t *testing.T, c agentconfig.Config) {
				if !c.AllowPlaintext || c.TLS.Set() || c.AdvertiseURL != "http://0.0.0.0:8081" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "TLS on loopback advertises https",
			env:  with("FLEET_TLS_CERT", "a.crt", "FLEET_TLS_KEY", "a.key", "FLEET_TLS_CA", "ca.crt"),
			check: func(t *testing.T, c agentconfig.Config) {
				if c.AdvertiseURL != "https://127.0.0.1:8081" {
					t.Errorf("got %q; want https://127.0.0.1:8081", c.AdvertiseURL)
				}
			},
		},
		{
			name:  "public address allowed without token",
			env:   with("AGENT_LISTEN_ADDR", ":8081", "AGENT_ALLOW_NO_TOKEN", "true", "AGENT_ALLOW_PLAINTEXT", "true"),
			check: func(*testing.T, agentconfig.Config) {},
		},
		{
			name:    "public address needs TLS",
			env:     with("AGENT_LISTEN_ADDR", "0.0.0.0:8081", "AGENT_TOKEN", "s3cret"),
			wantErr: []string{"FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA are required"},
		},
		{
			name: "TLS and credential mistakes",
			env: with("FLEET_TLS_CERT", "a.crt", "AGENT_TOKEN", "same", "AGENT_METRICS_TOKEN", "same",
				"GOSSIP_BIND_ADDR", "127.0.0.1:7946", "AGENT_ADVERTISE_URL", "http://127.0.0.1:8081"),
			wantErr: []string{"set all three or none", "AGENT_METRICS_TOKEN must differ", "advertise a https:// URL"},
		},
		{
			name:    "metrics token without a token",
			env:     with("AGENT_METRICS_TOKEN", "m"),
			wantErr: []string{"AGENT_METRICS_TOKEN without AGENT_TOKEN"},
		},
		{
			name:    "public address needs a token",
			env:     with("AGENT_LISTEN_ADDR", "10.0.0.5:8081"),
			wantErr: []string{"AGENT_TOKEN is required"},
		},
		{
			name: "every problem at once",
			env: with("UV_LINK_MODE", "symlink", "UV_BIN", "/nonexistent/uv", "RUN_MAX_OUTPUT_BYTES", "x",
				"LOG_LEVEL", "loud", "UV_DEFAULT_INDEX", "ftp://x", "AGENT_LISTEN_ADDR", "nope"),
			wantErr: []string{"UV_LINK_MODE", "UV_BIN", "RUN_MAX_OUTPUT_BYTES", "LOG_LEVEL", "UV_DEFAULT_INDEX", "AGENT_LISTEN_ADDR"},
		},
		{
			name: "sandbox settings",
			env: with("RUN_SANDBOX", "user", "RUN_USER", strconv.Itoa(nobodyUID), "RUN_ALLOW_NETWORK", "true",
				"RUN_LIMIT_CPU_SECONDS", "5", "RUN_LIMIT_MEMORY_BYTES", "0", "UV_WHEELS_ONLY", "true"),
			check: func(t *testing.T, c agentconfig.Config) {
				s := c.Sandbox
				if s.Tier != sandbox.User || s.UID != nobodyUID || !s.AllowNetwork || s.Limits.CPUSeconds != 5 || s.Limits.MemoryBytes != 0 || !c.UVWheelsOnly {
					t.Errorf("got %+v wheels-only=%v", s, c.UVWheelsOnly)
				}
			},
		},
		{
			name: "process tier needs no run user and has no whole-run bound by default",
			env:  with("RUN_SANDBOX", "process", "RUN_USER", "no-such-user-x"),
			check: func(t *testing.T, c agentconfig.Config) {
				if c.Sandbox.RunLimits != (sandbox.RunLimits{}) {
					t.Errorf("run limits: got %+v; want none", c.Sandbox.RunLimits)
				}
			},
		},
		{
			name: "whole-run bounds",
			env: with("RUN_SANDBOX", "process", "RUN_LIMIT_TOTAL_MEMORY_BYTES", "1048576", "RUN_LIMIT_TOTAL_PROCESSES", "7",
				"RUN_NETWORK_DENY", "10.0.0.0/8, 192.168.1.0/24"),
			check: func(t *testing.T, c agentconfig.Config) {
				if got := c.Sandbox.NetworkDeny; !reflect.DeepEqual(got, []string{"10.0.0.0/8", "192.168.1.0/24"}) {
					t.Errorf("network deny: got %q", got)
				}
				if want := (sandbox.RunLimits{MemoryBytes: 1 << 20, Processes: 7}); c.Sandbox.RunLimits != want {
					t.Errorf("run limits: got %+v; want %+v", c.Sandbox.RunLimits, want)
				}
			},
		},
		{
			name: "every sandbox problem at once",
			env: with("RUN_SANDBOX", "chroot", "RUN_LIMIT_PROCESSES", "-1", "RUN_LIMIT_FILE_BYTES", "big",
				"RUN_ALLOW_NETWORK", "maybe", "UV_WHEELS_ONLY", "perhaps", "RUN_LIMIT_TOTAL_MEMORY_BYTES", "-2",
				"RUN_NETWORK_DENY", "fd00::/8"),
			wantErr: []string{"RUN_SANDBOX", "RUN_LIMIT_PROCESSES", "RUN_LIMIT_FILE_BYTES", "RUN_ALLOW_NETWORK", "UV_WHEELS_ONLY", "RUN_LIMIT_TOTAL_MEMORY_BYTES", "RUN_NETWORK_DENY"},
		},
		{
			name:    "run user must exist and not be root",
			env:     with("RUN_USER", "no-such-user-x"),
			wantErr: []string{"RUN_USER", "does not exist"},
		},
		{
			name:    "run user root refused",
			env:     with("RUN_SANDBOX", "user", "RUN_USER", "root"),
			wantErr: []string{"must not be root"},
		},
		{
			name:    "uv not on PATH",
			env:     map[string]string{"PATH": t.TempDir(), "AGENT_ID": "a1"},
			wantErr: []string{"uv not found on PATH"},
		},
		{
			name:    "envs and cache the same",
			env:     with("ENVS_BASE_PATH", "/srv/x", "UV_CACHE_DIR", "/srv/x"),
			wantErr: []string{"must differ"},
		},
		{
			name:    "gossip beyond loopback needs a key",
			env:     with("GOSSIP_BIND_ADDR", "10.0.0.5:7946", "AGENT_TOKEN", "t"),
			wantErr: []string{"GOSSIP_KEYS is required"},
		},
		{
			name:    "bad gossip settings are all reported",
			env:     with("GOSSIP_BIND_ADDR", "127.0.0.1:7946", "GOSSIP_KEYS", "c2hvcnQ=", "GOSSIP_SEEDS", "nohost", "AGENT_ADVERTISE_URL", "http://0.0.0.0:8081", "GOSSIP_PROFILE", "wan"),
			wantErr: []string{"GOSSIP_KEYS: key 1: 5 bytes", "GOSSIP_SEEDS", "AGENT_ADVERTISE_URL", "GOSSIP_PROFILE"},
		},
		{
			name: "gossip on loopback",
			env:  with("GOSSIP_BIND_ADDR", "127.0.0.1:7946", "GOSSIP_SEEDS", "127.0.0.1:7947, 127.0.0.1:7948", "GOSSIP_KEYS", "MDEyMzQ1Njc4OWFiY2RlZg=="),
			check: func(t *testing.T, c agentconfig.Config) {
				if len(c.Gossip.Seeds) != 2 || len(c.Gossip.Keys) != 1 || c.AdvertiseURL != "http://127.0.0.1:8081" {
					t.Errorf("got seeds %v, %d keys, advertise %q", c.Gossip.Seeds, len(c.Gossip.Keys), c.AdvertiseURL)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := agentconfig.Load(config.Map(tt.env))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("got %v; want no error", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("got no error; want %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q; want it to mention %q", err, w)
				}
			}
		})
	}
}
