package app

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/config"
	"github.com/envfabric/envfabric/controlplane/depintel"
	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/pkgpolicy"
	"github.com/envfabric/envfabric/controlplane/store"
)

// deps is the dependency intelligence of issue 14: the advisories of OSV_DATA (reloaded on
// change by watcher.Run), the install policy of PACKAGE_POLICY, the fleet's package questions
// and the vulnerable-environments gauge (kept by metrics.Run). Run owns both goroutines.
type deps struct {
	watcher *osv.Watcher
	policy  *pkgpolicy.Policy
	svc     *depintel.Service
	metrics *depintel.Metrics
}

// metricsEvery is how often the vulnerable-environments gauge is recomputed without a reload.
const metricsEvery = time.Minute

func dependencyIntel(cfg config.Config, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*deps, error) {
	d := &deps{}
	var err error
	if d.policy, err = pkgpolicy.Load(cfg.PackagePolicy); err != nil {
		return nil, err
	}
	if !d.policy.Empty() {
		log.Info("package policy loaded", "path", cfg.PackagePolicy, "rules", len(d.policy.Rules), "deny_severity", d.policy.DenySeverity)
	}
	reloaded := func(*osv.DB) {
		if d.metrics != nil {
			d.metrics.Refresh()
		}
	}
	if d.watcher, err = osv.NewWatcher(cfg.OSVData, cfg.OSVPollInterval, reloaded, log.With("component", "advisories")); err != nil {
		return nil, err
	}
	if d.policy.DenySeverity != "" && cfg.OSVData == "" {
		return nil, fmt.Errorf("PACKAGE_POLICY=%s denies advisories of severity %s or more, but OSV_DATA names no advisories", cfg.PackagePolicy, d.policy.DenySeverity)
	}
	d.svc = depintel.New(st, d.watcher.Current, Version, log.With("component", "packages"))
	d.metrics = depintel.NewMetrics(d.svc, metricsEvery, reg)
	return d, nil
}
