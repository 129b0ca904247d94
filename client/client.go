// Package client is a typed Go client of Environment Fabric's REST API (README.md "API",
// controlplane/api/openapi.json): one method per endpoint, the API's answers as Go types, and every
// error answer as an *Error carrying its code. It imports nothing of the control plane but the
// shared error codes, so any program may link it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/envfabric/envfabric/shared/errcode"
)

// DefaultVersion is the version_id the API assumes when a request names none.
const DefaultVersion = "v1"

// maxAnswerBytes bounds an answer read into memory. A run's output is bounded by the fabric
// (RUN_MAX_OUTPUT_BYTES per stream, base64 at worst), an export by its lock file; this is far above.
const maxAnswerBytes = 256 << 20

// Client calls one control plane. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	actor string
	hc    *http.Client
	retry LockedRetry
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends token as the bearer token of every request (API_TOKENS on the server).
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient makes the requests through hc (its timeout, transport, TLS); the default is
// http.DefaultClient. A run or a uv operation can take minutes: bound calls with their context.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithActor sends X-Actor, the name an open API (no tokens) records in the audit.
func WithActor(actor string) Option { return func(c *Client) { c.actor = actor } }

// LockedRetry says how to retry an answer of 423 ENV_LOCKED: another operation holds the
// environment and nothing was done, so the request may be sent again.
type LockedRetry struct {
	Attempts int           // retries after the first answer; 0 never retries
	Wait     time.Duration // the wait when the answer has no Retry-After (default 1s)
	MaxWait  time.Duration // the longest single wait, whatever Retry-After says (default 30s)
}

// WithLockedRetry retries requests answered 423 ENV_LOCKED, waiting as the answer's Retry-After
// says. Off by default: a caller that holds its own schedule sees the 423 at once.
func WithLockedRetry(r LockedRetry) Option { return func(c *Client) { c.retry = r } }

// New makes a client of the control plane at baseURL ("http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("control plane URL %q: want http://host:port or https://host:port", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("control plane URL %q: no query or fragment", baseURL)
	}
	c := &Client{base: u, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.retry.Wait <= 0 {
		c.retry.Wait = time.Second
	}
	if c.retry.MaxWait <= 0 {
		c.retry.MaxWait = 30 * time.Second
	}
	return c, nil
}

// URL is the control plane's base URL.
func (c *Client) URL() string { return c.base.String() }

// Env names one environment; an empty VersionID is the API's default, v1. Its JSON is the API's
// name of an environment (CreateRequest.From).
type Env struct {
	WorkflowID string `json:"workflow_id"`
	NodeID     string `json:"node_id"`
	VersionID  string `json:"version_id,omitempty"`
}

// String is the environment as the CLI writes it: WF/NODE/VERSION (VERSION v1 when empty).
func (e Env) String() string {
	v := e.VersionID
	if v == "" {
		v = DefaultVersion
	}
	return e.WorkflowID + "/" + e.NodeID + "/" + v
}

func (e Env) path(suffix string) string {
	return "/envs/" + url.PathEscape(e.WorkflowID) + "/" + url.PathEscape(e.NodeID) + suffix
}

func (e Env) query() url.Values {
	q := url.Values{}
	if e.VersionID != "" {
		q.Set("version_id", e.VersionID)
	}
	return q
}

type requestIDKey struct{}

// WithRequestID makes the calls under ctx send X-Request-ID id (1–128 of A-Z a-z 0-9 . _ - : @),
// which the server echoes and the audit records; without it the server makes one.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// call sends one request and decodes a 2xx answer into out (which may be nil). in, when not
// nil, is sent as a JSON body. Any other answer is an *Error.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // specifiers such as "numpy>=2" stay readable on the wire
		if err := enc.Encode(in); err != nil {
			return fmt.Errorf("encoding the %s %s body: %w", method, path, err)
		}
		body = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	status, raw, err := c.send(ctx, method, path, q, body, "application/json")
	if err != nil {
		return err
	}
	return decodeInto(method, path, status, raw, out)
}

func decodeInto(method, path string, status int, raw []byte, out any) error {
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: reading the %d answer: %w", method, path, status, err)
	}
	if r, ok := out.(rawSetter); ok {
		r.setRaw(raw)
	}
	return nil
}

// send makes the request, retrying 423 as configured, and returns a 2xx answer's status and
// body; any other answer is an *Error.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body []byte, contentType string) (int, []byte, error) {
	// path is escaped already (Env.path): appended as text, not through url.URL's Path, so an
	// escaped "/" in an id stays escaped and the server refuses the id rather than the route.
	u := c.base.String() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	for attempt := 0; ; attempt++ {
		status, raw, err := c.once(ctx, method, u, body, contentType)
		var apiErr *Error
		if err == nil || !errors.As(err, &apiErr) || apiErr.Code != errcode.EnvLocked || attempt >= c.retry.Attempts {
			return status, raw, err
		}
		wait := apiErr.RetryAfter
		if wait <= 0 {
			wait = c.retry.Wait
		}
		wait = min(wait, c.retry.MaxWait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, nil, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

func (c *Client) once(ctx context.Context, method, u string, body []byte, contentType string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.actor != "" {
		req.Header.Set("X-Actor", c.actor)
	}
	if id, _ := ctx.Value(requestIDKey{}).(string); id != "" {
		req.Header.Set("X-Request-ID", id)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err // a *url.Error: it names the method and URL
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: reading the answer: %w", method, req.URL.Redacted(), err)
	}
	if len(raw) > maxAnswerBytes {
		return 0, nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, req.URL.Redacted(), maxAnswerBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, raw, decodeError(resp, raw)
	}
	return resp.StatusCode, raw, nil
}

// CreateRequest is POST /envs. Packages are PEP 508 requirements; Requirements is the text of a
// requirements file (requirement lines, comments and continuations only). Empty VersionID and
// PythonVersion are the server's defaults (v1, DEFAULT_PYTHON).
//
// From, instead of packages, makes the environment from another one: revision 1 is that one's
// current pyproject.toml, uv.lock and build, with no resolution and no install. PythonVersion
// must then be empty or the source's.
type CreateRequest struct {
	WorkflowID    string   `json:"workflow_id"`
	NodeID        string   `json:"node_id"`
	VersionID     string   `json:"version_id,omitempty"`
	PythonVersion string   `json:"python_version,omitempty"`
	Packages      []string `json:"packages,omitempty"`
	Requirements  string   `json:"requirements,omitempty"`
	From          *Env     `json:"from,omitempty"`
}

// Create creates an environment and installs its packages.
func (c *Client) Create(ctx context.Context, req CreateRequest) (*CreatedEnv, error) {
	var out CreatedEnv
	if err := c.call(ctx, http.MethodPost, "/envs", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deps lists an environment's dependencies and every locked version.
func (c *Client) Deps(ctx context.Context, env Env) (*DepsResult, error) {
	var out DepsResult
	if err := c.call(ctx, http.MethodGet, env.path("/deps"), env.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

type packagesBody struct {
	Packages []string `json:"packages"`
	DryRun   bool     `json:"dry_run,omitempty"`
}

func (c *Client) mutate(ctx context.Context, method string, env Env, packages []string, dryRun bool, out any) error {
	return c.call(ctx, method, env.path("/deps"), env.query(), packagesBody{Packages: packages, DryRun: dryRun}, out)
}

func (c *Client) change(ctx context.Context, method string, env Env, packages []string) (*DepsResult, error) {
	var out DepsResult
	if err := c.mutate(ctx, method, env, packages, false, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) preview(ctx context.Context, method string, env Env, packages []string) (*DryRunResult, error) {
	var out DryRunResult
	if err := c.mutate(ctx, method, env, packages, true, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Add adds packages (uv add): all or nothing.
func (c *Client) Add(ctx context.Context, env Env, packages []string) (*DepsResult, error) {
	return c.change(ctx, http.MethodPost, env, packages)
}

// Remove removes dependencies by name (uv remove): all or nothing.
func (c *Client) Remove(ctx context.Context, env Env, names []string) (*DepsResult, error) {
	return c.change(ctx, http.MethodDelete, env, names)
}

// Update changes dependencies' specifiers, or upgrades bare names to the newest version their
// current specifier allows: all or nothing.
func (c *Client) Update(ctx context.Context, env Env, packages []string) (*DepsResult, error) {
	return c.change(ctx, http.MethodPut, env, packages)
}

// AddDryRun resolves what Add would do and changes nothing: no revision, no build, the files as
// they were. The answer is what Add would commit, and the locked packages it would change.
func (c *Client) AddDryRun(ctx context.Context, env Env, packages []string) (*DryRunResult, error) {
	return c.preview(ctx, http.MethodPost, env, packages)
}

// RemoveDryRun resolves what Remove would do and changes nothing (see AddDryRun).
func (c *Client) RemoveDryRun(ctx context.Context, env Env, names []string) (*DryRunResult, error) {
	return c.preview(ctx, http.MethodDelete, env, names)
}

// UpdateDryRun resolves what Update would do and changes nothing (see AddDryRun).
func (c *Client) UpdateDryRun(ctx context.Context, env Env, packages []string) (*DryRunResult, error) {
	return c.preview(ctx, http.MethodPut, env, packages)
}

// Rollback makes revision an earlier revision's files and build current again, as a new revision.
func (c *Client) Rollback(ctx context.Context, env Env, revision int64) (*RollbackResult, error) {
	var out RollbackResult
	body := struct {
		Revision int64 `json:"revision"`
	}{revision}
	if err := c.call(ctx, http.MethodPost, env.path("/rollback"), env.query(), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPreload replaces the environment's preload list: the modules its build's warm interpreter
// imports before any run, on top of the agent's own choice. An empty list clears it.
func (c *Client) SetPreload(ctx context.Context, env Env, modules []string) (*PreloadResult, error) {
	var out PreloadResult
	body := struct {
		Modules []string `json:"modules"`
	}{append([]string{}, modules...)}
	if err := c.call(ctx, http.MethodPut, env.path("/preload"), env.query(), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RunRequest is POST run: Python code and its timeout (zero: the server's EXECUTION_TIMEOUT).
type RunRequest struct {
	Code    string
	Timeout time.Duration
	// Cold asks for a fresh interpreter even where the agent has a warm one for the build
	// ("warm": false).
	Cold bool
}

// Run runs code with the environment's interpreter. A non-zero exit is in the result; a run past
// its timeout is an *Error with code EXECUTION_TIMEOUT whose RunTimeout method has the partial
// output.
func (c *Client) Run(ctx context.Context, env Env, req RunRequest) (*RunResult, error) {
	body := struct {
		Code    string   `json:"code"`
		Timeout *float64 `json:"timeout,omitempty"`
		Warm    *bool    `json:"warm,omitempty"`
	}{Code: req.Code}
	if req.Cold {
		warm := false
		body.Warm = &warm
	}
	if req.Timeout > 0 {
		s := req.Timeout.Seconds()
		body.Timeout = &s
	}
	var out RunResult
	if err := c.call(ctx, http.MethodPost, env.path("/run"), env.query(), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Export returns the environment's pyproject.toml and uv.lock at its current revision.
func (c *Client) Export(ctx context.Context, env Env) (*ExportResult, error) {
	var out ExportResult
	if err := c.call(ctx, http.MethodGet, env.path("/export"), env.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Sync rebuilds the environment's .venv from its recorded uv.lock.
func (c *Client) Sync(ctx context.Context, env Env) (*SyncResult, error) {
	var out SyncResult
	if err := c.call(ctx, http.MethodPost, env.path("/sync"), env.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Status is the environment's recorded state and what its agent sees on disk.
func (c *Client) Status(ctx context.Context, env Env) (*Status, error) {
	var out Status
	if err := c.call(ctx, http.MethodGet, env.path(""), env.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete removes the environment and its directory.
func (c *Client) Delete(ctx context.Context, env Env) (*DeleteResult, error) {
	var out DeleteResult
	if err := c.call(ctx, http.MethodDelete, env.path(""), env.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListOptions selects a page of GET /envs. Zero values are the server's defaults (every
// workflow, 50 per page, the first page).
type ListOptions struct {
	WorkflowID string
	Limit      int    // 1–500
	Cursor     string // a previous page's NextCursor
}

// List returns one page of environments.
func (c *Client) List(ctx context.Context, opt ListOptions) (*ListResult, error) {
	q := url.Values{}
	if opt.WorkflowID != "" {
		q.Set("workflow_id", opt.WorkflowID)
	}
	if opt.Limit != 0 {
		q.Set("limit", strconv.Itoa(opt.Limit))
	}
	if opt.Cursor != "" {
		q.Set("cursor", opt.Cursor)
	}
	var out ListResult
	if err := c.call(ctx, http.MethodGet, "/envs", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAll follows the pages of GET /envs from opt.Cursor to the end (opt.Limit is the page size).
func (c *Client) ListAll(ctx context.Context, opt ListOptions) ([]EnvView, error) {
	var all []EnvView
	for {
		page, err := c.List(ctx, opt)
		if err != nil {
			return all, err
		}
		all = append(all, page.Environments...)
		if page.NextCursor == "" || page.NextCursor == opt.Cursor {
			return all, nil
		}
		opt.Cursor = page.NextCursor
	}
}

// OperationsOptions selects a page of an environment's audit rows; zero values are the
// server's defaults (50, the newest first).
type OperationsOptions struct {
	Limit  int   // 1–500
	Before int64 // a previous page's NextBefore
}

// Operations returns the environment's audit rows, newest first.
func (c *Client) Operations(ctx context.Context, env Env, opt OperationsOptions) (*History, error) {
	q := env.query()
	if opt.Limit != 0 {
		q.Set("limit", strconv.Itoa(opt.Limit))
	}
	if opt.Before != 0 {
		q.Set("before", strconv.FormatInt(opt.Before, 10))
	}
	var out History
	if err := c.call(ctx, http.MethodGet, env.path("/operations"), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CleanupRequest is POST /envs/cleanup. IdleHours nil is the server's CLEANUP_IDLE_HOURS; 0 takes
// every environment unused now.
type CleanupRequest struct {
	DryRun    bool     `json:"dry_run,omitempty"`
	IdleHours *float64 `json:"idle_hours,omitempty"`
}

// Cleanup removes (or with DryRun lists) the environments unused for the idle time. It needs an
// admin token.
func (c *Client) Cleanup(ctx context.Context, req CleanupRequest) (*CleanupResult, error) {
	var out CleanupResult
	if err := c.call(ctx, http.MethodPost, "/envs/cleanup", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Agents is the fabric's view of its agents.
func (c *Client) Agents(ctx context.Context) (*Agents, error) {
	var out Agents
	if err := c.call(ctx, http.MethodGet, "/agents", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Healthz reports whether the control plane is serving.
func (c *Client) Healthz(ctx context.Context) (*Health, error) {
	var out Health
	if err := c.call(ctx, http.MethodGet, "/healthz", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Readyz reports whether the control plane can serve: a 503 answer is a Readiness with Ready
// false and the failing checks, not an error.
func (c *Client) Readyz(ctx context.Context) (*Readiness, error) {
	var out Readiness
	err := c.call(ctx, http.MethodGet, "/readyz", nil, nil, &out)
	var apiErr *Error
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusServiceUnavailable && apiErr.Code == "" && len(apiErr.Body) > 0 {
		if jerr := json.Unmarshal(apiErr.Body, &out); jerr == nil && out.Status != "" {
			out.setRaw(apiErr.Body)
			return &out, nil
		}
	}
	if err != nil {
		return nil, err
	}
	out.Ready = true
	return &out, nil
}
