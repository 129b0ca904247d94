// Package console is the operator console: read-only HTML pages of the environments, one
// environment (dependencies, revisions, history, disk), the agents and the fleet's recent
// cleanups, rendered on the server with html/template from the same envs.Service calls the REST
// API answers with. No build step, no script: a page is a GET, a filter is a form.
//
// The API's router mounts the pages (Pages) behind the read role and authenticates their
// requests; a browser cannot send a bearer header, so Credential also takes the token once as
// ?token=, which the page turns into an HttpOnly cookie before redirecting to the URL without it.
package console

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// CookieName is the cookie that carries a console session's bearer secret.
const CookieName = "envfabric_console"

// TokenParam is the query parameter a browser hands its token over in, once.
const TokenParam = "token"

// Prefix is where the console lives.
const Prefix = "/console"

// IsPath reports whether an URL path is one of the console's, where Credential applies.
func IsPath(p string) bool { return p == Prefix || strings.HasPrefix(p, Prefix+"/") }

// Credential is the bearer secret a console request carries when it has no Authorization
// header: ?token= (the first visit), else the session cookie.
func Credential(r *http.Request) string {
	if t := r.URL.Query().Get(TokenParam); t != "" {
		return t
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value
	}
	return ""
}

// Page is one route of the console: its mux pattern and the query parameters it reads.
type Page struct {
	Pattern string
	Query   []string
}

// Pages are the console's routes, for the API's router (and its OpenAPI check).
func Pages() []Page {
	return []Page{
		{Prefix, []string{"workflow_id", "state", "cursor", TokenParam}},
		{Prefix + "/envs/{workflow_id}/{node_id}", []string{"version_id", "before", TokenParam}},
		{Prefix + "/agents", []string{TokenParam}},
		{Prefix + "/cleanups", []string{"before", TokenParam}},
	}
}

//go:embed templates/*.html
var files embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"when":   when,
	"envURL": envURL,
	"key": func(wf, node, version string) envid.Key {
		return envid.Key{WorkflowID: wf, NodeID: node, VersionID: version}
	},
	"bytes":    humanBytes,
	"join":     strings.Join,
	"duration": func(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() },
}).ParseFS(files, "templates/*.html"))

// Console serves the pages.
type Console struct {
	svc    *envs.Service
	agents envs.Viewer // nil: an empty single-host view
	log    *slog.Logger
	now    func() time.Time
}

// New returns the console over svc and the agents view the API's GET /agents uses.
func New(svc *envs.Service, agents envs.Viewer, log *slog.Logger) *Console {
	return &Console{svc: svc, agents: agents, log: log, now: time.Now}
}

// pageSize is how many rows a table shows before it offers the next page.
const pageSize = 50

// States are the recorded and derived states the environments filter offers.
var States = []string{store.StateCreating, store.StateActive, store.StateIdle, store.StateInstalling, store.StateSyncing,
	store.StateRunning, store.StateDeleting, store.StateError}

// ServeHTTP renders one page. The caller (the API's router) has authenticated the request and
// checked its query parameters.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has(TokenParam) {
		c.startSession(w, r)
		return
	}
	var (
		name string
		data any
		err  error
	)
	switch {
	case r.URL.Path == Prefix:
		name = "envs"
		data, err = c.envs(r)
	case r.URL.Path == Prefix+"/agents":
		name, data = "agents", c.agentsPage(r.Context())
	case r.URL.Path == Prefix+"/cleanups":
		name = "cleanups"
		data, err = c.cleanups(r)
	case strings.HasPrefix(r.URL.Path, Prefix+"/envs/"):
		name = "env"
		data, err = c.env(r)
	default:
		err = errcode.New(errcode.NotFound, "no such console page")
	}
	if err != nil {
		c.render(w, r, errcode.Of(err).HTTPStatus(), "error", errorPage{Code: string(errcode.Of(err)), Message: message(err)})
		return
	}
	c.render(w, r, http.StatusOK, name, data)
}

// startSession turns ?token= into the session cookie and sends the browser to the same page
// without it, so the secret leaves the address bar and the history at once. The cookie is
// HttpOnly (no script reads it), SameSite=Strict and scoped to the console's paths: it opens
// the read-only pages and nothing else of the API.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	secret := q.Get(TokenParam)
	q.Del(TokenParam)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: secret, Path: Prefix, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"})
	target := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target.String(), http.StatusSeeOther)
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		c.log.ErrorContext(r.Context(), "rendering a console page", "page", name, "err", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// Nothing on these pages comes from elsewhere, and no script runs on them.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

type errorPage struct{ Code, Message string }

func message(err error) string {
	var coded errcode.Coded
	if errors.As(err, &coded) && coded.ErrorMessage() != "" {
		return coded.ErrorMessage()
	}
	return err.Error()
}

// envsPage is the environments list.
type envsPage struct {
	WorkflowID, State string
	States            []string
	Envs              []envs.EnvView
	Next              string // the next page's URL, "" on the last
	Filtered          bool   // a state filter hid rows of this page
}

func (c *Console) envs(r *http.Request) (envsPage, error) {
	q := r.URL.Query()
	p := envsPage{WorkflowID: q.Get("workflow_id"), State: strings.ToUpper(q.Get("state")), States: States}
	if p.State != "" && !slices.Contains(States, p.State) {
		return p, errcode.New(errcode.InvalidRequest, fmt.Sprintf("state %q: want one of %s", q.Get("state"), strings.Join(States, ", ")))
	}
	var after envid.Key
	if cur := q.Get("cursor"); cur != "" {
		var err error
		if after, err = parseCursor(cur); err != nil {
			return p, err
		}
	}
	res, page, err := c.svc.List(r.Context(), p.WorkflowID, after, pageSize)
	if err != nil {
		return p, err
	}
	// The state is filtered on the page the store returned (IDLE is derived from the last use,
	// not stored), so a filtered page may show fewer rows than pageSize; the next one goes on.
	for _, e := range res.Environments {
		if p.State == "" || e.State == p.State {
			p.Envs = append(p.Envs, e)
		}
	}
	p.Filtered = len(p.Envs) < len(res.Environments)
	if len(page) > 0 {
		next := url.Values{"cursor": {page[len(page)-1].Key.Cursor()}}
		if p.WorkflowID != "" {
			next.Set("workflow_id", p.WorkflowID)
		}
		if p.State != "" {
			next.Set("state", p.State)
		}
		p.Next = Prefix + "?" + next.Encode()
	}
	return p, nil
}

// envPage is one environment.
type envPage struct {
	Key       envid.Key
	Status    envs.Status
	Deps      *envs.DepsResult
	Locked    []nameVersion
	DepsError string
	Revisions []revision
	History   envs.History
	Older     string // the next page of the history
}

type nameVersion struct{ Name, Version string }

// revision is one revision as the history shows it: the operation that committed it.
type revision struct {
	Number    int64
	Operation string
	ID        int64
	Actor     string
	At        time.Time
}

func (c *Console) env(r *http.Request) (envPage, error) {
	q := r.URL.Query()
	key, err := envid.New(r.PathValue("workflow_id"), r.PathValue("node_id"), q.Get("version_id"))
	if err != nil {
		return envPage{}, errcode.Wrap(errcode.InvalidID, err, "")
	}
	var before int64
	if s := q.Get("before"); s != "" {
		if _, err := fmt.Sscan(s, &before); err != nil || before < 1 {
			return envPage{}, errcode.New(errcode.InvalidRequest, "before: want an operation id")
		}
	}
	p := envPage{Key: key}
	// The history outlives a deleted environment, so a missing one still shows its operations.
	st, serr := c.svc.Status(r.Context(), key)
	if serr != nil && errcode.Of(serr) != errcode.EnvNotFound {
		return p, serr
	}
	p.Status = st
	if serr == nil {
		if d, err := c.svc.Deps(r.Context(), key); err != nil {
			p.DepsError = message(err)
		} else {
			p.Deps = &d
			for n, v := range d.LockedVersions {
				p.Locked = append(p.Locked, nameVersion{n, v})
			}
			slices.SortFunc(p.Locked, func(a, b nameVersion) int { return cmp.Compare(a.Name, b.Name) })
		}
	}
	if p.History, err = c.svc.Operations(r.Context(), key, before, pageSize); err != nil {
		return p, err
	}
	if p.History.NextBefore > 0 {
		v := url.Values{"before": {fmt.Sprint(p.History.NextBefore)}}
		if key.VersionID != envid.DefaultVersion {
			v.Set("version_id", key.VersionID)
		}
		p.Older = envPath(key) + "?" + v.Encode()
	}
	// Revisions are what the history's changes committed: each names the revision it made. A
	// change that changed nothing names its base, which the oldest operation naming it made.
	seen := map[int64]bool{}
	for _, o := range slices.Backward(p.History.Operations) {
		n, ok := o.Result["revision"].(float64)
		if !ok || o.Status != store.OpSucceeded || !committing[o.Operation] || seen[int64(n)] {
			continue
		}
		seen[int64(n)] = true
		p.Revisions = append([]revision{{Number: int64(n), Operation: o.Operation, ID: o.ID, Actor: o.Actor, At: o.StartedAt}}, p.Revisions...)
	}
	return p, nil
}

// committing are the operations that commit a revision (a run or a sync records the one it used).
var committing = map[string]bool{"create": true, "add": true, "remove": true, "update": true}

// agentsPage is the agents view.
type agentsPage struct{ envs.AgentsView }

func (c *Console) agentsPage(ctx context.Context) agentsPage {
	if c.agents == nil {
		return agentsPage{envs.AgentsView{Mode: envs.ModeSingleHost}}
	}
	return agentsPage{c.agents.View(ctx)}
}

// cleanupsPage is the fleet's recent cleanup removals.
type cleanupsPage struct {
	Cleanups []envs.FleetOperation
	Older    string
}

func (c *Console) cleanups(r *http.Request) (cleanupsPage, error) {
	var before int64
	if s := r.URL.Query().Get("before"); s != "" {
		if _, err := fmt.Sscan(s, &before); err != nil || before < 1 {
			return cleanupsPage{}, errcode.New(errcode.InvalidRequest, "before: want an operation id")
		}
	}
	ops, err := c.svc.RecentCleanups(r.Context(), before, pageSize+1)
	if err != nil {
		return cleanupsPage{}, err
	}
	p := cleanupsPage{Cleanups: ops}
	if len(ops) > pageSize {
		p.Cleanups = ops[:pageSize]
		p.Older = fmt.Sprintf("%s/cleanups?before=%d", Prefix, ops[pageSize-1].ID)
	}
	return p, nil
}

func parseCursor(c string) (envid.Key, error) {
	k, err := envid.ParseCursor(c)
	if err != nil {
		return k, errcode.New(errcode.InvalidRequest, err.Error())
	}
	return k, nil
}

// envPath is an environment's console page without its version.
func envPath(k envid.Key) string {
	return Prefix + "/envs/" + url.PathEscape(k.WorkflowID) + "/" + url.PathEscape(k.NodeID)
}

// envURL is an environment's console page.
func envURL(k envid.Key) string {
	if k.VersionID != "" && k.VersionID != envid.DefaultVersion {
		return envPath(k) + "?version_id=" + url.QueryEscape(k.VersionID)
	}
	return envPath(k)
}

// when shows a time in UTC with how long ago it was; the zero time is "never".
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	ago := time.Since(t).Round(time.Second)
	rel := "just now"
	switch {
	case ago >= 48*time.Hour:
		rel = fmt.Sprintf("%d days ago", int(ago.Hours()/24))
	case ago >= time.Hour:
		rel = fmt.Sprintf("%dh%02dm ago", int(ago.Hours()), int(ago.Minutes())%60)
	case ago >= time.Minute:
		rel = fmt.Sprintf("%dm ago", int(ago.Minutes()))
	case ago >= time.Second:
		rel = fmt.Sprintf("%ds ago", int(ago.Seconds()))
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC") + " (" + rel + ")"
}

func humanBytes(v any) string {
	var n float64
	switch x := v.(type) {
	case float64:
		n = x
	case int64:
		n = float64(x)
	case int:
		n = float64(x)
	default:
		return ""
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
