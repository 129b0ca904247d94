package app

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/envfabric/envfabric/agent/usage"
	"github.com/envfabric/envfabric/shared/fleettls"
)

// metrics are the agent's Prometheus series, on a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	uv        *prometheus.HistogramVec
	runs      prometheus.Histogram
	timeouts  prometheus.Counter
	builds    *prometheus.HistogramVec
	rpcs      *prometheus.CounterVec
	inFlight  atomic.Int64
	cache     *prometheus.GaugeVec
	cacheScan prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		uv: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envfabric_agent_uv_command_duration_seconds", Help: "Duration of uv commands by subcommand and outcome.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180, 600},
		}, []string{"command", "outcome"}),
		runs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "envfabric_agent_run_duration_seconds", Help: "Duration of user code runs.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "envfabric_agent_run_timeouts_total", Help: "User code runs killed at their timeout.",
		}),
		builds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envfabric_agent_build_duration_seconds", Help: "Duration of Build calls by outcome: created (materialised here), existing (found complete, nothing installed) or error.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180, 600},
		}, []string{"outcome"}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_agent_rpc_requests_total", Help: "RPCs received, by procedure and HTTP status.",
		}, []string{"procedure", "status"}),
		cache: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "envfabric_agent_uv_cache_bytes",
			Help: "The uv cache: kind=disk is its size on disk; kind=shared the size of its files also linked into environments; kind=saved what copies instead of hardlinks would add.",
		}, []string{"kind"}),
		cacheScan: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "envfabric_agent_uv_cache_scan_timestamp_seconds", Help: "When the uv cache was last measured.",
		}),
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "envfabric_agent_operations_in_flight", Help: "uv operations and runs under way on this agent (its gossiped load).",
	}, func() float64 { return float64(m.inFlight.Load()) })
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.uv, m.runs, m.timeouts, m.builds, m.rpcs, m.cache, m.cacheScan, inFlight)
	return m
}

func (m *metrics) observeUV(command string, d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.uv.WithLabelValues(command, outcome).Observe(d.Seconds())
}

func (m *metrics) observeBuild(outcome string, d time.Duration) {
	m.builds.WithLabelValues(outcome).Observe(d.Seconds())
}

func (m *metrics) observeRun(d time.Duration, timedOut bool) {
	m.runs.Observe(d.Seconds())
	if timedOut {
		m.timeouts.Inc()
	}
}

// loadBearing are the procedures that count as load: they run uv or user code, or walk a tree.
var loadBearing = map[string]bool{"Lock": true, "Build": true, "Switch": true, "Run": true, "DeleteProject": true, "RemoveBuild": true}

// count wraps the RPC handler: requests by procedure and status, and the in-flight load.
func (m *metrics) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proc := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		if loadBearing[proc] {
			m.inFlight.Add(1)
			defer m.inFlight.Add(-1)
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		m.rpcs.WithLabelValues(proc, http.StatusText(sw.status)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// watchCertificate exports when the agent's certificate in force expires, so an alert can ask
// for a re-issue in time.
func (m *metrics) watchCertificate(src *fleettls.Source) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "envfabric_agent_tls_certificate_expiry_timestamp_seconds", Help: "When the agent's TLS certificate in force expires.",
	}, func() float64 { return float64(src.NotAfter().Unix()) }))
}

// watchStorage exports the size and free space of the filesystem holding the environments (the
// shared storage; the uv cache is on the same one), measured at scrape time, for the disk alert.
func (m *metrics) watchStorage(dir string) {
	statfs := func(f func(st *syscall.Statfs_t) uint64) func() float64 {
		return func() float64 {
			var st syscall.Statfs_t
			if err := syscall.Statfs(dir, &st); err != nil {
				return math.NaN()
			}
			return float64(f(&st))
		}
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "envfabric_agent_storage_free_bytes", Help: "Bytes free to unprivileged writers on the filesystem of ENVS_BASE_PATH (and the uv cache).",
		}, statfs(func(st *syscall.Statfs_t) uint64 { return st.Bavail * uint64(st.Bsize) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "envfabric_agent_storage_size_bytes", Help: "Size in bytes of the filesystem of ENVS_BASE_PATH (and the uv cache).",
		}, statfs(func(st *syscall.Statfs_t) uint64 { return st.Blocks * uint64(st.Bsize) })),
	)
}

// measureCache refreshes the cache gauges every interval until ctx ends.
func (m *metrics) measureCache(ctx context.Context, dir string, every time.Duration, logger *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s, err := usage.MeasureCache(ctx, dir)
		if err == nil {
			m.cache.WithLabelValues("disk").Set(float64(s.Bytes))
			m.cache.WithLabelValues("shared").Set(float64(s.SharedBytes))
			m.cache.WithLabelValues("saved").Set(float64(s.SavedBytes))
			m.cacheScan.SetToCurrentTime()
		} else if ctx.Err() == nil {
			logger.Warn("measuring the uv cache", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchUsage exports the metadata calls the use tracker made against the shared storage: with
// the use signal read per cleanup candidate, this grows with the candidates, not the fleet.
func (m *metrics) watchUsage(t *usage.Tracker) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "envfabric_agent_usage_storage_calls_total",
		Help: "Metadata calls (stat, utimes of pyvenv.cfg) the use tracker made against the shared storage.",
	}, func() float64 { return float64(t.StorageCalls()) }))
}
