package config

import (
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/config"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr []string
	}{
		{
			name: "TRD defaults",
			env:  map[string]string{},
			check: func(t *testing.T, c Config) {
				if c.DataRoot != "/mnt/nas" || c.DefaultPython != "3.11" || c.ExecutionTimeout != 30*time.Second || c.CleanupIdle != 72*time.Hour {
					t.Errorf("got %+v; want the TRD defaults", c)
				}
				if c.SQLitePath != "/mnt/nas/controlplane/fabric.db" || c.ReservePath != "/mnt/nas/controlplane/reserve" {
					t.Errorf("got SQLitePath %q, ReservePath %q", c.SQLitePath, c.ReservePath)
				}
				if c.MinFreeBytes != 512<<20 || c.ReserveBytes != 16<<20 {
					t.Errorf("got MinFreeBytes %d, ReserveBytes %d; want 512 MiB and 16 MiB", c.MinFreeBytes, c.ReserveBytes)
				}
			},
		},
		{
			name: "overrides",
			env:  map[string]string{"EXECUTION_TIMEOUT": "2.5", "CLEANUP_IDLE_HOURS": "0.5", "LISTEN_ADDR": "127.0.0.1:9"},
			check: func(t *testing.T, c Config) {
				if c.ExecutionTimeout != 2500*time.Millisecond || c.CleanupIdle != 30*time.Minute || c.ListenAddr != "127.0.0.1:9" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name:    "every problem at once",
			env:     map[string]string{"EXECUTION_TIMEOUT": "soon", "LISTEN_ADDR": "nowhere", "AGENT_URL": "ftp://x"},
			wantErr: []string{"EXECUTION_TIMEOUT", "LISTEN_ADDR", "AGENT_URL"},
		},
		{
			name: "disk space settings",
			env:  map[string]string{"DATA_ROOT_MIN_FREE_BYTES": "0", "DATA_ROOT_RESERVE_BYTES": "1048576"},
			check: func(t *testing.T, c Config) {
				if c.MinFreeBytes != 0 || c.ReserveBytes != 1<<20 {
					t.Errorf("got MinFreeBytes %d, ReserveBytes %d", c.MinFreeBytes, c.ReserveBytes)
				}
			},
		},
		{
			name: "build settings: defaults, then overrides",
			env:  map[string]string{"HIBERNATE_AFTER": "72h", "DISK_BUDGET_BYTES": "1073741824", "BUILD_VERIFY_INTERVAL": "0"},
			check: func(t *testing.T, c Config) {
				if c.HibernateAfter != 72*time.Hour || c.DiskBudgetBytes != 1<<30 || c.BuildVerifyInterval != 0 {
					t.Errorf("got HibernateAfter %s, DiskBudgetBytes %d, BuildVerifyInterval %s", c.HibernateAfter, c.DiskBudgetBytes, c.BuildVerifyInterval)
				}
				def, err := Load(config.Map(map[string]string{}))
				if err != nil || def.HibernateAfter != 0 || def.DiskBudgetBytes != 0 || def.BuildVerifyInterval != time.Hour {
					t.Errorf("defaults: %s, %d, %s, %v; want never, none, 1h", def.HibernateAfter, def.DiskBudgetBytes, def.BuildVerifyInterval, err)
				}
			},
		},
		{
			name:    "negative build settings",
			env:     map[string]string{"HIBERNATE_AFTER": "-1s", "DISK_BUDGET_BYTES": "-1", "BUILD_VERIFY_INTERVAL": "-1m"},
			wantErr: []string{"HIBERNATE_AFTER", "DISK_BUDGET_BYTES", "BUILD_VERIFY_INTERVAL"},
		},
		{
			name:    "advisories and policy that are not there",
			env:     map[string]string{"OSV_DATA": "/nonexistent/all.zip", "PACKAGE_POLICY": "/nonexistent/policy.toml", "OSV_POLL_INTERVAL": "0s"},
			wantErr: []string{"OSV_DATA", "PACKAGE_POLICY", "OSV_POLL_INTERVAL"},
		},
		{
			name: "advisories and policy",
			env:  map[string]string{"OSV_DATA": ".", "PACKAGE_POLICY": "config.go"},
			check: func(t *testing.T, c Config) {
				if !strings.HasSuffix(c.OSVData, "/controlplane/config") || !strings.HasSuffix(c.PackagePolicy, "/controlplane/config/config.go") || c.OSVPollInterval != time.Minute {
					t.Errorf("got OSVData %q, PackagePolicy %q, OSVPollInterval %s; want absolute paths and 1m", c.OSVData, c.PackagePolicy, c.OSVPollInterval)
				}
			},
		},
		{
			name:    "negative disk space settings",
			env:     map[string]string{"DATA_ROOT_MIN_FREE_BYTES": "-1", "DATA_ROOT_RESERVE_BYTES": "-2"},
			wantErr: []string{"DATA_ROOT_MIN_FREE_BYTES", "DATA_ROOT_RESERVE_BYTES"},
		},
		{
			name: "requests that do work may take the longest uv operation and a margin",
			env:  map[string]string{"UV_OPERATION_TIMEOUT": "45m"},
			check: func(t *testing.T, c Config) {
				want := DefaultHTTP
				want.WorkTimeout = 45*time.Minute + workMargin
				if c.HTTP != want {
					t.Errorf("got %+v; want %+v", c.HTTP, want)
				}
			},
		},
		{
			name:    "a work timeout that would cut runs",
			env:     map[string]string{"HTTP_WORK_TIMEOUT": "5m", "MAX_EXECUTION_TIMEOUT": "600"},
			wantErr: []string{"HTTP_WORK_TIMEOUT (5m0s) is shorter than the longest run or uv operation (30m0s)"},
		},
		{
			name:    "remote agent needs a token",
			env:     map[string]string{"AGENT_URL": "http://10.1.2.3:8081"},
			wantErr: []string{"AGENT_TOKEN is required"},
		},
		{
			name:    "remote agent needs TLS",
			env:     map[string]string{"AGENT_URL": "http://10.1.2.3:8081", "AGENT_TOKEN": "t"},
			wantErr: []string{"plaintext beyond loopback"},
		},
		{
			name: "remote agent over TLS, or plaintext when the operator says so",
			env:  map[string]string{"AGENT_URL": "https://10.1.2.3:8081", "AGENT_TOKEN": "t", "FLEET_TLS_CERT": "c", "FLEET_TLS_KEY": "k", "FLEET_TLS_CA": "ca"},
			check: func(t *testing.T, c Config) {
				if c.AgentTLS.Cert != "c" || c.AgentTLS.Key != "k" || c.AgentTLS.CA != "ca" || c.AllowPlaintext {
					t.Errorf("got %+v", c.AgentTLS)
				}
				c2, err := Load(config.Map(map[string]string{"AGENT_URL": "http://10.1.2.3:8081", "AGENT_TOKEN": "t", "AGENT_ALLOW_PLAINTEXT": "true"}))
				if err != nil || !c2.AllowPlaintext {
					t.Errorf("plaintext allowed: got %v", err)
				}
			},
		},
		{
			name:    "https agent without a certificate",
			env:     map[string]string{"AGENT_URL": "https://127.0.0.1:8081"},
			wantErr: []string{"is https: set FLEET_TLS_CERT"},
		},
		{
			name: "a fleet beyond loopback needs TLS",
			env: map[string]string{"GOSSIP_BIND_ADDR": "10.0.0.1:7946", "GOSSIP_KEYS": "MDEyMzQ1Njc4OWFiY2RlZg==", "AGENT_TOKEN": "t",
				"LISTEN_ADDR": "127.0.0.1:8080"},
			wantErr: []string{"required in a fleet beyond loopback"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(config.Map(tt.env))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded; want errors mentioning %v", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
