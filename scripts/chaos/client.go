package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/envfabric/envfabric/scripts/chaos/check"
	"github.com/envfabric/envfabric/shared/testutil/pyindex"
)

// The package universe: names cz00… with three versions each, no dependencies between them, so
// an environment's dependency set is exactly what its mutations pinned and every pin is
// distinguishable. The names cannot be mistaken for an environment's project name
// (<workflow>-<node>-<version>, here chaos-nK-v1).
const (
	universeSize = 16
	workflowID   = "chaos"
)

var versions = []string{"1.0.0", "1.1.0", "2.0.0"}

func pkgName(i int) string { return fmt.Sprintf("cz%02d", i) }

func universe() []pyindex.Package {
	var out []pyindex.Package
	for i := range universeSize {
		for _, v := range versions {
			out = append(out, pyindex.Package{Name: pkgName(i), Version: v})
		}
	}
	return out
}

func universeNames() map[string]bool {
	out := map[string]bool{}
	for i := range universeSize {
		out[pkgName(i)] = true
	}
	return out
}

// runCode prints the installed distributions as JSON: the checker compares them with the
// revision the run answered.
const runCode = `import importlib.metadata as m, json
print(json.dumps({d.metadata["Name"]: d.version for d in m.distributions()}, sort_keys=True))`

// apiClient calls the REST API as the harness's admin token.
type apiClient struct {
	http   *http.Client
	secret string
}

func newAPIClient(secret string, timeout time.Duration) *apiClient {
	return &apiClient{secret: secret, http: &http.Client{Timeout: timeout, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
	}}}
}

// do sends one request; body (when not nil) is JSON. It returns the status and the body, or the
// transport error (then status is 0).
func (c *apiClient) do(ctx context.Context, method, url, requestID string, body any) (int, string, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, "", err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	if requestID != "" {
		req.Header.Set("X-Request-ID", requestID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		// The status arrived but the body did not: as good as no answer.
		return 0, "", fmt.Errorf("reading the answer (status %d): %w", resp.StatusCode, err)
	}
	return resp.StatusCode, string(raw), nil
}

// getJSON is a GET decoded into out when it answers 200.
func (c *apiClient) getJSON(ctx context.Context, url string, out any) (int, string, error) {
	status, body, err := c.do(ctx, http.MethodGet, url, "", nil)
	if err != nil || status != http.StatusOK || out == nil {
		return status, body, err
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		return status, body, fmt.Errorf("decoding %s: %w", url, err)
	}
	return status, body, nil
}

// membership says what is missing for base to be whole ("" when it is ready and sees n agents).
func (c *apiClient) membership(ctx context.Context, base string, n int) string {
	if status, body, err := c.do(ctx, http.MethodGet, base+"/readyz", "", nil); err != nil || status != 200 {
		return fmt.Sprintf("readyz: %d %v %s", status, err, strings.TrimSpace(body))
	}
	var v struct {
		Agents []struct {
			ID    string `json:"agent_id"`
			State string `json:"state"`
		} `json:"agents"`
	}
	if status, body, err := c.getJSON(ctx, base+"/agents", &v); err != nil || status != 200 {
		return fmt.Sprintf("agents: %d %v %s", status, err, body)
	}
	alive := 0
	for _, a := range v.Agents {
		if a.State == "alive" {
			alive++
		}
	}
	if alive != n {
		return fmt.Sprintf("%d of %d agents alive", alive, n)
	}
	return ""
}

// history is every request the clients sent and its answer, in the order they ended.
type history struct {
	mu  sync.Mutex
	ops []check.Op
}

func (h *history) add(op check.Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Index = len(h.ops)
	h.ops = append(h.ops, op)
}

func (h *history) all() []check.Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]check.Op(nil), h.ops...)
}

// client is one workload: it picks an environment, an operation and a control plane at random,
// sends it, records the answer and goes on. It never retries: a refused or failed operation is
// history like any other.
type client struct {
	id       int
	rng      *rand.Rand
	api      *apiClient
	cps      []*member
	envs     []string // node ids
	hist     *history
	seq      int
	lastDeps map[string][]string // node → dependencies last answered, to aim removes and updates
	lastRev  map[string]int64    // node → revision last answered, to aim rollbacks
}

// weights of each kind, out of their sum.
var weights = []struct {
	kind   string
	weight int
}{
	{check.KindAdd, 30}, {check.KindRemove, 12}, {check.KindUpdate, 12}, {check.KindSync, 8},
	{check.KindRun, 12}, {check.KindDeps, 10}, {check.KindCreate, 8}, {check.KindDelete, 4}, {check.KindRollback, 6},
}

func (c *client) pickKind() string {
	total := 0
	for _, w := range weights {
		total += w.weight
	}
	n := c.rng.IntN(total)
	for _, w := range weights {
		if n < w.weight {
			return w.kind
		}
		n -= w.weight
	}
	return check.KindAdd
}

func (c *client) pin() string {
	return pkgName(c.rng.IntN(universeSize)) + "==" + versions[c.rng.IntN(len(versions))]
}

// known is a dependency name this client last saw in node's environment, or any name.
func (c *client) known(node string) string {
	if deps := c.lastDeps[node]; len(deps) > 0 {
		name, _, _ := strings.Cut(deps[c.rng.IntN(len(deps))], "==")
		return strings.TrimSpace(name)
	}
	return pkgName(c.rng.IntN(universeSize))
}

// loop sends requests until stop ends. A request under way then is let finish (each is bounded
// by the client's timeout) so its answer is recorded, and so the harness never turns a client
// disconnect into a fault by accident; only ctx (the harness interrupted) cuts it short.
func (c *client) loop(ctx, stop context.Context) {
	for stop.Err() == nil && ctx.Err() == nil {
		c.one(ctx)
	}
}

func (c *client) one(ctx context.Context) {
	node := c.envs[c.rng.IntN(len(c.envs))]
	cp := c.cps[c.rng.IntN(len(c.cps))]
	kind := c.pickKind()
	c.seq++
	op := check.Op{Client: c.id, RequestID: fmt.Sprintf("chaos-c%d-%d", c.id, c.seq), CP: cp.name, Kind: kind,
		Env: workflowID + "/" + node}
	envURL := cp.url + "/envs/" + workflowID + "/" + node
	var method, url string
	var body any
	switch kind {
	case check.KindCreate:
		op.Packages = []string{c.pin()}
		method, url = http.MethodPost, cp.url+"/envs"
		body = map[string]any{"workflow_id": workflowID, "node_id": node, "packages": op.Packages}
	case check.KindAdd:
		op.Packages = []string{c.pin()}
		method, url, body = http.MethodPost, envURL+"/deps", map[string]any{"packages": op.Packages}
	case check.KindRemove:
		op.Packages = []string{c.known(node)}
		method, url, body = http.MethodDelete, envURL+"/deps", map[string]any{"packages": op.Packages}
	case check.KindUpdate:
		op.Packages = []string{c.known(node) + "==" + versions[c.rng.IntN(len(versions))]}
		method, url, body = http.MethodPut, envURL+"/deps", map[string]any{"packages": op.Packages}
	case check.KindSync:
		method, url = http.MethodPost, envURL+"/sync"
	case check.KindRun:
		method, url, body = http.MethodPost, envURL+"/run", map[string]any{"code": runCode, "timeout": 30}
	case check.KindDeps:
		method, url = http.MethodGet, envURL+"/deps"
	case check.KindDelete:
		method, url = http.MethodDelete, envURL
	case check.KindRollback:
		// Any revision up to the last this client saw: the current one (a no-op), an earlier
		// one, or one a recreated environment no longer has (refused).
		op.Target = 1 + c.rng.Int64N(max(c.lastRev[node], 1))
		method, url, body = http.MethodPost, envURL+"/rollback", map[string]any{"revision": op.Target}
	}
	op.Start = time.Now()
	status, raw, err := c.api.do(ctx, method, url, op.RequestID, body)
	op.End = time.Now()
	op.Status, op.Body = status, raw
	if err != nil {
		op.TransportErr = err.Error()
	}
	op.Decode()
	if op.HasDeps {
		c.lastDeps[node] = op.Deps
	}
	if op.Revision > 0 {
		c.lastRev[node] = op.Revision
	}
	c.hist.add(op)
	// A control plane that is down refuses at once, and one without its database fails at once;
	// without a pause the client would fill the history with those instead of operations. A
	// refusal (423) gets a short one only, so clients keep racing for the same environments. Not
	// a retry: the next pick is random.
	switch {
	case err != nil:
		sleep(ctx, time.Duration(200+c.rng.IntN(300))*time.Millisecond)
	case status >= 500:
		sleep(ctx, time.Duration(100+c.rng.IntN(200))*time.Millisecond)
	case status >= 400:
		sleep(ctx, time.Duration(5+c.rng.IntN(30))*time.Millisecond)
	}
}
