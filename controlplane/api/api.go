// Package api is the control plane's REST adapter: routes, request decoding, and the one place
// where domain errors become the TRD's error body {"error": {"code", "message"}} with its status.
package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Checker reports whether a dependency is usable, for /readyz.
type Checker func(ctx context.Context) error

// Options configures the handler.
type Options struct {
	MaxBodyBytes int64
	Ready        map[string]Checker // name → check, all must pass for /readyz
	Agents       func(ctx context.Context) any
	Registry     *prometheus.Registry
}

// Handler serves the REST API.
type Handler struct {
	svc *envs.Service
	opt Options
	log *slog.Logger
	mux *http.ServeMux

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New builds the handler and registers its metrics on opt.Registry.
func New(svc *envs.Service, opt Options, log *slog.Logger) *Handler {
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 8 << 20
	}
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
	h.route("/envs", map[string]handlerFunc{"POST": h.create, "GET": h.list})
	h.route("/envs/cleanup", map[string]handlerFunc{"POST": h.cleanup})
	h.route("/envs/{wf}/{node}", map[string]handlerFunc{
		"GET":    keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Status(r.Context(), k) }),
		"DELETE": keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Delete(r.Context(), caller(r), k) }),
	})
	h.route("/envs/{wf}/{node}/export", map[string]handlerFunc{
		"GET": keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Export(r.Context(), k) }),
	})
	h.route("/envs/{wf}/{node}/sync", map[string]handlerFunc{"POST": h.sync})
	h.route("/envs/{wf}/{node}/deps", map[string]handlerFunc{
		"GET":  keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Deps(r.Context(), k) }),
		"POST": h.mutate(envs.Add), "DELETE": h.mutate(envs.Remove), "PUT": h.mutate(envs.Update),
	})
	h.route("/envs/{wf}/{node}/run", map[string]handlerFunc{"POST": h.run})
	h.route("/envs/{wf}/{node}/operations", map[string]handlerFunc{"GET": h.operations})
	h.route("/agents", map[string]handlerFunc{"GET": h.agents})
	h.route("/healthz", map[string]handlerFunc{"GET": h.healthz})
	h.route("/readyz", map[string]handlerFunc{"GET": h.readyz})
	if opt.Registry != nil {
		metrics := promhttp.HandlerFor(opt.Registry, promhttp.HandlerOpts{})
		h.mux.Handle("GET /metrics", metrics)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, errcode.New(errcode.NotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)))
	})
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type handlerFunc func(w http.ResponseWriter, r *http.Request) (status int, body any, err error)

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// route registers one path with its methods; other methods get METHOD_NOT_ALLOWED in the API's
// error shape rather than the mux's plain text.
func (h *Handler) route(pattern string, methods map[string]handlerFunc) {
	allowed := make([]string, 0, len(methods))
	for m := range methods {
		allowed = append(allowed, m)
	}
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rid := r.Header.Get("X-Request-ID")
		if rid == "" || len(rid) > 128 {
			rid = newRequestID()
		}
		r.Header.Set("X-Request-ID", rid)
		sw.Header().Set("X-Request-ID", rid)
		defer func() {
			h.requests.WithLabelValues(pattern, r.Method, strconv.Itoa(sw.status)).Inc()
			h.latency.WithLabelValues(pattern, r.Method).Observe(time.Since(start).Seconds())
		}()
		fn, ok := methods[r.Method]
		if !ok {
			sw.Header().Set("Allow", strings.Join(allowed, ", "))
			h.fail(sw, r, errcode.New(errcode.MethodNotAllowed, fmt.Sprintf("%s does not allow %s (allowed: %s)", pattern, r.Method, strings.Join(allowed, ", "))))
			return
		}
		r.Body = http.MaxBytesReader(sw, r.Body, h.opt.MaxBodyBytes)
		status, body, err := fn(sw, r)
		if err != nil {
			h.fail(sw, r, err)
			return
		}
		writeJSON(sw, status, body)
	})
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // specifiers such as "numpy>=1.24" stay readable
	_ = enc.Encode(body)
}

// fail writes the one error body every error gets.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *errcode.Error
	if !errors.As(err, &e) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e = errcode.New(errcode.RequestTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
		} else {
			e = errcode.Wrap(errcode.Internal, err, "internal error: "+err.Error())
		}
	}
	body := map[string]any{}
	for k, v := range e.Details {
		body[k] = v
	}
	body["code"] = e.Code
	body["message"] = e.Message
	body["request_id"] = r.Header.Get("X-Request-ID")
	status := e.Code.HTTPStatus()
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status,
		"code", e.Code, "err", err, "request_id", body["request_id"])
	writeJSON(w, status, map[string]any{"error": body})
}

func caller(r *http.Request) envs.Caller {
	actor := strings.TrimSpace(r.Header.Get("X-Actor"))
	if actor == "" || len(actor) > 128 {
		actor = "anonymous"
	}
	return envs.Caller{Actor: actor, RequestID: r.Header.Get("X-Request-ID")}
}

// envKey reads {wf}/{node} from the path and version_id from the query, or from bodyVersion.
func envKey(r *http.Request, bodyVersion string) (envid.Key, error) {
	v := r.URL.Query().Get("version_id")
	if v == "" {
		v = bodyVersion
	} else if bodyVersion != "" && bodyVersion != v {
		return envid.Key{}, errcode.New(errcode.InvalidRequest, fmt.Sprintf("version_id %q in the query and %q in the body disagree", v, bodyVersion))
	}
	k, err := envid.New(r.PathValue("wf"), r.PathValue("node"), v)
	if err != nil {
		return k, errcode.Wrap(errcode.InvalidID, err, "")
	}
	return k, nil
}

// decodeJSON reads an optional JSON object body into v.
func decodeJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errcode.Wrap(errcode.InvalidRequest, err, "reading the request body: "+err.Error())
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var coded *errcode.Error
		if errors.As(err, &coded) {
			return coded
		}
		return errcode.Wrap(errcode.InvalidRequest, err, "request body: "+err.Error())
	}
	return nil
}

// packageList accepts a JSON array of strings, or one string holding a JSON array (the TRD's form
// encoding), in a JSON body.
type packageList []string

func (p *packageList) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*p = list
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errcode.New(errcode.InvalidPackages, "packages: want an array of strings")
	}
	list, err := splitPackages([]string{s})
	*p = list
	return err
}

// splitPackages reads form values: repeated fields, or a single field holding a JSON array.
func splitPackages(values []string) ([]string, error) {
	if len(values) == 1 && strings.HasPrefix(strings.TrimSpace(values[0]), "[") {
		var list []string
		if err := json.Unmarshal([]byte(values[0]), &list); err != nil {
			return nil, errcode.New(errcode.InvalidPackages, "packages: not a JSON array of strings: "+err.Error())
		}
		return list, nil
	}
	var out []string
	for _, v := range values {
		if strings.TrimSpace(v) != "" {
			out = append(out, v)
		}
	}
	return out, nil
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var (
		wf, node, version, python string
		packages                  []string
		requirements              string
		err                       error
	)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var body struct {
			WorkflowID    string      `json:"workflow_id"`
			NodeID        string      `json:"node_id"`
			VersionID     string      `json:"version_id"`
			PythonVersion string      `json:"python_version"`
			Packages      packageList `json:"packages"`
			Requirements  string      `json:"requirements"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return 0, nil, err
		}
		wf, node, version, python, packages, requirements = body.WorkflowID, body.NodeID, body.VersionID, body.PythonVersion, body.Packages, body.Requirements
	case "multipart/form-data", "application/x-www-form-urlencoded":
		if ct == "multipart/form-data" {
			err = r.ParseMultipartForm(4 << 20)
		} else {
			err = r.ParseForm()
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return 0, nil, err
			}
			return 0, nil, errcode.Wrap(errcode.InvalidRequest, err, "reading form data: "+err.Error())
		}
		wf, node, version, python = r.PostFormValue("workflow_id"), r.PostFormValue("node_id"), r.PostFormValue("version_id"), r.PostFormValue("python_version")
		if packages, err = splitPackages(r.PostForm["packages"]); err != nil {
			return 0, nil, err
		}
		if r.MultipartForm != nil {
			if fhs := r.MultipartForm.File["requirements_file"]; len(fhs) > 0 {
				if len(fhs) > 1 {
					return 0, nil, errcode.New(errcode.InvalidRequest, "requirements_file: send one file")
				}
				f, err := fhs[0].Open()
				if err != nil {
					return 0, nil, errcode.Wrap(errcode.InvalidRequest, err, "requirements_file: "+err.Error())
				}
				b, err := io.ReadAll(io.LimitReader(f, reqspec.MaxRequirementsFile+1))
				f.Close()
				if err != nil {
					return 0, nil, errcode.Wrap(errcode.InvalidRequest, err, "requirements_file: "+err.Error())
				}
				requirements = string(b)
			}
		}
		if requirements == "" {
			requirements = r.PostFormValue("requirements_file")
		}
	default:
		return 0, nil, errcode.New(errcode.InvalidRequest, "POST /envs takes form data (multipart or urlencoded) or a JSON body")
	}
	if requirements != "" {
		fromFile, err := reqspec.ParseRequirementsFile(requirements)
		if err != nil {
			return 0, nil, errcode.Wrap(errcode.InvalidPackages, err, "")
		}
		packages = append(packages, fromFile...)
	}
	if wf == "" || node == "" {
		return 0, nil, errcode.New(errcode.InvalidRequest, "workflow_id and node_id are required")
	}
	key, err := envid.New(wf, node, version)
	if err != nil {
		return 0, nil, errcode.Wrap(errcode.InvalidID, err, "")
	}
	res, err := h.svc.Create(r.Context(), caller(r), envs.CreateRequest{Key: key, PythonVersion: python, Packages: packages})
	return http.StatusCreated, res, err
}

// versioned is the version_id an env-scoped JSON body may carry instead of the query.
type versioned struct {
	VersionID string `json:"version_id"`
}

func (v versioned) version() string { return v.VersionID }

// decodeEnvRequest reads an optional JSON body into body and names the environment it is for.
func decodeEnvRequest(r *http.Request, body interface{ version() string }) (envid.Key, error) {
	if err := decodeJSON(r, body); err != nil {
		return envid.Key{}, err
	}
	return envKey(r, body.version())
}

// keyed serves a bodiless request on one environment.
func keyed(fn func(r *http.Request, key envid.Key) (any, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		key, err := envKey(r, "")
		if err != nil {
			return 0, nil, err
		}
		res, err := fn(r, key)
		return http.StatusOK, res, err
	}
}

func (h *Handler) mutate(kind envs.MutationKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body struct {
			versioned
			Packages packageList `json:"packages"`
		}
		key, err := decodeEnvRequest(r, &body)
		if err != nil {
			return 0, nil, err
		}
		res, err := h.svc.Mutate(r.Context(), caller(r), key, kind, body.Packages)
		return http.StatusOK, res, err
	}
}

func (h *Handler) sync(w http.ResponseWriter, r *http.Request) (int, any, error) {
	key, err := decodeEnvRequest(r, &versioned{})
	if err != nil {
		return 0, nil, err
	}
	res, err := h.svc.Sync(r.Context(), caller(r), key)
	return http.StatusOK, res, err
}

func (h *Handler) run(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var body struct {
		versioned
		Code    string   `json:"code"`
		Timeout *float64 `json:"timeout"`
	}
	key, err := decodeEnvRequest(r, &body)
	if err != nil {
		return 0, nil, err
	}
	req := envs.RunRequest{Code: body.Code}
	if body.Timeout != nil {
		if *body.Timeout <= 0 {
			return 0, nil, errcode.New(errcode.InvalidRequest, "timeout: must be a positive number of seconds")
		}
		req.Timeout = time.Duration(*body.Timeout * float64(time.Second))
	}
	res, err := h.svc.Run(r.Context(), caller(r), key, req)
	return http.StatusOK, res, err
}

// limit reads ?limit= (default 50, at most 500).
func limit(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 50, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 500 {
		return 0, errcode.New(errcode.InvalidRequest, "limit: want a whole number from 1 to 500")
	}
	return n, nil
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	n, err := limit(r)
	if err != nil {
		return 0, nil, err
	}
	var after envid.Key
	if c := r.URL.Query().Get("cursor"); c != "" {
		if after, err = decodeCursor(c); err != nil {
			return 0, nil, err
		}
	}
	res, page, err := h.svc.List(r.Context(), r.URL.Query().Get("workflow_id"), after, n)
	if err != nil {
		return 0, nil, err
	}
	if len(page) > 0 {
		res.NextCursor = encodeCursor(page[len(page)-1].Key)
	}
	return http.StatusOK, res, nil
}

func encodeCursor(k envid.Key) string {
	b, _ := json.Marshal([]string{k.WorkflowID, k.NodeID, k.VersionID})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(c string) (envid.Key, error) {
	bad := errcode.New(errcode.InvalidRequest, "cursor: not a cursor this API returned")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return envid.Key{}, bad
	}
	var parts []string
	if json.Unmarshal(b, &parts) != nil || len(parts) != 3 {
		return envid.Key{}, bad
	}
	return envid.Key{WorkflowID: parts[0], NodeID: parts[1], VersionID: parts[2]}, nil
}

func (h *Handler) operations(w http.ResponseWriter, r *http.Request) (int, any, error) {
	key, err := envKey(r, "")
	if err != nil {
		return 0, nil, err
	}
	n, err := limit(r)
	if err != nil {
		return 0, nil, err
	}
	var before int64
	if s := r.URL.Query().Get("before"); s != "" {
		if before, err = strconv.ParseInt(s, 10, 64); err != nil || before < 1 {
			return 0, nil, errcode.New(errcode.InvalidRequest, "before: want an operation id")
		}
	}
	res, err := h.svc.Operations(r.Context(), key, before, n)
	return http.StatusOK, res, err
}

func (h *Handler) cleanup(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var body struct {
		IdleHours *float64 `json:"idle_hours"`
		DryRun    bool     `json:"dry_run"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return 0, nil, err
	}
	if r.URL.Query().Get("dry_run") == "true" {
		body.DryRun = true
	}
	req := envs.CleanupRequest{DryRun: body.DryRun, IdleFor: -1}
	if body.IdleHours != nil {
		if *body.IdleHours < 0 {
			return 0, nil, errcode.New(errcode.InvalidRequest, "idle_hours: must not be negative")
		}
		req.IdleFor = time.Duration(*body.IdleHours * float64(time.Hour))
	}
	res, err := h.svc.Cleanup(r.Context(), caller(r), req)
	return http.StatusOK, res, err
}

func (h *Handler) agents(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if h.opt.Agents == nil {
		return http.StatusOK, map[string]any{"agents": []any{}}, nil
	}
	// The view is the whole answer: an object with at least an "agents" list.
	return http.StatusOK, h.opt.Agents(r.Context()), nil
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return http.StatusOK, map[string]string{"status": "ok"}, nil
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	checks := map[string]string{}
	status := http.StatusOK
	for name, check := range h.opt.Ready {
		if err := check(ctx); err != nil {
			checks[name] = err.Error()
			status = http.StatusServiceUnavailable
		} else {
			checks[name] = "ok"
		}
	}
	state := "ready"
	if status != http.StatusOK {
		state = "not ready"
	}
	return status, map[string]any{"status": state, "checks": checks}, nil
}
