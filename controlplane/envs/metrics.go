package envs

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/store"
)

// metrics are the lifecycle's Prometheus series; nil-safe so a Service without a registry works.
type metrics struct {
	ops     *prometheus.HistogramVec
	refused *prometheus.CounterVec
	held    atomic.Int64
}

func newMetrics(reg prometheus.Registerer, st store.Store) *metrics {
	m := &metrics{
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envfabric_operation_duration_seconds", Help: "Audited operations by kind and outcome (succeeded, failed, rejected).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180, 600},
		}, []string{"operation", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_leases_refused_total", Help: "Leases refused because another operation held the environment (ENV_LOCKED).",
		}, []string{"operation"}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.ops, m.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_leases_held", Help: "Leases this control plane holds now."},
			func() float64 { return float64(m.held.Load()) }),
		&envCollector{st: st, desc: prometheus.NewDesc("envfabric_environments", "Environments recorded, by state.", []string{"state"}, nil)},
	)
	return m
}

func (m *metrics) observe(kind, outcome string, d time.Duration) {
	m.ops.WithLabelValues(kind, outcome).Observe(d.Seconds())
}

// envCollector counts environments by state at scrape time: one small GROUP BY, always current.
type envCollector struct {
	st   store.Store
	desc *prometheus.Desc
}

func (c *envCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *envCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.st.CountEnvs(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, state := range []string{store.StateCreating, store.StateActive, store.StateInstalling, store.StateSyncing,
		store.StateRunning, store.StateDeleting, store.StateError} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[state]), state)
	}
}
