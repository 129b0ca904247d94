package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// hostile is one request an attacker or a broken client might send, and the answer it must get.
type hostile struct {
	name        string
	method      string
	path        string // escaped, with any query
	contentType string
	body        []byte
	header      map[string]string
	status      int
	code        string
}

func jsonBytes(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func multipartBody(fields [][2]string, files map[string]string) ([]byte, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, kv := range fields {
		_ = mw.WriteField(kv[0], kv[1])
	}
	names := make([]string, 0, len(files))
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fw, _ := mw.CreateFormFile(k, "requirements.txt")
		_, _ = fw.Write([]byte(files[k]))
	}
	_ = mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

// Ids that must never name an environment: traversal, separators, look-alikes, bytes that are
// not text, and lengths past the bound. Each is given escaped, as it travels in a URL.
var hostileIDs = []struct {
	name    string
	escaped string // for paths and queries
	raw     string // for bodies
	inPath  string // the code when it is a path segment ("" = INVALID_ID)
}{
	{"dot-dot", "..", "..", "INVALID_REQUEST"},
	{"dot", ".", ".", "INVALID_REQUEST"},
	{"escaped dot-dot", "%2e%2e", "..", "INVALID_REQUEST"},
	{"escaped slash", "a%2Fb", "a/b", ""},
	{"escaped backslash", "a%5Cb", `a\b`, ""},
	{"traversal in one segment", "..%2F..%2Fetc", "../../etc", "INVALID_REQUEST"},
	{"NUL", "a%00b", "a\x00b", ""},
	{"newline", "a%0Ab", "a\nb", ""},
	{"carriage return", "a%0D%0AX-Evil:1", "a\r\nX-Evil:1", ""},
	{"space", "a%20b", "a b", ""},
	{"tab", "a%09b", "a\tb", ""},
	{"leading dot", ".hidden", ".hidden", ""},
	{"leading dash", "-rf", "-rf", ""},
	{"trailing dash", "wf-", "wf-", ""},
	{"trailing dot", "wf.", "wf.", ""},
	{"leading underscore", "_wf", "_wf", ""},
	{"Cyrillic a", "w%D0%B0", "wа", ""},
	{"fullwidth letters", "%EF%BD%97%EF%BD%86", "ｗｆ", ""},
	{"zero-width space", "wf%E2%80%8B", "wf\u200b", ""},
	{"right-to-left override", "wf%E2%80%AEx", "wf\u202ex", ""},
	{"ligature", "%EF%AC%81le", "ﬁle", ""},
	{"invalid UTF-8", "wf%FF", "wf\xff", ""},
	{"tilde", "~root", "~root", ""},
	{"dollar", "%24HOME", "$HOME", ""},
	{"shell", "a%3Brm", "a;rm", ""},
	{"colon", "C%3A", "C:", ""},
	{"star", "a%2A", "a*", ""},
	{"question mark", "a%3Fb", "a?b", ""},
	{"hash", "a%23b", "a#b", ""},
	{"percent", "a%25b", "a%b", ""},
	{"too long", strings.Repeat("a", 65), strings.Repeat("a", 65), ""},
	{"far too long", strings.Repeat("a", 4000), strings.Repeat("a", 4000), ""},
}

// Package strings that must never reach uv.
var hostilePackages = []string{
	"--index-url=http://127.0.0.1:1/simple",
	"--extra-index-url http://127.0.0.1:1/simple",
	"-e .",
	"-r /etc/passwd",
	"-c constraints.txt",
	"--find-links=/tmp",
	"alpha @ http://127.0.0.1:1/alpha-1.0.0-py3-none-any.whl",
	"alpha@file:///etc/passwd",
	"git+https://127.0.0.1:1/alpha.git",
	"alpha @ git+ssh://git@127.0.0.1/alpha.git",
	"../../etc",
	"./alpha",
	"/tmp/alpha-1.0.0-py3-none-any.whl",
	`C:\alpha.whl`,
	"~/alpha",
	"alpha==${HOME}",
	"alpha\x00",
	"alpha\n--index-url=http://127.0.0.1:1/",
	"alph\u0430", // Cyrillic a
	"alpha\u200b",
	"alpha\uff1e=1",
	"alpha=1.0",
	"alpha==not-a-version",
	"alpha==99999999999999999999999",
	"alpha~=1",
	"alpha===arbitrary",
	`alpha; python_version === "3.11"`,
	"alpha>=1.0+local",
	"alpha; os.system == 'x'",
	`alpha; python_version >= "three"`,
	"alpha; ((((",
	"alpha[",
	"",
	strings.Repeat("a", 600),
}

// Requirements files that must be refused whole.
var hostileRequirements = []struct{ name, content, code string }{
	{"include", "alpha\n-r /etc/passwd\n", "INVALID_PACKAGES"},
	{"constraints", "-c other.txt\nalpha\n", "INVALID_PACKAGES"},
	{"editable", "-e .\n", "INVALID_PACKAGES"},
	{"index", "--index-url http://127.0.0.1:1/simple\nalpha\n", "INVALID_PACKAGES"},
	{"short index", "-i http://127.0.0.1:1/simple\n", "INVALID_PACKAGES"},
	{"extra index", "--extra-index-url=http://127.0.0.1:1/simple\n", "INVALID_PACKAGES"},
	{"find links", "-f /tmp\n", "INVALID_PACKAGES"},
	{"trusted host", "--trusted-host 127.0.0.1\n", "INVALID_PACKAGES"},
	{"hash option", "alpha==1.0.0 --hash=sha256:00\n", "INVALID_PACKAGES"},
	{"variable", "alpha==${VERSION}\n", "INVALID_PACKAGES"},
	{"URL", "alpha @ http://127.0.0.1:1/a.whl\n", "INVALID_PACKAGES"},
	{"path", "./alpha\n", "INVALID_PACKAGES"},
	{"NUL", "alpha\x00\n", "INVALID_PACKAGES"},
	{"continuation into an option", "alpha \\\n--index-url x\n", "INVALID_PACKAGES"},
	{"dangling continuation", "alpha \\", "INVALID_PACKAGES"},
	{"too many lines", strings.Repeat("alpha\n", 300), "INVALID_PACKAGES"},
	{"too large", strings.Repeat("#", 300<<10) + "\nalpha\n", "REQUEST_TOO_LARGE"},
}

func hostileCases() []hostile {
	var cs []hostile
	add := func(c hostile) {
		if c.method == "" {
			c.method = "POST"
		}
		if c.body != nil && c.contentType == "" {
			c.contentType = "application/json"
		}
		cs = append(cs, c)
	}
	// Ids, in every place one travels.
	for _, id := range hostileIDs {
		pathCode := "INVALID_ID"
		if id.inPath != "" {
			pathCode = id.inPath
		}
		add(hostile{name: "workflow id in path, status: " + id.name, method: "GET", path: "/envs/" + id.escaped + "/n", status: 400, code: pathCode})
		add(hostile{name: "node id in path, deps: " + id.name, method: "GET", path: "/envs/wf/" + id.escaped + "/deps", status: 400, code: pathCode})
		add(hostile{name: "node id in path, run: " + id.name, path: "/envs/wf/" + id.escaped + "/run", body: jsonBytes(map[string]any{"code": "print(1)"}), status: 400, code: pathCode})
		add(hostile{name: "version in query, delete: " + id.name, method: "DELETE", path: "/envs/wf/n?version_id=" + id.escaped, status: 400, code: "INVALID_ID"})
		add(hostile{name: "version in body, sync: " + id.name, path: "/envs/wf/n/sync", body: jsonBytes(map[string]any{"version_id": id.raw}), status: 400, code: "INVALID_ID"})
		add(hostile{name: "workflow id in create: " + id.name, path: "/envs", body: jsonBytes(map[string]any{"workflow_id": id.raw, "node_id": "n2"}), status: 400, code: "INVALID_ID"})
		add(hostile{name: "workflow filter in list: " + id.name, method: "GET", path: "/envs?workflow_id=" + id.escaped, status: 400, code: "INVALID_ID"})
	}
	// Package strings, through every way they arrive.
	for i, p := range hostilePackages {
		name := fmt.Sprintf("package %d %q", i, tail(p, 40))
		add(hostile{name: "add " + name, path: "/envs/wf/n/deps", body: jsonBytes(map[string]any{"packages": []string{p}}), status: 400, code: "INVALID_PACKAGES"})
		add(hostile{name: "update " + name, method: "PUT", path: "/envs/wf/n/deps", body: jsonBytes(map[string]any{"packages": []string{"alpha", p}}), status: 400, code: "INVALID_PACKAGES"})
		add(hostile{name: "create JSON " + name, path: "/envs", body: jsonBytes(map[string]any{"workflow_id": "wf", "node_id": "fresh", "packages": []string{p}}), status: 400, code: "INVALID_PACKAGES"})
		b, ct := multipartBody([][2]string{{"workflow_id", "wf"}, {"node_id", "fresh"}, {"packages", p}}, nil)
		if p == "" {
			continue // an empty form field is no package at all, and the create would succeed
		}
		add(hostile{name: "create form " + name, path: "/envs", body: b, contentType: ct, status: 400, code: "INVALID_PACKAGES"})
	}
	add(hostile{name: "remove with a specifier", method: "DELETE", path: "/envs/wf/n/deps", body: jsonBytes(map[string]any{"packages": []string{"alpha>=1"}}), status: 400, code: "INVALID_PACKAGES"})
	many := make([]string, 5000)
	for i := range many {
		many[i] = fmt.Sprintf("pkg%d", i)
	}
	add(hostile{name: "5000 packages", path: "/envs/wf/n/deps", body: jsonBytes(map[string]any{"packages": many}), status: 400, code: "INVALID_PACKAGES"})
	add(hostile{name: "packages as a number", path: "/envs/wf/n/deps", body: []byte(`{"packages": 7}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "packages as objects", path: "/envs/wf/n/deps", body: []byte(`{"packages": [{"name": "alpha"}]}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "packages as a broken JSON string", path: "/envs/wf/n/deps", body: []byte(`{"packages": "[\"alpha\""}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "packages as a JSON array in a string", path: "/envs/wf/n/deps", body: []byte(`{"packages": "[\"alpha\"]"}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "packages as one name", path: "/envs/wf/n/deps", body: []byte(`{"packages": "alpha"}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "two packages in one item", path: "/envs/wf/n/deps", body: []byte(`{"packages": ["alpha,beta"]}`), status: 400, code: "INVALID_PACKAGES"})
	add(hostile{name: "no packages", path: "/envs/wf/n/deps", body: []byte(`{"packages": []}`), status: 400, code: "INVALID_PACKAGES"})
	manyFields := [][2]string{{"workflow_id", "wf"}, {"node_id", "fresh"}}
	for i := 0; i < 300; i++ {
		manyFields = append(manyFields, [2]string{"packages", fmt.Sprintf("pkg%d", i)})
	}
	b, ct := multipartBody(manyFields, nil)
	add(hostile{name: "300 package fields", path: "/envs", body: b, contentType: ct, status: 400, code: "INVALID_PACKAGES"})
	// Requirements files, uploaded and in JSON.
	for _, rq := range hostileRequirements {
		status := 400
		if rq.code == "REQUEST_TOO_LARGE" {
			status = 413
		}
		b, ct := multipartBody([][2]string{{"workflow_id", "wf"}, {"node_id", "fresh"}}, map[string]string{"requirements_file": rq.content})
		add(hostile{name: "requirements file: " + rq.name, path: "/envs", body: b, contentType: ct, status: status, code: rq.code})
		add(hostile{name: "requirements in JSON: " + rq.name, path: "/envs", body: jsonBytes(map[string]any{"workflow_id": "wf", "node_id": "fresh", "requirements": rq.content}), status: status, code: rq.code})
	}
	// Form data that is not what POST /envs reads.
	b, ct = multipartBody([][2]string{{"workflow_id", "wf"}, {"node_id", "fresh"}, {"index_url", "http://127.0.0.1:1/"}}, nil)
	add(hostile{name: "unknown form field", path: "/envs", body: b, contentType: ct, status: 400, code: "INVALID_REQUEST"})
	b, ct = multipartBody([][2]string{{"workflow_id", "wf"}, {"workflow_id", "other"}, {"node_id", "fresh"}}, nil)
	add(hostile{name: "repeated form field", path: "/envs", body: b, contentType: ct, status: 400, code: "INVALID_REQUEST"})
	b, ct = multipartBody([][2]string{{"workflow_id", "wf"}, {"node_id", "fresh"}}, map[string]string{"payload": "x"})
	add(hostile{name: "unknown upload", path: "/envs", body: b, contentType: ct, status: 400, code: "INVALID_REQUEST"})
	b, ct = multipartBody([][2]string{{"workflow_id", "wf"}, {"node_id", "fresh"}}, map[string]string{"requirements_file": strings.Repeat("a", 9<<20)})
	add(hostile{name: "upload over the body limit", path: "/envs", body: b, contentType: ct, status: 413, code: "REQUEST_TOO_LARGE"})
	add(hostile{name: "multipart without a boundary", path: "/envs", body: []byte("--x\r\n"), contentType: "multipart/form-data", status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "truncated multipart", path: "/envs", body: []byte("--XYZ\r\nContent-Disposition: form-data; name=\"workflow_id\"\r\n\r\nwf"), contentType: "multipart/form-data; boundary=XYZ", status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "urlencoded with a bad escape", path: "/envs", body: []byte("workflow_id=%zz&node_id=n"), contentType: "application/x-www-form-urlencoded", status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "urlencoded, ids missing", path: "/envs", body: []byte("python_version=3.11"), contentType: "application/x-www-form-urlencoded", status: 400, code: "INVALID_REQUEST"})
	// Builds: rollback and from.
	add(hostile{name: "rollback without a revision", path: "/envs/wf/n/rollback", body: []byte(`{}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "rollback to revision 0", path: "/envs/wf/n/rollback", body: []byte(`{"revision": 0}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "rollback to a string", path: "/envs/wf/n/rollback", body: []byte(`{"revision": "1"}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "from with a bad id", path: "/envs", body: []byte(`{"workflow_id": "wf", "node_id": "x", "from": {"workflow_id": "..", "node_id": "n"}}`), status: 400, code: "INVALID_ID"})
	add(hostile{name: "from with packages", path: "/envs", body: []byte(`{"workflow_id": "wf", "node_id": "x", "packages": ["alpha"], "from": {"workflow_id": "wf", "node_id": "n"}}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "from with an unknown field", path: "/envs", body: []byte(`{"workflow_id": "wf", "node_id": "x", "from": {"workflow_id": "wf", "node_id": "n", "path": "/etc"}}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "dry_run not a boolean", path: "/envs/wf/n/deps", body: []byte(`{"packages": ["alpha"], "dry_run": "yes"}`), status: 400, code: "INVALID_REQUEST"})
	// Bodies: media types, JSON shape, sizes.
	for _, ep := range []struct{ method, path string }{{"POST", "/envs"}, {"POST", "/envs/wf/n/deps"}, {"PUT", "/envs/wf/n/deps"}, {"DELETE", "/envs/wf/n/deps"}, {"POST", "/envs/wf/n/run"}, {"POST", "/envs/wf/n/sync"}, {"POST", "/envs/wf/n/rollback"}, {"POST", "/envs/cleanup"}} {
		on := ep.method + " " + ep.path
		add(hostile{name: "text/plain to " + on, method: ep.method, path: ep.path, body: []byte(`{}`), contentType: "text/plain", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"})
		add(hostile{name: "XML to " + on, method: ep.method, path: ep.path, body: []byte(`<a/>`), contentType: "application/xml", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"})
		add(hostile{name: "unparsable media type to " + on, method: ep.method, path: ep.path, body: []byte(`{}`), contentType: "application/json; =", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"})
		add(hostile{name: "malformed JSON to " + on, method: ep.method, path: ep.path, body: []byte(`{"packages": [`), status: 400, code: "INVALID_REQUEST"})
		add(hostile{name: "two JSON values to " + on, method: ep.method, path: ep.path, body: []byte(`{} {}`), status: 400, code: "INVALID_REQUEST"})
		add(hostile{name: "a JSON array to " + on, method: ep.method, path: ep.path, body: []byte(`[]`), status: 400, code: "INVALID_REQUEST"})
		add(hostile{name: "an unknown field to " + on, method: ep.method, path: ep.path, body: []byte(`{"index_url": "http://127.0.0.1:1/"}`), status: 400, code: "INVALID_REQUEST"})
		add(hostile{name: "invalid UTF-8 to " + on, method: ep.method, path: ep.path, body: []byte("{\"version_id\": \"v\xff\"}"), status: 400, code: "INVALID_REQUEST"})
		add(hostile{name: "deep nesting to " + on, method: ep.method, path: ep.path, body: []byte(strings.Repeat("[", 20000)), status: 400, code: "INVALID_REQUEST"})
		add(hostile{name: "body over the limit to " + on, method: ep.method, path: ep.path, body: bytes.Repeat([]byte(" "), 9<<20), status: 413, code: "REQUEST_TOO_LARGE"})
	}
	for _, ep := range []struct{ method, path string }{{"GET", "/envs"}, {"GET", "/envs/wf/n"}, {"DELETE", "/envs/wf/n"}, {"GET", "/envs/wf/n/deps"}, {"GET", "/envs/wf/n/export"}, {"GET", "/envs/wf/n/operations"}, {"GET", "/agents"}} {
		on := ep.method + " " + ep.path
		add(hostile{name: "a body to " + on, method: ep.method, path: ep.path, body: []byte(`{"version_id": "v1"}`), status: 400, code: "INVALID_REQUEST"})
		add(hostile{name: "an unknown query parameter to " + on, method: ep.method, path: ep.path + "?debug=1", status: 400, code: "INVALID_REQUEST"})
	}
	// Queries.
	for _, q := range []string{"limit=0", "limit=501", "limit=-1", "limit=abc", "limit=1e3", "limit=99999999999999999999", "cursor=not-base64!", "cursor=e30", "cursor=WyIuLiIsIi4uIiwiLi4iXQ", "limit=1&limit=2", "workflow_id=a&workflow_id=b", "%zz=1", "cursor=" + strings.Repeat("A", 4000)} {
		add(hostile{name: "list ?" + tail(q, 40), method: "GET", path: "/envs?" + q, status: 400, code: "INVALID_REQUEST"})
	}
	for _, q := range []string{"before=0", "before=-5", "before=x", "limit=0", "version_id=v1&version_id=v2", "before=99999999999999999999"} {
		add(hostile{name: "operations ?" + q, method: "GET", path: "/envs/wf/n/operations?" + q, status: 400, code: "INVALID_REQUEST"})
	}
	add(hostile{name: "version in query and body disagree", path: "/envs/wf/n/sync?version_id=v1", body: []byte(`{"version_id": "v2"}`), status: 400, code: "INVALID_REQUEST"})
	// Run and cleanup numbers.
	for _, tc := range []struct{ name, body, code string }{
		{"timeout zero", `{"code": "print(1)", "timeout": 0}`, "INVALID_REQUEST"},
		{"timeout negative", `{"code": "print(1)", "timeout": -1}`, "INVALID_REQUEST"},
		{"timeout over the maximum", `{"code": "print(1)", "timeout": 100000}`, "INVALID_REQUEST"},
		{"timeout that overflows a duration", `{"code": "print(1)", "timeout": 1e300}`, "INVALID_REQUEST"},
		{"timeout as a string", `{"code": "print(1)", "timeout": "30"}`, "INVALID_REQUEST"},
		{"timeout as null", `{"code": "", "timeout": null}`, "INVALID_REQUEST"},
		{"no code", `{}`, "INVALID_REQUEST"},
		{"blank code", `{"code": "   \n"}`, "INVALID_REQUEST"},
		{"code as a list", `{"code": ["print(1)"]}`, "INVALID_REQUEST"},
	} {
		add(hostile{name: "run: " + tc.name, path: "/envs/wf/n/run", body: []byte(tc.body), status: 400, code: tc.code})
	}
	add(hostile{name: "run: code over the limit", path: "/envs/wf/n/run", body: jsonBytes(map[string]any{"code": strings.Repeat("#", 2<<20)}), status: 413, code: "REQUEST_TOO_LARGE"})
	for _, tc := range []struct{ name, path, body string }{
		{"negative idle hours", "/envs/cleanup", `{"idle_hours": -1}`},
		{"idle hours that overflow a duration", "/envs/cleanup", `{"idle_hours": 1e300}`},
		{"idle hours as a string", "/envs/cleanup", `{"idle_hours": "0"}`},
		{"dry run as a string", "/envs/cleanup", `{"dry_run": "yes"}`},
		{"dry run query not a boolean", "/envs/cleanup?dry_run=maybe", `{"dry_run": true}`},
	} {
		add(hostile{name: "cleanup: " + tc.name, path: tc.path, body: []byte(tc.body), status: 400, code: "INVALID_REQUEST"})
	}
	add(hostile{name: "create: bad python version", path: "/envs", body: []byte(`{"workflow_id": "wf", "node_id": "fresh", "python_version": "3.11; rm -rf /"}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "create: python as a path", path: "/envs", body: []byte(`{"workflow_id": "wf", "node_id": "fresh", "python_version": "/usr/bin/python3"}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "create: no node", path: "/envs", body: []byte(`{"workflow_id": "wf"}`), status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "create: empty body", path: "/envs", status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "create: ids as numbers", path: "/envs", body: []byte(`{"workflow_id": 1, "node_id": 2}`), status: 400, code: "INVALID_REQUEST"})
	// Paths and methods.
	for _, p := range []string{"//envs", "/envs/./wf/n", "/envs/wf/n/../n/deps", "/envs/wf//deps", "/./envs"} {
		add(hostile{name: "path not canonical: " + p, method: "GET", path: p, status: 400, code: "INVALID_REQUEST"})
	}
	for _, p := range []string{"/envs/wf/n/deps/extra", "/envs/wf", "/env", "/ENVS", "/envs/wf/n/.venv/bin/python", "/metrics/x", "/%2e%2e"} {
		code := "NOT_FOUND"
		status := 404
		if p == "/%2e%2e" {
			code, status = "INVALID_REQUEST", 400
		}
		add(hostile{name: "no route: " + p, method: "GET", path: p, status: status, code: code})
	}
	for _, m := range []struct{ method, path string }{{"PATCH", "/envs/wf/n/deps"}, {"PUT", "/envs"}, {"DELETE", "/envs"}, {"GET", "/envs/wf/n/run"}, {"GET", "/envs/cleanup"}, {"POST", "/healthz"}, {"TRACE", "/envs"}, {"PROPFIND", "/envs/wf/n"}} {
		add(hostile{name: "method " + m.method + " " + m.path, method: m.method, path: m.path, status: 405, code: "METHOD_NOT_ALLOWED"})
	}
	// Headers that try to speak for someone else or to break the log.
	add(hostile{name: "X-Actor cannot pose as another caller", method: "GET", path: "/envs/wf/n/deps?version_id=..", header: map[string]string{"X-Actor": "root"}, status: 400, code: "INVALID_ID"})
	add(hostile{name: "X-Request-ID with markup and traversal", method: "GET", path: "/envs/..", header: map[string]string{"X-Request-ID": "<script>alert(1)</script> ../../x"}, status: 400, code: "INVALID_REQUEST"})
	add(hostile{name: "X-Request-ID far too long", method: "GET", path: "/envs/..", header: map[string]string{"X-Request-ID": strings.Repeat("r", 5000)}, status: 400, code: "INVALID_REQUEST"})
	return cs
}

// treeSnapshot is every file under root with its type, mode and content hash.
func treeSnapshot(t *testing.T, roots ...string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			entry := info.Mode().String()
			switch {
			case info.Mode().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				sum := sha256.Sum256(b)
				entry += " " + hex.EncodeToString(sum[:])
			case info.Mode()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(p)
				entry += " -> " + target
			}
			snap[p] = entry
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return snap
}

func diffSnapshots(before, after map[string]string) []string {
	var diffs []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			diffs = append(diffs, "removed "+p)
		} else if a != b {
			diffs = append(diffs, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, "added "+p)
		}
	}
	sort.Strings(diffs)
	return diffs
}

// TestHostileInput sends every hostile request to the real control plane. Each must get its
// documented 4xx with the error body, quickly; afterwards nothing on disk has changed (the
// environments, their files, the uv cache, the control plane's temporary directory), and the
// service is ready and still serves the environment the requests were aimed at.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	f := newFabric(t, options{cpEnv: []string{"TMPDIR=" + tmp, "REQUEST_BODY_TIMEOUT=3s"}})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	spec := loadOpenAPI(t, f)

	cases := hostileCases()
	if len(cases) < 200 {
		t.Fatalf("only %d hostile cases; the suite promises at least 200", len(cases))
	}
	t.Logf("%d hostile cases", len(cases))
	before := treeSnapshot(t, f.Envs, f.Cache, tmp)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var body *bytes.Reader
			if c.body != nil {
				body = bytes.NewReader(c.body)
			} else {
				body = bytes.NewReader(nil)
			}
			req, err := http.NewRequestWithContext(ctx, c.method, f.URL+c.path, body)
			if err != nil {
				t.Fatalf("building the request: %v", err)
			}
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			for k, v := range c.header {
				req.Header[k] = []string{v}
			}
			r := f.send(t, req)
			if r.Status == -1 {
				t.Fatalf("no answer within 60s")
			}
			expect(t, r, c.status, c.code)
			e, _ := r.Body["error"].(map[string]any)
			if msg, _ := e["message"].(string); msg == "" {
				t.Errorf("error without a message: %s", r.Raw)
			}
			if rid, _ := e["request_id"].(string); !validRequestID(rid) {
				t.Errorf("request_id %q is not one the server made or accepted", rid)
			}
			spec.checkStatus(t, c.method, c.path, r.Status)
		})
	}
	t.Run("a body that never arrives", func(t *testing.T) {
		// Headers promise 1000 bytes; 10 come. The answer is 408 once REQUEST_BODY_TIMEOUT (3s
		// here) has passed, not a connection held for ever.
		conn, err := net.Dial("tcp", strings.TrimPrefix(f.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintf(conn, "POST /envs/wf/n/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"code\": \"", adminSecret)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to a stalled body: %v", err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		e, _ := body["error"].(map[string]any)
		if resp.StatusCode != http.StatusRequestTimeout || e["code"] != "REQUEST_TIMEOUT" {
			t.Errorf("got %d %v; want 408 REQUEST_TIMEOUT", resp.StatusCode, body)
		}
		spec.checkStatus(t, "POST", "/envs/wf/n/run", resp.StatusCode)
	})
	if diffs := diffSnapshots(before, treeSnapshot(t, f.Envs, f.Cache, tmp)); len(diffs) > 0 {
		t.Errorf("hostile requests changed the disk:\n%s", strings.Join(diffs[:min(len(diffs), 40)], "\n"))
	}
	r := f.do(t, "GET", "/readyz", nil)
	expect(t, r, 200, "")
	r = f.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": "import alpha; print(alpha.__version__)"})
	if r.str("stdout") != "1.0.0\n" {
		t.Errorf("after the hostile requests the environment no longer runs: %s", r.Raw)
	}
	r = f.do(t, "GET", "/envs?limit=500", nil)
	if list, _ := r.Body["environments"].([]any); len(list) != 1 {
		t.Errorf("hostile requests created or removed environments: %s", tail(r.Raw, 2000))
	}
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-:@", c)) {
			return false
		}
	}
	return true
}

// openAPISpec is the document the control plane serves, enough of it to look up what statuses an
// operation documents.
type openAPISpec struct {
	paths map[string]map[string]struct {
		Responses map[string]json.RawMessage `json:"responses"`
	}
}

func loadOpenAPI(t *testing.T, f *fabric) openAPISpec {
	t.Helper()
	resp, err := http.Get(f.URL + "/openapi.json") // open without a token
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("/openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("/openapi.json is OpenAPI %q; want 3.x", doc.OpenAPI)
	}
	return openAPISpec{paths: doc.Paths}
}

// checkStatus fails the test when the route the path names documents no such status for the
// method. Requests that no route or method matches (404 NOT_FOUND, 405) and paths the server
// refuses before routing are outside the document and not checked.
func (s openAPISpec) checkStatus(t *testing.T, method, rawPath string, status int) {
	t.Helper()
	u, err := url.Parse(rawPath)
	if err != nil {
		return
	}
	segs := strings.Split(u.EscapedPath(), "/")
	for tmpl, ops := range s.paths {
		tsegs := strings.Split(tmpl, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		match := true
		for i := range tsegs {
			if !strings.HasPrefix(tsegs[i], "{") && tsegs[i] != segs[i] {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		op, ok := ops[strings.ToLower(method)]
		if !ok {
			return // a 405: no operation to check against
		}
		if _, ok := op.Responses[fmt.Sprint(status)]; !ok {
			t.Errorf("%s %s answered %d, which openapi.json does not document for %s %s", method, rawPath, status, method, tmpl)
		}
		return
	}
}
