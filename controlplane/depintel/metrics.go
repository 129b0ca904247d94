package depintel

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/osv"
)

// VulnerableEnvs counts the current environments hit by at least one advisory, each under the
// highest severity that hits it (so the buckets add up to the vulnerable environments).
func (s *Service) VulnerableEnvs(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for _, sev := range osv.Severities {
		out[sev] = 0
	}
	h, err := s.fleetHits(ctx, s.Advisories())
	if err != nil || len(h.byAdvisory) == 0 {
		return out, err
	}
	worst := map[string]int{} // lock digest → highest rank
	for id, rows := range h.byAdvisory {
		r := osv.Rank(h.adv[id].Severity)
		for _, row := range rows {
			if w, ok := worst[row.LockDigest]; !ok || r > w {
				worst[row.LockDigest] = r
			}
		}
	}
	for d, r := range worst {
		out[osv.Severities[r]] += h.refs[d].Envs
	}
	return out, nil
}

// Metrics keeps envfabric_vulnerable_environments{severity} current: recomputed every interval
// and whenever Refresh is called (a reload of the advisories). Run is its owner goroutine.
type Metrics struct {
	svc     *Service
	every   time.Duration
	gauge   *prometheus.GaugeVec
	refresh chan struct{}
}

// NewMetrics registers the gauge on reg.
func NewMetrics(svc *Service, every time.Duration, reg prometheus.Registerer) *Metrics {
	m := &Metrics{svc: svc, every: every, refresh: make(chan struct{}, 1),
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "envfabric_vulnerable_environments",
			Help: "Current environments hit by at least one known advisory (OSV_DATA), by the highest severity hitting each.",
		}, []string{"severity"})}
	if reg != nil {
		reg.MustRegister(m.gauge)
	}
	return m
}

// Refresh asks Run to recompute soon; it never blocks.
func (m *Metrics) Refresh() {
	select {
	case m.refresh <- struct{}{}:
	default:
	}
}

// Run recomputes the gauge at start, every interval and on Refresh, until ctx ends.
func (m *Metrics) Run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		m.update(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.refresh:
		}
	}
}

func (m *Metrics) update(ctx context.Context) {
	counts, err := m.svc.VulnerableEnvs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.svc.log.Error("counting vulnerable environments", "err", err)
		}
		return
	}
	for sev, n := range counts {
		m.gauge.WithLabelValues(sev).Set(float64(n))
	}
}
