package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/api"
)

// This file holds the proof that the OpenAPI document is exact: every field of every response
// body the end-to-end flow sees is declared, with its type, for that path, method and status;
// every required field is there; a null only where the document says nullable. A generated client
// (pysdk_test.go) relies on exactly that. An endpoint added without its schema fails here, with
// the path of the undeclared field and the schema that should declare it.
//
// Two nets: TestOpenAPIDescribesEveryAnswer walks the whole flow (a new endpoint adds its calls
// there, success and error answers both), and every answer any e2e test reads through
// fabric.send is checked the same way (conformsToDoc), so a new endpoint's own tests check its
// document too.

// apiDoc is the served OpenAPI document, read as plain JSON for checking answers against it.
type apiDoc struct {
	root  map[string]any
	paths []docPath
}

type docPath struct {
	template string // "/envs/{workflow_id}/{node_id}/run"
	re       *regexp.Regexp
	literal  int // literal characters: a literal segment wins over a parameter
}

func parseAPIDoc(t *testing.T, raw []byte) *apiDoc {
	t.Helper()
	d := &apiDoc{}
	if err := json.Unmarshal(raw, &d.root); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	paths, _ := d.root["paths"].(map[string]any)
	for tmpl := range paths {
		segs := strings.Split(tmpl, "/")
		literal := 0
		for i, s := range segs {
			if strings.HasPrefix(s, "{") {
				segs[i] = "[^/]+"
			} else {
				segs[i] = regexp.QuoteMeta(s)
				literal += len(s)
			}
		}
		d.paths = append(d.paths, docPath{template: tmpl, re: regexp.MustCompile("^" + strings.Join(segs, "/") + "$"), literal: literal})
	}
	sort.Slice(d.paths, func(i, j int) bool { return d.paths[i].literal > d.paths[j].literal })
	return d
}

// template is the document's path that urlPath falls under, or "".
func (d *apiDoc) template(urlPath string) string {
	for _, p := range d.paths {
		if p.re.MatchString(urlPath) {
			return p.template
		}
	}
	return ""
}

// resolve follows a local $ref ("#/components/schemas/X").
func (d *apiDoc) resolve(ref string) (map[string]any, bool) {
	var node any = d.root
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := node.(map[string]any)
		if !ok {
			return nil, false
		}
		node = m[part]
	}
	m, ok := node.(map[string]any)
	return m, ok
}

// responseSchema finds what the document says of one answer: its schema and where that is.
func (d *apiDoc) responseSchema(method, tmpl string, status int, contentType string) (schema map[string]any, where string, problem string) {
	op, _ := d.root["paths"].(map[string]any)[tmpl].(map[string]any)[strings.ToLower(method)].(map[string]any)
	if op == nil {
		return nil, "", fmt.Sprintf("%s %s is not in the document", method, tmpl)
	}
	responses, _ := op["responses"].(map[string]any)
	resp, ok := responses[strconv.Itoa(status)].(map[string]any)
	where = fmt.Sprintf("#/paths/%s/%s/responses/%d", tmpl, strings.ToLower(method), status)
	if !ok {
		var declared []string
		for s := range responses {
			declared = append(declared, s)
		}
		sort.Strings(declared)
		return nil, where, fmt.Sprintf("status %d is not declared (declared: %s)", status, strings.Join(declared, ", "))
	}
	if ref, _ := resp["$ref"].(string); ref != "" {
		resp, _ = d.resolve(ref)
	}
	mediaType := strings.TrimSpace(strings.Split(contentType, ";")[0])
	media, ok := resp["content"].(map[string]any)[mediaType].(map[string]any)
	if !ok {
		return nil, where, fmt.Sprintf("content type %q is not declared", mediaType)
	}
	schema, ok = media["schema"].(map[string]any)
	if !ok {
		return nil, where, fmt.Sprintf("no schema for %s", mediaType)
	}
	return schema, where + "/content/" + mediaType + "/schema", ""
}

// conform checks one value against a schema and returns every problem, each naming the JSON path
// of the value ($.operations[0].params) and the schema that should declare it.
func (d *apiDoc) conform(schema map[string]any, where string, v any, at string) []string {
	schema, where = d.flatten(schema, where)
	if v == nil {
		if nullable, _ := schema["nullable"].(bool); nullable {
			return nil
		}
		return []string{fmt.Sprintf("%s is null, and %s does not mark it nullable", at, where)}
	}
	if branches, ok := schema["oneOf"].([]any); ok {
		return d.conformAny(branches, where+"/oneOf", v, at)
	}
	if branches, ok := schema["anyOf"].([]any); ok {
		return d.conformAny(branches, where+"/anyOf", v, at)
	}
	var problems []string
	if enum, ok := schema["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if e == v {
				found = true
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("%s = %v is not in the enum of %s %v", at, v, where, enum))
		}
	}
	typ, _ := schema["type"].(string)
	if typ == "" && (schema["properties"] != nil || schema["additionalProperties"] != nil) {
		typ = "object"
	}
	switch typ {
	case "":
		return append(problems, fmt.Sprintf("%s: %s declares no type", at, where))
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return append(problems, fmt.Sprintf("%s is %s; %s says object", at, jsonKind(v), where))
		}
		props, _ := schema["properties"].(map[string]any)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			child := at + "." + k
			if p, ok := props[k].(map[string]any); ok {
				problems = append(problems, d.conform(p, where+"/properties/"+k, obj[k], child)...)
				continue
			}
			switch extra := schema["additionalProperties"].(type) {
			case map[string]any:
				problems = append(problems, d.conform(extra, where+"/additionalProperties", obj[k], child)...)
			case bool:
				if !extra {
					problems = append(problems, fmt.Sprintf("%s is not declared: %s has no property %q and forbids others", child, where, k))
				}
				// true: a deliberately free-form object (an audit row's params)
			default:
				problems = append(problems, fmt.Sprintf("%s is not declared: add %q to %s/properties", child, k, where))
			}
		}
		for _, r := range schema["required"].([]any) {
			if _, ok := obj[r.(string)]; !ok {
				problems = append(problems, fmt.Sprintf("%s.%s is missing, and %s lists it as required", at, r, where))
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return append(problems, fmt.Sprintf("%s is %s; %s says array", at, jsonKind(v), where))
		}
		items, ok := schema["items"].(map[string]any)
		if !ok {
			return append(problems, fmt.Sprintf("%s: %s is an array without items", at, where))
		}
		for i, e := range arr {
			problems = append(problems, d.conform(items, where+"/items", e, fmt.Sprintf("%s[%d]", at, i))...)
		}
	case "string":
		s, ok := v.(string)
		if !ok {
			return append(problems, fmt.Sprintf("%s is %s; %s says string", at, jsonKind(v), where))
		}
		if schema["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				problems = append(problems, fmt.Sprintf("%s = %q is not a date-time, as %s says", at, s, where))
			}
		}
	case "integer":
		n, ok := v.(float64)
		if !ok || n != math.Trunc(n) {
			return append(problems, fmt.Sprintf("%s is %s %v; %s says integer", at, jsonKind(v), v, where))
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return append(problems, fmt.Sprintf("%s is %s; %s says number", at, jsonKind(v), where))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return append(problems, fmt.Sprintf("%s is %s; %s says boolean", at, jsonKind(v), where))
		}
	default:
		problems = append(problems, fmt.Sprintf("%s: %s has unknown type %q", at, where, typ))
	}
	return problems
}

// conformAny: the value must match one branch; the problems reported are those of the closest.
func (d *apiDoc) conformAny(branches []any, where string, v any, at string) []string {
	var best []string
	for i, b := range branches {
		bs, _ := b.(map[string]any)
		p := d.conform(bs, fmt.Sprintf("%s/%d", where, i), v, at)
		if len(p) == 0 {
			return nil
		}
		if best == nil || len(p) < len(best) {
			best = p
		}
	}
	return best
}

// flatten resolves $ref and merges allOf into one schema: properties and required lists add up.
func (d *apiDoc) flatten(schema map[string]any, where string) (map[string]any, string) {
	for {
		ref, _ := schema["$ref"].(string)
		if ref == "" {
			break
		}
		s, ok := d.resolve(ref)
		if !ok {
			return map[string]any{"type": "unresolvable " + ref}, where
		}
		schema, where = s, ref
	}
	all, ok := schema["allOf"].([]any)
	if !ok {
		if _, has := schema["required"]; !has {
			schema = withRequired(schema, nil)
		}
		return schema, where
	}
	merged := map[string]any{}
	props := map[string]any{}
	var required []any
	for k, v := range schema {
		if k != "allOf" {
			merged[k] = v
		}
	}
	for i, part := range all {
		ps, _ := part.(map[string]any)
		ps, _ = d.flatten(ps, fmt.Sprintf("%s/allOf/%d", where, i))
		for k, v := range ps {
			switch k {
			case "properties":
				for pk, pv := range v.(map[string]any) {
					props[pk] = pv
				}
			case "required":
				required = append(required, v.([]any)...)
			default:
				merged[k] = v
			}
		}
	}
	merged["properties"] = props
	return withRequired(merged, required), where
}

func withRequired(schema map[string]any, required []any) map[string]any {
	out := make(map[string]any, len(schema)+1)
	for k, v := range schema {
		out[k] = v
	}
	if required == nil {
		required = []any{}
	}
	out["required"] = required
	return out
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// checkAnswer is the whole check of one answer; it returns its problems, each prefixed with the
// request so a failure says where to look.
func (d *apiDoc) checkAnswer(method, urlPath string, status int, contentType string, body []byte) []string {
	tmpl := d.template(urlPath)
	if tmpl == "" {
		// No route (the mux's 404) or a path refused before routing (400 for one that is not
		// canonical): an error in the one error shape. Anything else is a path left out.
		if status < 400 {
			return []string{fmt.Sprintf("%s %s → %d: no path of the document matches", method, urlPath, status)}
		}
		schema, _ := d.resolve("#/components/schemas/Error")
		return prefix(fmt.Sprintf("%s %s → %d", method, urlPath, status), d.conformJSON(schema, "#/components/schemas/Error", body))
	}
	label := fmt.Sprintf("%s %s → %d", method, tmpl, status)
	schema, where, problem := d.responseSchema(method, tmpl, status, contentType)
	if problem != "" {
		if status == http.StatusMethodNotAllowed && strings.Contains(problem, "is not in the document") {
			// Methods a path does not serve answer 405 in the one error shape.
			schema, _ = d.resolve("#/components/schemas/Error")
			return prefix(label, d.conformJSON(schema, "#/components/schemas/Error", body))
		}
		return []string{label + ": " + problem + " at " + where}
	}
	if !strings.HasPrefix(contentType, "application/json") {
		return nil // /metrics: text
	}
	return prefix(label, d.conformJSON(schema, where, body))
}

func (d *apiDoc) conformJSON(schema map[string]any, where string, body []byte) []string {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return []string{fmt.Sprintf("body is not JSON: %v", err)}
	}
	return d.conform(schema, where, v, "$")
}

func prefix(p string, problems []string) []string {
	for i := range problems {
		problems[i] = p + ": " + problems[i]
	}
	return problems
}

// checked is a client of the fabric that checks every answer against the served document and
// remembers which (method, path, status) it saw.
type checked struct {
	f    *fabric
	doc  *apiDoc
	seen map[string]bool
}

func newChecked(t *testing.T, f *fabric) *checked {
	t.Helper()
	resp, err := http.Get(f.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &checked{f: f, doc: parseAPIDoc(t, raw), seen: map[string]bool{}}
}

// observe checks one answer already received. The problems of one answer are reported together,
// those of every element of an array once ($.environments[*].state).
func (c *checked) observe(t *testing.T, method, urlPath string, r response, contentType string) {
	t.Helper()
	tmpl := c.doc.template(urlPath)
	if tmpl == "" {
		tmpl = urlPath + " (no such path)"
	}
	c.seen[fmt.Sprintf("%s %s %d", method, tmpl, r.Status)] = true
	index := regexp.MustCompile(`\[\d+\]`)
	var problems []string
	seen := map[string]bool{}
	for _, p := range c.doc.checkAnswer(method, urlPath, r.Status, contentType, []byte(r.Raw)) {
		if p = index.ReplaceAllString(p, "[*]"); !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		t.Errorf("openapi.json does not describe the answer to %s %s:\n  %s\nbody: %s", method, urlPath,
			strings.Join(problems, "\n  "), tail(r.Raw, 800))
	}
}

// embeddedDoc is the document the control plane binary serves (it embeds the same file), for
// checking the answers of every e2e test (fabric.send calls conformsToDoc).
var embeddedDoc struct {
	once sync.Once
	doc  *apiDoc
}

// conformsToDoc checks one answer of any e2e test against openapi.json: a test that meets an
// answer the document does not describe fails, naming the field.
func conformsToDoc(t *testing.T, method, urlPath string, r response, contentType string) {
	t.Helper()
	embeddedDoc.once.Do(func() { embeddedDoc.doc = parseAPIDoc(t, api.OpenAPI()) })
	(&checked{doc: embeddedDoc.doc, seen: map[string]bool{}}).observe(t, method, urlPath, r, contentType)
}

// do sends a JSON request (or none) and checks the answer.
func (c *checked) do(t *testing.T, method, path string, body any) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, c.f.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(t, req)
}

// send sends req (with the admin token unless it has its own) and checks the answer.
func (c *checked) send(t *testing.T, req *http.Request) response {
	t.Helper()
	if req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+adminSecret)
	}
	resp, err := c.f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Raw: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.Body); err != nil {
			t.Fatalf("%s %s: status %d, body is not a JSON object: %q", req.Method, req.URL.Path, resp.StatusCode, b)
		}
	}
	c.observe(t, req.Method, req.URL.Path, r, resp.Header.Get("Content-Type"))
	return r
}

// TestOpenAPIDescribesEveryAnswer runs the whole flow — create (JSON, multipart with a
// requirements file, urlencoded), deps, add, update, remove, run (with stderr, a non-zero exit,
// output that is not UTF-8, and a timeout), export, sync, status, list with paging, operations,
// agents, cleanup (dry run and real), delete, probes — and the error answers a client meets, and
// checks every answer against the served document.
func TestOpenAPIDescribesEveryAnswer(t *testing.T) {
	t.Parallel()
	host := filepath.Join(t.TempDir(), "pyproject.toml")
	if err := os.WriteFile(host, []byte("[project]\nname = \"platform\"\ndependencies = [\"alpha>=1.0,<2\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFabric(t, options{cpEnv: []string{"HOST_PYPROJECT=" + host}})
	c := newChecked(t, f)

	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "a", "packages": []string{"alpha", "delta==0.1.0"}}), 201, "")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "bare"}), 201, "")
	form, ct := multipartBody([][2]string{{"workflow_id", "wf"}, {"node_id", "form"}, {"version_id", "v2"}},
		map[string]string{"requirements_file": "beta\n"})
	req, _ := http.NewRequest("POST", f.URL+"/envs", bytes.NewReader(form))
	req.Header.Set("Content-Type", ct)
	expect(t, c.send(t, req), 201, "")
	req, _ = http.NewRequest("POST", f.URL+"/envs", strings.NewReader("workflow_id=wf2&node_id=url&packages=delta"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	expect(t, c.send(t, req), 201, "")

	expect(t, c.do(t, "GET", "/envs/wf/a/deps", nil), 200, "")
	expect(t, c.do(t, "GET", "/envs/wf/bare/deps", nil), 200, "")
	expect(t, c.do(t, "POST", "/envs/wf/a/deps", map[string]any{"packages": []string{"gamma"}}), 200, "")
	expect(t, c.do(t, "PUT", "/envs/wf/a/deps", map[string]any{"packages": []string{"delta==0.2.0"}}), 200, "")
	expect(t, c.do(t, "PUT", "/envs/wf/a/deps", map[string]any{"packages": []string{"delta==0.2.0"}}), 200, "") // no change
	expect(t, c.do(t, "DELETE", "/envs/wf/a/deps", map[string]any{"packages": []string{"gamma"}}), 200, "")

	expect(t, c.do(t, "POST", "/envs/wf/a/run", map[string]any{
		"code": "import sys, alpha\nprint(alpha.__version__)\nprint('warn', file=sys.stderr)\nsys.exit(3)", "timeout": 30}), 200, "")
	r := c.do(t, "POST", "/envs/wf/a/run", map[string]any{
		"code": "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe ok')\nsys.stderr.buffer.write(b'\\x80')"})
	expect(t, r, 200, "")
	if r.str("stdout_encoding") != "base64" || r.str("stderr_encoding") != "base64" {
		t.Errorf("output that is not UTF-8 must come as base64: %s", r.Raw)
	}
	expect(t, c.do(t, "POST", "/envs/wf/a/run", map[string]any{
		"code": "import time\nprint('partial', flush=True)\ntime.sleep(60)", "timeout": 1}), 504, "EXECUTION_TIMEOUT")

	expect(t, c.do(t, "POST", "/envs/wf/a/deps", map[string]any{"packages": []string{"gamma"}, "dry_run": true}), 200, "")
	expect(t, c.do(t, "DELETE", "/envs/wf/a/deps", map[string]any{"packages": []string{"delta"}, "dry_run": true}), 200, "")
	expect(t, c.do(t, "PUT", "/envs/wf/a/deps", map[string]any{"packages": []string{"delta==0.1.0"}, "dry_run": true}), 200, "")
	expect(t, c.do(t, "POST", "/envs/wf/a/rollback", map[string]any{"revision": 1}), 200, "")
	expect(t, c.do(t, "POST", "/envs/wf/a/rollback", map[string]any{"revision": 99}), 400, "INVALID_REQUEST")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "copy", "from": map[string]any{"workflow_id": "wf", "node_id": "a"}}), 201, "")
	expect(t, c.do(t, "GET", "/envs/wf/a/export", nil), 200, "")
	expect(t, c.do(t, "GET", "/envs/wf/form/export?version_id=v2", nil), 200, "")
	expect(t, c.do(t, "POST", "/envs/wf/a/sync", nil), 200, "")
	expect(t, c.do(t, "POST", "/envs/wf/form/sync", map[string]any{"version_id": "v2"}), 200, "")
	expect(t, c.do(t, "GET", "/envs/wf/a", nil), 200, "")
	expect(t, c.do(t, "GET", "/envs/wf/form?version_id=v2", nil), 200, "")
	r = c.do(t, "GET", "/envs?limit=1", nil)
	expect(t, r, 200, "")
	expect(t, c.do(t, "GET", "/envs?limit=10&cursor="+r.str("next_cursor"), nil), 200, "")
	expect(t, c.do(t, "GET", "/envs?workflow_id=wf", nil), 200, "")
	expect(t, c.do(t, "GET", "/envs/wf/a/operations", nil), 200, "")
	r = c.do(t, "GET", "/envs/wf/a/operations?limit=2", nil)
	expect(t, r, 200, "")
	if next, ok := r.Body["next_before"].(float64); ok {
		expect(t, c.do(t, "GET", fmt.Sprintf("/envs/wf/a/operations?limit=2&before=%d", int64(next)), nil), 200, "")
	}
	expect(t, c.do(t, "GET", "/agents", nil), 200, "")
	expect(t, c.do(t, "GET", "/healthz", nil), 200, "")
	expect(t, c.do(t, "GET", "/readyz", nil), 200, "")
	req, _ = http.NewRequest("GET", f.URL+"/metrics", nil)
	c.send(t, req)
	for _, page := range []string{"/console", "/console/envs/wf/a", "/console/agents", "/console/cleanups"} {
		req, _ = http.NewRequest("GET", f.URL+page, nil)
		if r := c.send(t, req); r.Status != 200 {
			t.Errorf("GET %s: %d", page, r.Status)
		}
	}

	// The error answers.
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "a"}), 409, "ENV_ALREADY_EXISTS")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "../x", "node_id": "a"}), 400, "INVALID_ID")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "b", "packages": []string{"--index-url=x"}}), 400, "INVALID_PACKAGES")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "b", "packages": []string{"alpha>=9"}}), 422, "PACKAGE_RESOLUTION_FAILED")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "b", "python_version": "3.99"}), 422, "PYTHON_UNAVAILABLE")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "b", "colour": "red"}), 400, "INVALID_REQUEST")
	expect(t, c.do(t, "GET", "/envs/wf/nope", nil), 404, "ENV_NOT_FOUND")
	expect(t, c.do(t, "GET", "/envs/wf/nope/deps", nil), 404, "ENV_NOT_FOUND")
	expect(t, c.do(t, "POST", "/envs/wf/nope/run", map[string]any{"code": "print(1)"}), 404, "ENV_NOT_FOUND")
	expect(t, c.do(t, "DELETE", "/envs/wf/a/deps", map[string]any{"packages": []string{"epsilon"}}), 404, "DEPENDENCY_NOT_FOUND")
	expect(t, c.do(t, "POST", "/envs/wf/a/deps", map[string]any{"packages": []string{"alpha>=9"}}), 422, "PACKAGE_RESOLUTION_FAILED")
	expect(t, c.do(t, "GET", "/envs/wf/a?colour=red", nil), 400, "INVALID_REQUEST")
	expect(t, c.do(t, "GET", "/nowhere", nil), 404, "NOT_FOUND")
	expect(t, c.do(t, "PATCH", "/envs/wf/a", nil), 405, "METHOD_NOT_ALLOWED")
	req, _ = http.NewRequest("GET", f.URL+"/envs", nil)
	req.Header.Set("Authorization", "Bearer not-a-token")
	expect(t, c.send(t, req), 401, "UNAUTHENTICATED")
	req, _ = http.NewRequest("DELETE", f.URL+"/envs/wf/a", nil)
	req.Header.Set("Authorization", "Bearer "+readerSecret)
	expect(t, c.send(t, req), 403, "FORBIDDEN")
	req, _ = http.NewRequest("POST", f.URL+"/envs/wf/a/sync", strings.NewReader("x"))
	req.Header.Set("Content-Type", "text/plain")
	expect(t, c.send(t, req), 415, "UNSUPPORTED_MEDIA_TYPE")
	expect(t, c.do(t, "POST", "/envs/wf/a/run", map[string]any{"code": strings.Repeat("x", 4<<20)}), 413, "REQUEST_TOO_LARGE")

	// One mutation at a time: the second waits on the first's lease.
	stalled := f.Index.Stall("epsilon")
	first := make(chan response, 1)
	go func() { first <- f.do(t, "POST", "/envs/wf/a/deps", map[string]any{"packages": []string{"epsilon"}}) }()
	select {
	case <-stalled:
	case <-time.After(60 * time.Second):
		t.Fatal("the add never reached the index")
	}
	expect(t, c.do(t, "POST", "/envs/wf/a/sync", nil), 423, "ENV_LOCKED")
	f.Index.Release("epsilon")
	<-first

	// Cleanup: a dry run, then a real one of the idle environments, then delete.
	expect(t, c.do(t, "POST", "/envs/cleanup?dry_run=true", map[string]any{"idle_hours": 0}), 200, "")
	expect(t, c.do(t, "POST", "/envs/wf2/url/run", map[string]any{"code": "print(1)"}), 200, "")
	expect(t, c.do(t, "POST", "/envs/cleanup", map[string]any{"idle_hours": 0}), 200, "")
	expect(t, c.do(t, "POST", "/envs/cleanup", nil), 200, "")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "last"}), 201, "")
	expect(t, c.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "kept"}), 201, "")
	expect(t, c.do(t, "DELETE", "/envs/wf/last", nil), 200, "")
	expect(t, c.do(t, "GET", "/envs/wf/last/operations", nil), 200, "")
	expect(t, c.do(t, "DELETE", "/envs/wf/last", nil), 404, "ENV_NOT_FOUND")

	// Without its agent: the fabric says so.
	f.agent.stop(t)
	expect(t, c.do(t, "POST", "/envs/wf/kept/run", map[string]any{"code": "print(1)"}), 503, "AGENT_UNAVAILABLE")
	if r := c.do(t, "GET", "/readyz", nil); r.Status != 503 {
		t.Errorf("readyz without an agent: %d %s", r.Status, r.Raw)
	}
	c.do(t, "GET", "/agents", nil)
	c.do(t, "GET", "/envs/wf/kept", nil)

	seen := make([]string, 0, len(c.seen))
	for k := range c.seen {
		seen = append(seen, k)
	}
	sort.Strings(seen)
	t.Logf("answers checked against openapi.json:\n%s", strings.Join(seen, "\n"))
}

// TestOpenAPIResponsesTyped reads the document alone: every response schema names its type,
// every array its items, every object its properties (or says what its other fields are).
// A free-form "type: object" would let any field through undeclared.
func TestOpenAPIResponsesTyped(t *testing.T) {
	d := parseAPIDoc(t, api.OpenAPI())
	var walk func(schema map[string]any, where string, seen map[string]bool)
	walk = func(schema map[string]any, where string, seen map[string]bool) {
		if ref, _ := schema["$ref"].(string); ref != "" {
			if seen[ref] {
				return
			}
			seen[ref] = true
			s, ok := d.resolve(ref)
			if !ok {
				t.Errorf("%s: $ref %s does not resolve", where, ref)
				return
			}
			walk(s, ref, seen)
			return
		}
		for _, k := range []string{"allOf", "oneOf", "anyOf"} {
			if parts, ok := schema[k].([]any); ok {
				for i, p := range parts {
					walk(p.(map[string]any), fmt.Sprintf("%s/%s/%d", where, k, i), seen)
				}
				return
			}
		}
		switch schema["type"] {
		case "array":
			items, ok := schema["items"].(map[string]any)
			if !ok {
				t.Errorf("%s: an array without items", where)
				return
			}
			walk(items, where+"/items", seen)
		case "object":
			props, hasProps := schema["properties"].(map[string]any)
			extra, hasExtra := schema["additionalProperties"]
			if !hasProps && !hasExtra {
				t.Errorf("%s: an object with neither properties nor additionalProperties", where)
			}
			for k, p := range props {
				walk(p.(map[string]any), where+"/properties/"+k, seen)
			}
			if m, ok := extra.(map[string]any); ok {
				walk(m, where+"/additionalProperties", seen)
			}
			if req, ok := schema["required"].([]any); ok {
				for _, r := range req {
					if _, ok := props[r.(string)]; !ok {
						t.Errorf("%s: required %q is not among its properties", where, r)
					}
				}
			}
		case "string", "integer", "number", "boolean":
		case nil:
			if len(schema) > 0 {
				t.Errorf("%s: no type", where)
			}
		default:
			t.Errorf("%s: unknown type %v", where, schema["type"])
		}
	}
	for tmpl, ops := range d.root["paths"].(map[string]any) {
		for method, op := range ops.(map[string]any) {
			for status, resp := range op.(map[string]any)["responses"].(map[string]any) {
				content, _ := resp.(map[string]any)["content"].(map[string]any) // none: an answer without a body
				for mt, media := range content {
					where := fmt.Sprintf("%s %s → %s (%s)", strings.ToUpper(method), tmpl, status, mt)
					schema, ok := media.(map[string]any)["schema"].(map[string]any)
					if !ok {
						t.Errorf("%s: no schema", where)
						continue
					}
					walk(schema, where, map[string]bool{})
				}
			}
		}
	}
}

// TestConformanceCheckNamesTheField: the checker itself, on answers the document does not
// describe, says which field and which schema.
func TestConformanceCheckNamesTheField(t *testing.T) {
	d := parseAPIDoc(t, api.OpenAPI())
	tests := []struct {
		name, method, path string
		status             int
		body               string
		want               string
	}{
		{"undeclared field", "GET", "/envs/wf/n/export", 200,
			`{"workflow_id":"wf","node_id":"n","version_id":"v1","pyproject_toml":"","uv_lock":"","revision":1,"rollback_to":3}`,
			"$.rollback_to is not declared"},
		{"missing required", "GET", "/envs/wf/n/export", 200,
			`{"workflow_id":"wf","node_id":"n","version_id":"v1","pyproject_toml":"","revision":1}`,
			"$.uv_lock is missing"},
		{"wrong type", "POST", "/envs/wf/n/run", 200,
			`{"workflow_id":"wf","node_id":"n","version_id":"v1","stdout":1}`, "$.stdout is a number; "},
		{"undeclared status", "GET", "/envs/wf/n/export", 418, `{}`, "status 418 is not declared"},
		{"undeclared path", "GET", "/envs/wf/n/packages", 200, `{}`, "no path of the document matches"},
		{"nested field", "GET", "/envs/wf/n/operations", 200,
			`{"workflow_id":"wf","node_id":"n","version_id":"v1","operations":[{"id":1,"surprise":true}]}`,
			"$.operations[0].surprise is not declared"},
		{"error body field", "GET", "/envs/wf/n", 404,
			`{"error":{"code":"ENV_NOT_FOUND","message":"m","request_id":"r","hint":"x"}}`, "$.error.hint is not declared"},
		{"error code outside the enum", "GET", "/envs/wf/n", 404,
			`{"error":{"code":"NO_SUCH_CODE","message":"m","request_id":"r"}}`, "$.error.code = NO_SUCH_CODE is not in the enum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := d.checkAnswer(tt.method, tt.path, tt.status, "application/json", []byte(tt.body))
			joined := strings.Join(problems, "\n")
			if !strings.Contains(joined, tt.want) {
				t.Errorf("problems:\n%s\nwant one containing %q", joined, tt.want)
			}
		})
	}
}
