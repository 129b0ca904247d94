package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envfabric/envfabric/controlplane/api/auth"
	"github.com/envfabric/envfabric/shared/errcode"
)

type openAPIDoc struct {
	Paths      map[string]map[string]openAPIOp `json:"paths"`
	Components struct {
		Parameters map[string]openAPIParam `json:"parameters"`
		Schemas    map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

type openAPIOp struct {
	Parameters  []openAPIParam             `json:"parameters"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Security    *[]map[string][]string     `json:"security"`
	RequestBody *struct {
		Content map[string]json.RawMessage `json:"content"`
	} `json:"requestBody"`
}

type openAPIParam struct {
	Ref  string `json:"$ref"`
	Name string `json:"name"`
	In   string `json:"in"`
}

func loadDoc(t *testing.T) openAPIDoc {
	t.Helper()
	var d openAPIDoc
	if err := json.Unmarshal(OpenAPI(), &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return d
}

func newTestHandler(t *testing.T, tokens ...auth.Token) *Handler {
	t.Helper()
	set, err := auth.NewSet(tokens)
	if err != nil {
		t.Fatal(err)
	}
	return New(nil, Options{Tokens: set, Registry: prometheus.NewRegistry(), MaxBodyBytes: 1 << 20, BodyTimeout: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// TestOpenAPIMatchesRoutes keeps the document true: every registered route and method is in it
// and nothing else is, with the query parameters the handler accepts, the security the handler
// applies, and the statuses its checks can answer with.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadDoc(t)
	h := newTestHandler(t)
	registered := map[string]bool{}
	for _, rt := range h.routes {
		for method, ep := range rt.methods {
			key := method + " " + rt.pattern
			registered[key] = true
			t.Run(key, func(t *testing.T) {
				op, ok := doc.Paths[rt.pattern][strings.ToLower(method)]
				if !ok {
					t.Fatalf("%s is served but not in openapi.json", key)
				}
				var query []string
				for _, p := range op.Parameters {
					if p.Ref != "" {
						p = doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
					}
					if p.In == "query" {
						query = append(query, p.Name)
					}
					if p.In == "path" && !strings.Contains(rt.pattern, "{"+p.Name+"}") {
						t.Errorf("path parameter %q is not in the pattern", p.Name)
					}
				}
				want := slices.Clone(ep.query)
				sort.Strings(query)
				sort.Strings(want)
				if !slices.Equal(query, want) {
					t.Errorf("query parameters: document %q; handler %q", query, want)
				}
				open := op.Security != nil && len(*op.Security) == 0
				if open != (ep.role == auth.None) {
					t.Errorf("document says open=%v; handler needs role %s", open, ep.role)
				}
				has := func(code string) bool { _, ok := op.Responses[code]; return ok }
				if ep.role != auth.None && (!has("401") || !has("403")) {
					t.Errorf("a route behind a token must document 401 and 403")
				}
				if (ep.body != noBody) != (op.RequestBody != nil) {
					t.Errorf("request body: document %v; handler %v", op.RequestBody != nil, ep.body != noBody)
				}
				if ep.body != noBody && (!has("408") || !has("413") || !has("415")) {
					t.Errorf("a route with a body must document 408, 413 and 415")
				}
				if !has("400") {
					t.Errorf("every route refuses unknown query parameters and unexpected bodies: document 400")
				}
				if op.RequestBody != nil {
					var types []string
					for ct := range op.RequestBody.Content {
						types = append(types, ct)
					}
					sort.Strings(types)
					wantTypes := []string{"application/json"}
					if ep.body == formBody {
						wantTypes = []string{"application/json", "application/x-www-form-urlencoded", "multipart/form-data"}
					}
					if !slices.Equal(types, wantTypes) {
						t.Errorf("body media types: document %q; handler %q", types, wantTypes)
					}
				}
			})
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if key := strings.ToUpper(method) + " " + path; !registered[key] {
				t.Errorf("openapi.json documents %s, which is not served", key)
			}
		}
	}
}

// TestOpenAPIErrorCodes: the document's list of error codes is errcode's, exactly.
func TestOpenAPIErrorCodes(t *testing.T) {
	var d struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Error struct {
							Properties struct {
								Code struct {
									Enum []string `json:"enum"`
								} `json:"code"`
							} `json:"properties"`
						} `json:"error"`
					} `json:"properties"`
				} `json:"Error"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPI(), &d); err != nil {
		t.Fatal(err)
	}
	got := d.Components.Schemas.Error.Properties.Error.Properties.Code.Enum
	var want []string
	for _, c := range errcode.All() {
		want = append(want, string(c))
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("error codes in openapi.json %q; errcode has %q", got, want)
	}
}

func TestAuth(t *testing.T) {
	h := newTestHandler(t,
		auth.Token{Name: "reader", Role: auth.Read, Secret: "read-secret-0123456789"},
		auth.Token{Name: "writer", Role: auth.Write, Secret: "write-secret-0123456789"},
		auth.Token{Name: "boss", Role: auth.Admin, Secret: "admin-secret-0123456789"},
	)
	tests := []struct {
		name, method, path, header string
		status                     int
		code                       string
	}{
		{"no token", "GET", "/agents", "", 401, "UNAUTHENTICATED"},
		{"wrong token", "GET", "/agents", "Bearer read-secret-012345678", 401, "UNAUTHENTICATED"},
		{"token with a prefix of a secret", "GET", "/agents", "Bearer read-secret-01234567890", 401, "UNAUTHENTICATED"},
		{"other scheme", "GET", "/agents", "Basic read-secret-0123456789", 401, "UNAUTHENTICATED"},
		{"scheme only", "GET", "/agents", "Bearer", 401, "UNAUTHENTICATED"},
		{"scheme is case-insensitive", "GET", "/agents", "bearer read-secret-0123456789", 200, ""},
		{"reader reads", "GET", "/agents", "Bearer read-secret-0123456789", 200, ""},
		{"reader reads metrics", "GET", "/metrics", "Bearer read-secret-0123456789", 200, ""},
		{"metrics need a token", "GET", "/metrics", "", 401, "UNAUTHENTICATED"},
		{"reader may not create", "POST", "/envs", "Bearer read-secret-0123456789", 403, "FORBIDDEN"},
		{"reader may not run", "POST", "/envs/wf/n/run", "Bearer read-secret-0123456789", 403, "FORBIDDEN"},
		{"reader may not delete", "DELETE", "/envs/wf/n", "Bearer read-secret-0123456789", 403, "FORBIDDEN"},
		{"writer may not clean up", "POST", "/envs/cleanup", "Bearer write-secret-0123456789", 403, "FORBIDDEN"},
		{"no token, unknown route", "GET", "/nothing", "", 401, "UNAUTHENTICATED"},
		{"token, unknown route", "GET", "/nothing", "Bearer read-secret-0123456789", 404, "NOT_FOUND"},
		{"healthz is open", "GET", "/healthz", "", 200, ""},
		{"readyz is open", "GET", "/readyz", "", 200, ""},
		{"readyz ignores a stale token", "GET", "/readyz", "Bearer stale", 200, ""},
		{"openapi is open", "GET", "/openapi.json", "", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != tt.status || body.Error.Code != tt.code {
				t.Fatalf("got %d %q; want %d %q (%s)", rec.Code, body.Error.Code, tt.status, tt.code, rec.Body)
			}
			if rec.Code == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
		})
	}
}

func TestValidHeaderToken(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"abc-123", true},
		{"user@example.invalid", true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"a b", false},
		{"a\x00b", false},
		{"ä", false},
		{"a\r\nX-Evil: 1", false},
	}
	for _, tt := range tests {
		if got := validHeaderToken(tt.in); got != tt.ok {
			t.Errorf("validHeaderToken(%q) = %v; want %v", tt.in, got, tt.ok)
		}
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add("")
	f.Add("WyJhIiwiYiIsInYxIl0")
	f.Add("WyIuLiIsIi4uIiwiLi4iXQ")
	f.Fuzz(func(t *testing.T, c string) {
		k, err := decodeCursor(c)
		if err == nil && k.Validate() != nil {
			t.Fatalf("decodeCursor(%q) = %v, an invalid key", c, k)
		}
		if err != nil {
			return
		}
		if again, err := decodeCursor(encodeCursor(k)); err != nil || again != k {
			t.Fatalf("cursor for %v does not round-trip: %v %v", k, again, err)
		}
	})
}

// FuzzDecodeMutation feeds arbitrary bytes to the decoder of the dependency endpoints' body: it
// either refuses them with a coded error or yields a version and a list of strings.
func FuzzDecodeMutation(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"packages": ["alpha"]}`, `{"packages": "[\"alpha\", \"beta\"]"}`,
		`{"packages": 7}`, `{"version_id": "v2", "packages": []}`, `{} {}`, `[`, `{"packages": ["a"], "x": 1}`, "{\"version_id\": \"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var body struct {
			versioned
			Packages packageList `json:"packages"`
		}
		r := httptest.NewRequest("POST", "/envs/wf/n/deps", bytes.NewReader(b))
		err := decodeJSON(r, &body)
		if err != nil {
			if errcode.Of(err) == errcode.Internal {
				t.Fatalf("decodeJSON(%q) = %v, an uncoded error (a 500)", b, err)
			}
			return
		}
		if len(bytes.TrimSpace(b)) > 0 && !json.Valid(b) {
			t.Fatalf("decodeJSON accepted invalid JSON %q", b)
		}
	})
}
