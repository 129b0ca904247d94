package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// chromium finds Debian's chromium (installed by .ci/run). Without it the browser test is skipped,
// saying how to install it, unless CI=true, where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (CI=true): .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not installed: apt-get install chromium (CI fails without it)")
	return ""
}

// browse loads url in headless chromium and returns the DOM it rendered. Every call is a fresh
// browser (its own profile), so a page behind the console's session needs ?token=.
func browse(t *testing.T, bin, u string) *html.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--user-data-dir="+t.TempDir(), "--dump-dom", u)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", u, err, tail(stderr.String(), 3000))
	}
	doc, err := html.Parse(strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("parsing the DOM of %s: %v", u, err)
	}
	return doc
}

// elements returns the elements that carry attribute attr, in document order.
func elements(n *html.Node, attr string) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && attrOf(c, attr) != "" {
			out = append(out, c)
		}
	}
	return out
}

func byID(n *html.Node, id string) *html.Node {
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && attrOf(c, "id") == id {
			return c
		}
	}
	return nil
}

func attrOf(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

func textOf(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return strings.TrimSpace(b.String())
}

// TestConsoleInBrowser: the operator console, rendered by a real browser, shows what the API
// says: the environment listed with its state and revision (and filtered away by another state
// or workflow), its locked versions, revisions and operation history, the agents, and the
// fleet's cleanups. A browser carries its read token as ?token= once; the cookie it gets back
// opens the page it is redirected to.
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	f := newFabric(t, options{})

	// An environment the cleanup removes, then the one the pages show.
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "console", "node_id": "old", "packages": []string{"delta==0.1.0"}}), 201, "")
	r := f.do(t, "POST", "/envs/cleanup", map[string]any{"idle_hours": 0})
	expect(t, r, 200, "")
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "console", "node_id": "n1", "packages": []string{"beta>=1"}}), 201, "")
	expect(t, f.do(t, "POST", "/envs/console/n1/deps", map[string]any{"packages": []string{"delta==0.2.0"}}), 200, "")
	expect(t, f.do(t, "POST", "/envs/console/n1/run", map[string]any{"code": "print(1)"}), 200, "")

	page := func(path string, query url.Values) *html.Node {
		if query == nil {
			query = url.Values{}
		}
		query.Set("token", readerSecret)
		return browse(t, bin, f.URL+path+"?"+query.Encode())
	}

	t.Run("environments", func(t *testing.T) {
		list := f.do(t, "GET", "/envs?workflow_id=console", nil)
		expect(t, list, 200, "")
		want := map[string][2]string{}
		for _, e := range list.Body["environments"].([]any) {
			m := e.(map[string]any)
			want[fmt.Sprintf("%s/%s/%s", m["workflow_id"], m["node_id"], m["version_id"])] = [2]string{m["state"].(string), fmt.Sprint(m["revision"])}
		}
		got := map[string][2]string{}
		for _, row := range elements(page("/console", nil), "data-env") {
			got[attrOf(row, "data-env")] = [2]string{attrOf(row, "data-state"), attrOf(row, "data-revision")}
		}
		if !reflect.DeepEqual(got, want) || len(got) != 1 {
			t.Errorf("the page lists %v; the API %v (one environment, console/n1/v1)", got, want)
		}
		state := want["console/n1/v1"][0]
		if rows := elements(page("/console", url.Values{"state": {state}, "workflow_id": {"console"}}), "data-env"); len(rows) != 1 {
			t.Errorf("filtered by its state %s and workflow: %d rows; want 1", state, len(rows))
		}
		if rows := elements(page("/console", url.Values{"state": {"ERROR"}}), "data-env"); len(rows) != 0 {
			t.Errorf("filtered by ERROR: %d rows; want none", len(rows))
		}
		if rows := elements(page("/console", url.Values{"workflow_id": {"another"}}), "data-env"); len(rows) != 0 {
			t.Errorf("filtered by another workflow: %d rows; want none", len(rows))
		}
	})

	t.Run("one environment", func(t *testing.T) {
		doc := page("/console/envs/console/n1", nil)
		st := f.do(t, "GET", "/envs/console/n1", nil)
		expect(t, st, 200, "")
		if got, want := textOf(byID(doc, "state")), st.str("state"); got != want {
			t.Errorf("state %q; the API says %q", got, want)
		}
		if got, want := textOf(byID(doc, "revision")), fmt.Sprint(st.Body["revision"]); got != want {
			t.Errorf("revision %q; the API says %q", got, want)
		}
		if got := textOf(byID(doc, "in-step")); got != fmt.Sprint(st.Body["in_step"]) {
			t.Errorf("in step %q; the API says %v", got, st.Body["in_step"])
		}

		deps := f.do(t, "GET", "/envs/console/n1/deps", nil)
		expect(t, deps, 200, "")
		wantLocked := map[string]string{}
		for n, v := range deps.Body["locked_versions"].(map[string]any) {
			wantLocked[n] = v.(string)
		}
		gotLocked := map[string]string{}
		for _, row := range elements(doc, "data-package") {
			gotLocked[attrOf(row, "data-package")] = attrOf(row, "data-version")
		}
		if !reflect.DeepEqual(gotLocked, wantLocked) || gotLocked["delta"] != "0.2.0" {
			t.Errorf("locked versions %v; the API says %v", gotLocked, wantLocked)
		}
		for _, d := range deps.Body["dependencies"].([]any) {
			if !strings.Contains(textOf(byID(doc, "dependencies")), d.(string)) {
				t.Errorf("dependency %q is not on the page", d)
			}
		}

		ops := f.do(t, "GET", "/envs/console/n1/operations", nil)
		expect(t, ops, 200, "")
		var wantOps, gotOps []string
		for _, o := range ops.Body["operations"].([]any) {
			m := o.(map[string]any)
			wantOps = append(wantOps, fmt.Sprintf("%v %s %s", m["id"], m["operation"], m["status"]))
		}
		for _, row := range elements(doc, "data-op") {
			gotOps = append(gotOps, fmt.Sprintf("%s %s %s", attrOf(row, "data-op"), attrOf(row, "data-operation"), attrOf(row, "data-status")))
		}
		if !slices.Equal(gotOps, wantOps) || len(gotOps) != 3 {
			t.Errorf("history %q; the API says %q (run, add, create)", gotOps, wantOps)
		}
		var revs []string
		for _, row := range elements(doc, "data-by") {
			revs = append(revs, attrOf(row, "data-revision")+" "+attrOf(row, "data-by"))
		}
		if want := []string{fmt.Sprint(st.Body["revision"]) + " add", "1 create"}; !slices.Equal(revs, want) {
			t.Errorf("revisions %q; want %q (the add's is the current one)", revs, want)
		}
	})

	t.Run("agents", func(t *testing.T) {
		ag := f.do(t, "GET", "/agents", nil)
		expect(t, ag, 200, "")
		want := map[string]string{}
		for _, a := range ag.Body["agents"].([]any) {
			m := a.(map[string]any)
			want[m["agent_id"].(string)] = m["state"].(string)
		}
		doc := page("/console/agents", nil)
		got := map[string]string{}
		for _, row := range elements(doc, "data-agent") {
			got[attrOf(row, "data-agent")] = attrOf(row, "data-state")
		}
		if !reflect.DeepEqual(got, want) || len(got) != 1 || slices.Contains(slices.Collect(mapValues(got)), "unreachable") {
			t.Errorf("agents %v; the API says %v (one, alive)", got, want)
		}
		if pys := elements(doc, "data-python"); len(pys) == 0 {
			t.Errorf("no interpreter shown for the agent")
		}
	})

	t.Run("cleanups", func(t *testing.T) {
		rows := elements(page("/console/cleanups", nil), "data-env")
		var got []string
		for _, row := range rows {
			got = append(got, attrOf(row, "data-env")+" "+attrOf(row, "data-status"))
		}
		if !slices.Equal(got, []string{"console/old/v1 succeeded"}) {
			t.Errorf("cleanups %q; want the removal of console/old/v1", got)
		}
	})

	t.Run("no token", func(t *testing.T) {
		doc := browse(t, bin, f.URL+"/console")
		if !strings.Contains(textOf(doc), "UNAUTHENTICATED") {
			t.Errorf("the console without a token shows %q; want UNAUTHENTICATED", tail(textOf(doc), 300))
		}
	})
}

func mapValues(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// TestConsoleSession: ?token= sets an HttpOnly cookie scoped to the console and redirects to the
// page without the token; the cookie opens the console and nothing else of the API; a writer's
// token works (read is the least role), no token is 401.
func TestConsoleSession(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, cookie *http.Cookie) *http.Response {
		req, _ := http.NewRequest("GET", f.URL+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get("/console/agents?token="+url.QueryEscape(readerSecret), nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/agents" {
		t.Fatalf("?token=: %d to %q; want 303 to /console/agents", resp.StatusCode, resp.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == "envfabric_console" {
			c = k
		}
	}
	if c == nil || !c.HttpOnly || c.Path != "/console" || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v; want HttpOnly, SameSite=Strict, Path=/console", c)
	}
	if r := get("/console/agents", c); r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Errorf("with the cookie: %d %s; want 200 text/html", r.StatusCode, r.Header.Get("Content-Type"))
	}
	if r := get("/envs", c); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the cookie on GET /envs: %d; want 401 (it opens the console only)", r.StatusCode)
	}
	if r := get("/console", nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %d; want 401", r.StatusCode)
	}
	if r := get("/console?token=not-a-configured-token-at-all", nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token: %d; want 401", r.StatusCode)
	}
	if r := get("/console?token="+url.QueryEscape(writerSecret), nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("a writer's token: %d; want 303", r.StatusCode)
	}
	if r := get("/console?state=NOPE", &http.Cookie{Name: "envfabric_console", Value: readerSecret}); r.StatusCode != http.StatusBadRequest {
		t.Errorf("an unknown state filter: %d; want 400", r.StatusCode)
	}
}
