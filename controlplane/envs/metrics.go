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
		&buildCollector{st: st, damaged: prometheus.NewDesc("envfabric_builds_damaged",
			"Builds whose files no longer match their packages' RECORD (found by status, sync or the periodic verifier); a sync of their environments replaces them.", nil, nil),
			byState: prometheus.NewDesc("envfabric_builds", "Builds recorded, by state.", []string{"state"}, nil)},
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
		store.StateRunning, store.StateDeleting, store.StateError, store.StateHibernated} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[state]), state)
	}
}

// buildCollector counts builds by state at scrape time.
type buildCollector struct {
	st      store.Store
	damaged *prometheus.Desc
	byState *prometheus.Desc
}

func (c *buildCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.damaged; ch <- c.byState }

func (c *buildCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, state := range []string{store.BuildReady, store.BuildRemoved, store.BuildDamaged} {
		bs, err := c.st.ListBuilds(ctx, store.BuildFilter{State: state, Limit: 100000})
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.byState, err)
			return
		}
		ch <- prometheus.MustNewConstMetric(c.byState, prometheus.GaugeValue, float64(len(bs)), state)
		if state == store.BuildDamaged {
			ch <- prometheus.MustNewConstMetric(c.damaged, prometheus.GaugeValue, float64(len(bs)))
		}
	}
}
