// Package api is the control plane's REST adapter: routes, request decoding, and the one place
// where domain errors become the TRD's error body {"error": {"code", "message"}} with its status.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/envfabric/envfabric/controlplane/api/auth"
	"github.com/envfabric/envfabric/controlplane/console"
	"github.com/envfabric/envfabric/controlplane/depintel"
	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Checker reports whether a dependency is usable, for /readyz.
type Checker func(ctx context.Context) error

// Options configures the handler.
type Options struct {
	MaxBodyBytes int64
	BodyTimeout  time.Duration      // how long a client may take to send its body
	Ready        map[string]Checker // name → check, all must pass for /readyz
	Agents       envs.Viewer        // GET /agents; nil: an empty single-host view
	Registry     *prometheus.Registry
	// Deps answers the fleet's dependency questions (packages.go); nil answers them with
	// INTERNAL_ERROR (only tests that do not ask leave it out).
	Deps *depintel.Service
	// Tokens are the callers; nil or empty serves an open API whose actor is what X-Actor claims.
	Tokens *auth.Set
}

// Handler serves the REST API.
type Handler struct {
	svc    *envs.Service
	opt    Options
	log    *slog.Logger
	mux    *http.ServeMux
	routes []route

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// body says what a request body may be.
type body int

const (
	noBody   body = iota // a body is refused
	jsonBody             // an optional JSON object (Content-Type: application/json)
	formBody             // JSON, multipart or urlencoded form data (POST /envs)
)

// endpoint is one method of one route: who may call it, what it reads, what it does.
type endpoint struct {
	role  auth.Role // auth.None: open to everyone, even with tokens configured
	query []string  // the query parameters it reads; any other is refused
	body  body
	fn    handlerFunc
	raw   http.Handler // instead of fn, for answers that are not the API's JSON (metrics, the document)
}

// route is one registered path, kept so the OpenAPI document can be checked against it.
type route struct {
	pattern string
	methods map[string]endpoint
}

// The query parameters of env-scoped endpoints.
var versionQuery = []string{"version_id"}

// New builds the handler and registers its metrics on opt.Registry. Every limit in opt is the
// caller's (the defaults live in controlplane/config).
func New(svc *envs.Service, opt Options, log *slog.Logger) *Handler {
	h := &Handler{svc: svc, opt: opt, log: log, mux: http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envfabric_http_requests_total", Help: "REST requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envfabric_http_request_duration_seconds", Help: "REST request latency by route.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 15, 60, 300},
		}, []string{"route", "method"}),
	}
	if opt.Registry != nil {
		opt.Registry.MustRegister(h.requests, h.latency)
	}
	read := func(fn handlerFunc, query ...string) endpoint {
		return endpoint{role: auth.Read, query: query, fn: fn}
	}
	h.handle("/envs", map[string]endpoint{
		"POST": {role: auth.Write, body: formBody, fn: h.create},
		"GET":  read(h.list, "workflow_id", "limit", "cursor"),
	})
	h.handle("/envs/cleanup", map[string]endpoint{"POST": {role: auth.Admin, query: []string{"dry_run"}, body: jsonBody, fn: h.cleanup}})
	h.handle("/envs/{workflow_id}/{node_id}", map[string]endpoint{
		"GET":    read(keyed(h.status), versionQuery...),
		"DELETE": {role: auth.Write, query: versionQuery, fn: keyed(h.delete)},
	})
	h.handle("/envs/{workflow_id}/{node_id}/export", map[string]endpoint{"GET": read(keyed(h.export), versionQuery...)})
	h.handle("/envs/{workflow_id}/{node_id}/sync", map[string]endpoint{"POST": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.sync}})
	h.handle("/envs/{workflow_id}/{node_id}/deps", map[string]endpoint{
		"GET":    read(keyed(h.deps), versionQuery...),
		"POST":   {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.mutate(envs.Add)},
		"DELETE": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.mutate(envs.Remove)},
		"PUT":    {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.mutate(envs.Update)},
	})
	h.handle("/envs/{workflow_id}/{node_id}/rollback", map[string]endpoint{"POST": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.rollback}})
	h.handle("/envs/{workflow_id}/{node_id}/preload", map[string]endpoint{"PUT": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.preload}})
	h.handle("/envs/{workflow_id}/{node_id}/run", map[string]endpoint{"POST": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.run}})
	h.handle("/envs/{workflow_id}/{node_id}/operations", map[string]endpoint{"GET": read(h.operations, "version_id", "limit", "before")})
	{ // packages.go: the dependency questions of the fleet
		h.handle("/packages/{name}", map[string]endpoint{"GET": read(h.packageHolders, "specifier", "limit", "cursor")})
		h.handle("/vulnerabilities", map[string]endpoint{"GET": read(h.vulnerabilities, "limit", "env_limit", "cursor")})
		h.handle("/envs/{workflow_id}/{node_id}/vulnerabilities", map[string]endpoint{"GET": read(keyed(h.envVulnerabilities), versionQuery...)})
		h.handle("/envs/{workflow_id}/{node_id}/sbom", map[string]endpoint{"GET": read(keyed(h.sbom), versionQuery...)})
	}
	h.handle("/agents", map[string]endpoint{"GET": read(h.agents)})
	h.handle("/healthz", map[string]endpoint{"GET": {fn: h.healthz}})
	h.handle("/readyz", map[string]endpoint{"GET": {fn: h.readyz}})
	h.handle("/openapi.json", map[string]endpoint{"GET": {raw: http.HandlerFunc(serveOpenAPI)}})
	// The operator console: HTML pages behind the read role (console.Credential says how a
	// browser carries its token).
	pages := console.New(svc, opt.Agents, log)
	for _, p := range console.Pages() {
		h.handle(p.Pattern, map[string]endpoint{"GET": {role: auth.Read, query: p.Query, raw: pages}})
	}
	if opt.Registry != nil {
		h.handle("/metrics", map[string]endpoint{"GET": {role: auth.Read, raw: promhttp.HandlerFor(opt.Registry, promhttp.HandlerOpts{})}})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, errcode.New(errcode.NotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)))
	})
	return h
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) (status int, body any, err error)

// handle registers one path with its methods; other methods get METHOD_NOT_ALLOWED in the API's
// error shape rather than the mux's plain text.
func (h *Handler) handle(pattern string, methods map[string]endpoint) {
	h.routes = append(h.routes, route{pattern: pattern, methods: methods})
	allowed := make([]string, 0, len(methods))
	for m := range methods {
		allowed = append(allowed, m)
	}
	sort.Strings(allowed)
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			h.requests.WithLabelValues(pattern, r.Method, strconv.Itoa(sw.status)).Inc()
			h.latency.WithLabelValues(pattern, r.Method).Observe(time.Since(start).Seconds())
		}()
		ep, ok := methods[r.Method]
		if !ok {
			sw.Header().Set("Allow", strings.Join(allowed, ", "))
			h.fail(sw, r, errcode.New(errcode.MethodNotAllowed, fmt.Sprintf("%s does not allow %s (allowed: %s)", pattern, r.Method, strings.Join(allowed, ", "))))
			return
		}
		if err := authorize(r, ep.role); err != nil {
			h.fail(sw, r, err)
			return
		}
		if err := checkQuery(r, ep.query); err != nil {
			h.fail(sw, r, err)
			return
		}
		if err := checkBody(r, ep.body); err != nil {
			h.fail(sw, r, err)
			return
		}
		if ep.raw != nil {
			ep.raw.ServeHTTP(sw, r)
			return
		}
		if ep.body != noBody {
			if err := h.readBody(sw, r); err != nil {
				h.fail(sw, r, err)
				return
			}
		}
		status, body, err := ep.fn(sw, r)
		if err != nil {
			h.fail(sw, r, err)
			return
		}
		writeJSON(sw, status, body)
	})
}
