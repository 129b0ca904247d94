// Package api is the control plane's REST adapter: routes, request decoding, and the one place
// where domain errors become the TRD's error body {"error": {"code", "message"}} with its status.
package api

import (
	"bytes"
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
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/envfabric/envfabric/controlplane/api/auth"
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
	BodyTimeout  time.Duration      // how long a client may take to send its body
	Ready        map[string]Checker // name → check, all must pass for /readyz
	Agents       func(ctx context.Context) any
	Registry     *prometheus.Registry
	// Tokens are the callers; nil or empty serves an open API whose actor is what X-Actor claims.
	Tokens *auth.Set
	// Packages is what package references beyond the index the operator allows (requirements
	// files are read here; package lists by the service, under the same policy).
	Packages reqspec.Policy
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

// New builds the handler and registers its metrics on opt.Registry.
func New(svc *envs.Service, opt Options, log *slog.Logger) *Handler {
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 8 << 20
	}
	if opt.BodyTimeout <= 0 {
		opt.BodyTimeout = time.Minute
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
	read := func(fn handlerFunc, query ...string) endpoint {
		return endpoint{role: auth.Read, query: query, fn: fn}
	}
	h.handle("/envs", map[string]endpoint{
		"POST": {role: auth.Write, body: formBody, fn: h.create},
		"GET":  read(h.list, "workflow_id", "limit", "cursor"),
	})
	h.handle("/envs/cleanup", map[string]endpoint{"POST": {role: auth.Admin, query: []string{"dry_run"}, body: jsonBody, fn: h.cleanup}})
	h.handle("/envs/{workflow_id}/{node_id}", map[string]endpoint{
		"GET": read(keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Status(r.Context(), k) }), versionQuery...),
		"DELETE": {role: auth.Write, query: versionQuery,
			fn: keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Delete(r.Context(), caller(r), k) })},
	})
	h.handle("/envs/{workflow_id}/{node_id}/export", map[string]endpoint{
		"GET": read(keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Export(r.Context(), k) }), versionQuery...),
	})
	h.handle("/envs/{workflow_id}/{node_id}/sync", map[string]endpoint{"POST": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.sync}})
	h.handle("/envs/{workflow_id}/{node_id}/deps", map[string]endpoint{
		"GET":    read(keyed(func(r *http.Request, k envid.Key) (any, error) { return svc.Deps(r.Context(), k) }), versionQuery...),
		"POST":   {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.mutate(envs.Add)},
		"DELETE": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.mutate(envs.Remove)},
		"PUT":    {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.mutate(envs.Update)},
	})
	h.handle("/envs/{workflow_id}/{node_id}/run", map[string]endpoint{"POST": {role: auth.Write, query: versionQuery, body: jsonBody, fn: h.run}})
	h.handle("/envs/{workflow_id}/{node_id}/operations", map[string]endpoint{"GET": read(h.operations, "version_id", "limit", "before")})
	h.handle("/agents", map[string]endpoint{"GET": read(h.agents)})
	h.handle("/healthz", map[string]endpoint{"GET": {fn: h.healthz}})
	h.handle("/readyz", map[string]endpoint{"GET": {fn: h.readyz}})
	h.handle("/openapi.json", map[string]endpoint{"GET": {raw: http.HandlerFunc(serveOpenAPI)}})
	if opt.Registry != nil {
		h.handle("/metrics", map[string]endpoint{"GET": {role: auth.Read, raw: promhttp.HandlerFor(opt.Registry, promhttp.HandlerOpts{})}})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, errcode.New(errcode.NotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)))
	})
	return h
}

// ServeHTTP names the request, authenticates the caller before anything of the request is read,
// refuses paths that are not in canonical form, and hands the rest to the routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := r.Header.Get("X-Request-ID")
	if !validHeaderToken(rid) {
		rid = newRequestID()
	}
	r.Header.Set("X-Request-ID", rid)
	w.Header().Set("X-Request-ID", rid)
	r, err := h.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="envfabric"`)
		h.fail(w, r, err)
		return
	}
	if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p && path.Clean(p)+"/" != p {
		// The mux would answer with a redirect to the cleaned path; a client that sends
		// "/envs/../x" or "//envs" gets a clear refusal instead.
		h.fail(w, r, errcode.New(errcode.InvalidRequest, fmt.Sprintf("path %q is not in canonical form", p)))
		return
	}
	h.mux.ServeHTTP(w, r)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) (status int, body any, err error)

type statusWriter struct {
	http.ResponseWriter
	status int
}

// Unwrap lets http.ResponseController reach the connection (for read deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

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

// readBody reads the whole body, bounded in size by MaxBodyBytes and in time by BodyTimeout,
// before the endpoint runs: a client that trickles its body holds a connection for BodyTimeout at
// most, and the deadline is gone before a long operation (a run) starts.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) error {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.opt.BodyTimeout))
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opt.MaxBodyBytes))
	if err != nil {
		// The deadline stays: the server would otherwise wait for the rest of the body before
		// answering. The connection is not reused.
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.As(err, &ne) && ne.Timeout():
			return errcode.New(errcode.RequestTimeout, fmt.Sprintf("request body not received within %s", h.opt.BodyTimeout))
		}
		return errcode.Wrap(errcode.InvalidRequest, err, "reading the request body: "+err.Error())
	}
	_ = rc.SetReadDeadline(time.Time{})
	r.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// checkQuery refuses query parameters the endpoint does not read, and repeated ones: a parameter
// that is silently ignored or read as its first copy hides a caller's mistake.
func checkQuery(r *http.Request, allowed []string) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return errcode.New(errcode.InvalidRequest, "query string: "+err.Error())
	}
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return errcode.New(errcode.InvalidRequest, fmt.Sprintf("query parameter %q: this endpoint takes none", k))
			}
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("query parameter %q: this endpoint takes only %s", k, strings.Join(allowed, ", ")))
		}
		if len(vs) > 1 {
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("query parameter %q given %d times", k, len(vs)))
		}
	}
	return nil
}

// checkBody refuses a body where none is read, and a body whose media type the endpoint does not
// read, before any of it is read.
func checkBody(r *http.Request, kind body) error {
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		return nil
	}
	if kind == noBody {
		return errcode.New(errcode.InvalidRequest, fmt.Sprintf("%s %s takes no request body", r.Method, r.URL.Path))
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = ""
	}
	switch {
	case mt == "application/json":
		return nil
	case kind == formBody && (mt == "multipart/form-data" || mt == "application/x-www-form-urlencoded"):
		return nil
	case kind == formBody:
		return errcode.New(errcode.UnsupportedMediaType, fmt.Sprintf("Content-Type %q: POST /envs takes application/json, multipart/form-data or application/x-www-form-urlencoded", ct))
	}
	return errcode.New(errcode.UnsupportedMediaType, fmt.Sprintf("Content-Type %q: the body must be application/json", ct))
}

// validHeaderToken bounds what a client-chosen X-Request-ID or X-Actor may be before it is echoed,
// logged and stored: 1-128 characters of A-Z a-z 0-9 . _ - : @.
func validHeaderToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:@", c) >= 0) {
			return false
		}
	}
	return true
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

// caller is who the audit records: the token's name, or without tokens what X-Actor claims.
func caller(r *http.Request) envs.Caller {
	actor := "anonymous"
	if id, ok := auth.FromContext(r.Context()); ok && id.Name != "" {
		actor = id.Name
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
	k, err := envid.New(r.PathValue("workflow_id"), r.PathValue("node_id"), v)
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
	if !utf8.Valid(b) {
		return errcode.New(errcode.InvalidRequest, "request body: not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var coded *errcode.Error
		if errors.As(err, &coded) {
			return coded
		}
		return errcode.Wrap(errcode.InvalidRequest, err, "request body: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return errcode.New(errcode.InvalidRequest, "request body: more than one JSON value")
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
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		ct = "application/json" // no body: the JSON decoder reports what is missing
	}
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
			// All of it in memory (the body is bounded already), so no upload touches the disk.
			err = r.ParseMultipartForm(h.opt.MaxBodyBytes)
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
		if err := checkForm(r); err != nil {
			return 0, nil, err
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
		return 0, nil, errcode.New(errcode.UnsupportedMediaType, "POST /envs takes form data (multipart or urlencoded) or a JSON body")
	}
	if requirements != "" {
		fromFile, err := h.opt.Packages.ParseRequirementsFile(requirements)
		if errors.Is(err, reqspec.ErrTooLarge) {
			return 0, nil, errcode.Wrap(errcode.RequestTooLarge, err, "")
		}
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

// maxSeconds bounds any number of seconds a request may carry: about 31 years, far below where
// a time.Duration overflows.
const maxSeconds = 1e9

// formFields are the fields of POST /envs as form data; each once, except packages.
var formFields = map[string]bool{"workflow_id": false, "node_id": false, "version_id": false,
	"python_version": false, "packages": true, "requirements_file": false}

// checkForm refuses unknown and repeated form fields, and uploads other than requirements_file.
func checkForm(r *http.Request) error {
	for k, vs := range r.PostForm {
		repeatable, ok := formFields[k]
		if !ok {
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("form field %q: unknown", k))
		}
		if len(vs) > 1 && !repeatable {
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("form field %q given %d times", k, len(vs)))
		}
	}
	if r.MultipartForm != nil {
		for k := range r.MultipartForm.File {
			if k != "requirements_file" {
				return errcode.New(errcode.InvalidRequest, fmt.Sprintf("form file %q: only requirements_file is read", k))
			}
		}
		if len(r.MultipartForm.File["requirements_file"]) > 0 && len(r.PostForm["requirements_file"]) > 0 {
			return errcode.New(errcode.InvalidRequest, "requirements_file: send it once, as a file or as a field")
		}
	}
	return nil
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
		if *body.Timeout > maxSeconds {
			// Past this the conversion to a duration overflows; the service's own maximum is lower.
			return 0, nil, errcode.New(errcode.InvalidRequest, "timeout: far over the maximum")
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
	wf := r.URL.Query().Get("workflow_id")
	if wf != "" {
		if err := envid.ValidateID("workflow_id", wf); err != nil {
			return 0, nil, errcode.Wrap(errcode.InvalidID, err, "")
		}
	}
	res, page, err := h.svc.List(r.Context(), wf, after, n)
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
	if len(c) > 512 || json.Unmarshal(b, &parts) != nil || len(parts) != 3 {
		return envid.Key{}, bad
	}
	k := envid.Key{WorkflowID: parts[0], NodeID: parts[1], VersionID: parts[2]}
	if k.Validate() != nil {
		return envid.Key{}, bad
	}
	return k, nil
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
	switch r.URL.Query().Get("dry_run") {
	case "", "false":
	case "true":
		body.DryRun = true
	default:
		return 0, nil, errcode.New(errcode.InvalidRequest, "dry_run: want true or false")
	}
	req := envs.CleanupRequest{DryRun: body.DryRun, IdleFor: -1}
	if body.IdleHours != nil {
		if *body.IdleHours < 0 || *body.IdleHours > maxSeconds/3600 {
			return 0, nil, errcode.New(errcode.InvalidRequest, fmt.Sprintf("idle_hours: want 0 to %g", float64(maxSeconds/3600)))
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
