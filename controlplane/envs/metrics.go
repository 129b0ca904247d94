package envs

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/errcode"
)

// metrics are the lifecycle's Prometheus series; nil-safe so a Service without a registry works.
type metrics struct {
	ops     *prometheus.HistogramVec
	refused *prometheus.CounterVec
	errors  *prometheus.CounterVec
	audit   *prometheus.CounterVec
	held    atomic.Int64
}

// The stages of an audit write that can fail (envfabric_audit_write_failures_total).
const (
	auditIntent  = "intent"  // the row written before the side effect: the request fails with DB_AUDIT_ERROR
	auditOutcome = "outcome" // the outcome, after retries: the row stays running until the sweep closes it
)

func newMetrics(reg prometheus.Registerer, s *Service) *metrics {
	m := &metrics{
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envfabric_operation_duration_seconds", Help: "Audited operations by kind and outcome (succeeded, failed, rejected).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180, 600},
		}, []string{"operation", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_leases_refused_total", Help: "Leases refused because another operation held the environment (ENV_LOCKED).",
		}, []string{"operation"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_operation_errors_total", Help: "Audited operations that failed or were rejected, by kind and error code (DB_AUDIT_ERROR, EXECUTION_TIMEOUT, ...).",
		}, []string{"operation", "code"}),
		audit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_audit_write_failures_total", Help: "Audit writes that failed, by stage: intent (the request got DB_AUDIT_ERROR, nothing was done) or outcome (given up after retries).",
		}, []string{"stage"}),
	}
	// Every series an alert rule reads exists from the start, at zero: rate() of a counter that
	// appears only at its first increment misses that increment.
	for _, stage := range []string{auditIntent, auditOutcome} {
		m.audit.WithLabelValues(stage)
	}
	for _, code := range []errcode.Code{errcode.DBAuditError, errcode.ExecutionTimeout} {
		m.errors.WithLabelValues("run", string(code))
	}
	m.errors.WithLabelValues("create", string(errcode.DBAuditError))
	for _, kind := range []string{"create", "delete", "add", "update", "remove", "sync", "run"} {
		m.refused.WithLabelValues(kind)
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.ops, m.refused, m.errors, m.audit,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_leases_held", Help: "Leases this control plane holds now."},
			func() float64 { return float64(m.held.Load()) }),
		&envCollector{s: s, desc: prometheus.NewDesc("envfabric_environments", "Environments by state, as GET /envs reports them (IDLE: ACTIVE and unused for IDLE_AFTER).", []string{"state"}, nil)},
		&buildCollector{st: s.store, damaged: prometheus.NewDesc("envfabric_builds_damaged",
			"Builds whose files no longer match their packages' RECORD (found by status, sync or the periodic verifier); a sync of their environments replaces them.", nil, nil),
			byState: prometheus.NewDesc("envfabric_builds", "Builds recorded, by state.", []string{"state"}, nil)},
	)
	if single, ok := s.agents.(*Single); ok {
		// The fleet registers these from gossip (package fleet); a single host has one agent, alive
		// when it answers, and nothing else to see.
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_agents_alive", Help: "Agents this control plane sees alive (single host: its agent answered a ping at scrape time)."},
				func() float64 {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					if single.a.Ping(ctx) != nil {
						return 0
					}
					return 1
				}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_agents_refused", Help: "Members refused: wrong storage, unreadable metadata, or a certificate refused (single host: none)."},
				func() float64 { return 0 }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "envfabric_controlplanes_alive", Help: "Other control planes seen alive (single host: none)."},
				func() float64 { return 0 }),
		)
	}
	return m
}

func (m *metrics) observe(kind, outcome string, d time.Duration) {
	m.ops.WithLabelValues(kind, outcome).Observe(d.Seconds())
}

// failed counts an operation's error by its code.
func (m *metrics) failed(kind string, err error) {
	if err != nil {
		m.errors.WithLabelValues(kind, string(errcode.Of(err))).Inc()
	}
}

// auditFailed counts an audit write given up on.
func (m *metrics) auditFailed(stage string) { m.audit.WithLabelValues(stage).Inc() }

// idleCounter is a store that counts idle environments in the database (the SQL stores do);
// without it IDLE is counted from IdleEnvs.
type idleCounter interface {
	CountIdleEnvs(ctx context.Context, unusedSince time.Time) (int, error)
}

// envCollector counts environments by state at scrape time: one small GROUP BY, always current.
// Every state has a series, zero when no environment is in it.
type envCollector struct {
	s    *Service
	desc *prometheus.Desc
}

func (c *envCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *envCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.s.store.CountEnvs(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	// IDLE is not recorded: an ACTIVE environment is reported IDLE once unused for IdleAfter (see
	// status), so it moves from the ACTIVE series to the IDLE one here too.
	if after := c.s.opt.IdleAfter; after > 0 {
		idle, err := c.countIdle(ctx, c.s.now().Add(-after))
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.desc, err)
			return
		}
		counts[store.StateIdle] += idle
		counts[store.StateActive] -= idle
	}
	for _, state := range []string{store.StateCreating, store.StateActive, store.StateInstalling, store.StateSyncing,
		store.StateRunning, store.StateIdle, store.StateDeleting, store.StateError, store.StateHibernated} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[state]), state)
	}
}

func (c *envCollector) countIdle(ctx context.Context, unusedSince time.Time) (int, error) {
	if ic, ok := c.s.store.(idleCounter); ok {
		return ic.CountIdleEnvs(ctx, unusedSince)
	}
	envs, err := c.s.store.IdleEnvs(ctx, unusedSince, 0)
	n := 0
	for _, e := range envs {
		if e.State == store.StateActive {
			n++
		}
	}
	return n, err
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
	counts, err := c.st.CountBuilds(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.byState, err)
		return
	}
	for _, state := range []string{store.BuildReady, store.BuildRemoved, store.BuildDamaged} {
		ch <- prometheus.MustNewConstMetric(c.byState, prometheus.GaugeValue, float64(counts[state]), state)
	}
	ch <- prometheus.MustNewConstMetric(c.damaged, prometheus.GaugeValue, float64(counts[store.BuildDamaged]))
}
