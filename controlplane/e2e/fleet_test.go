package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/envfabric/envfabric/shared/testutil/pyindex"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// fleet is several control planes and agents as real processes on loopback: one PostgreSQL, one
// shared "NAS" directory, gossip encrypted with one key, agents reached with one token.
type fleet struct {
	DataRoot string
	Envs     string
	Index    *pyindex.Index
	DB       string
	cps      []*fabric
	agents   map[string]*fleetAgent

	token    string
	key      string
	cpGossip []string
	base     []string
	agentBin string
	uv       string
	// ca issues every member's certificate when the fleet runs over mutual TLS (nil: plaintext).
	ca *fleetCA
}

type fleetAgent struct {
	id   string
	url  string
	proc *proc
}

type fleetOptions struct {
	controlPlanes int
	agents        int
	cpEnv         []string
	agentEnv      []string
	// tls runs control planes and agents over mutual TLS (FLEET_TLS_*), each with its own
	// certificate from one fleet CA.
	tls bool
	// dataRoot, db and index, when set, are the share, the database and the package index to use
	// instead of new ones (a fleet taking over a single host's data: TestMigrateToFleet).
	dataRoot string
	db       string
	index    *pyindex.Index
}

func newFleet(t *testing.T, opt fleetOptions) *fleet {
	t.Helper()
	cpBin, agentBin := binaries(t)
	fl := &fleet{DataRoot: opt.dataRoot, DB: opt.db, Index: opt.index, agents: map[string]*fleetAgent{},
		token: "fleet-token-" + fmt.Sprint(time.Now().UnixNano()), agentBin: agentBin, uv: testenv.UV(t),
		key: base64.StdEncoding.EncodeToString([]byte("envfabric-e2e-gossip-key-32bytes"))}
	if fl.DataRoot == "" {
		fl.DataRoot = t.TempDir()
	}
	if fl.DB == "" {
		fl.DB = database(t)
	}
	if fl.Index == nil {
		fl.Index = pyindex.Serve(t, pyindex.Universe())
	}
	fl.Envs = filepath.Join(fl.DataRoot, "envs")
	if opt.tls {
		fl.ca = newFleetCA(t)
	}
	fl.base = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "AGENT_TOKEN=" + fl.token,
		"LOG_LEVEL=debug", "GOSSIP_KEYS=" + fl.key, "GOSSIP_PROFILE=local"}
	// Each control plane takes any free port for REST and gossip and says which in its readiness
	// message; each joins through the ones started before it.
	for i := range opt.controlPlanes {
		env := append(append([]string{}, fl.base...), "LISTEN_ADDR=127.0.0.1:0", "DATA_ROOT="+fl.DataRoot,
			"DATABASE_URL="+fl.DB, "INSTANCE_ID="+fmt.Sprintf("cp%d", i), "LEASE_TTL=6s", "API_TOKENS="+apiTokens,
			"GOSSIP_BIND_ADDR=127.0.0.1:0", "GOSSIP_SEEDS="+strings.Join(fl.cpGossip, ","))
		if fl.ca != nil {
			name := fmt.Sprintf("cp%d", i)
			fl.ca.issue("ca1", "controlplane", name)
			env = append(env, fl.ca.env(name)...)
		}
		env = append(env, opt.cpEnv...)
		cp := &fabric{DataRoot: fl.DataRoot, Envs: fl.Envs, Index: fl.Index,
			cpBin: cpBin, client: &http.Client{Timeout: 10 * time.Minute}}
		// Not waiting for /readyz: it says ready once an agent is alive.
		cp.cp = start(t, fmt.Sprintf("cp%d", i), cpBin, env)
		ready := cp.cp.waitReady(t)
		cp.URL = "http://" + ready["X_ENVFABRIC_ADDR"]
		// A restart binds the same addresses again (the last setting wins).
		cp.cpEnv = append(env, "LISTEN_ADDR="+ready["X_ENVFABRIC_ADDR"], "GOSSIP_BIND_ADDR="+ready["X_ENVFABRIC_GOSSIP_ADDR"])
		fl.cpGossip = append(fl.cpGossip, ready["X_ENVFABRIC_GOSSIP_ADDR"])
		fl.cps = append(fl.cps, cp)
	}
	for _, cp := range fl.cps {
		cp.cpEnv = append(cp.cpEnv, "GOSSIP_SEEDS="+strings.Join(fl.cpGossip, ","))
	}
	for i := range opt.agents {
		fl.startAgent(t, fmt.Sprintf("agent%d", i+1), opt.agentEnv...)
	}
	for _, cp := range fl.cps {
		waitHTTP(t, cp.cp, cp.URL+"/readyz")
	}
	fl.waitAgents(t, 0, opt.agents)
	return fl
}

// startAgent starts one more agent on the fleet's share; extra overrides its environment. Over
// mutual TLS it gets a certificate of the fleet's CA (extra may give it other FLEET_TLS_*).
func (fl *fleet) startAgent(t *testing.T, id string, extra ...string) *fleetAgent {
	t.Helper()
	env := append(append([]string{}, fl.base...), "AGENT_LISTEN_ADDR=127.0.0.1:0", "AGENT_ID="+id, "DATA_ROOT="+fl.DataRoot,
		"UV_BIN="+fl.uv, "UV_DEFAULT_INDEX="+fl.Index.URL, "GOSSIP_BIND_ADDR=127.0.0.1:0",
		"GOSSIP_SEEDS="+strings.Join(fl.cpGossip, ","), "USAGE_SCAN_INTERVAL=1s")
	scheme := "http://"
	if fl.ca != nil {
		fl.ca.issue("ca1", "agent", id)
		env = append(env, fl.ca.env(id)...)
		scheme = "https://"
	}
	env = append(env, extra...)
	a := &fleetAgent{id: id, proc: start(t, id, fl.agentBin, env)}
	a.url = scheme + a.proc.addr(t)
	fl.agents[id] = a
	return a
}

func (fl *fleet) cp(i int) *fabric { return fl.cps[i] }

// agentsView is GET /agents from control plane i.
func (fl *fleet) agentsView(t *testing.T, i int) (alive []string, refused map[string]any, body map[string]any) {
	t.Helper()
	r := fl.cp(i).do(t, "GET", "/agents", nil)
	if r.Status != 200 {
		t.Fatalf("GET /agents: %d %s", r.Status, r.Raw)
	}
	for _, a := range r.Body["agents"].([]any) {
		m := a.(map[string]any)
		if m["state"] == "alive" {
			alive = append(alive, m["agent_id"].(string))
		}
	}
	refused, _ = r.Body["refused"].(map[string]any)
	return alive, refused, r.Body
}

// waitAgents waits until control plane i sees exactly n agents alive.
func (fl *fleet) waitAgents(t *testing.T, i, n int) []string {
	t.Helper()
	var alive []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		alive, _, _ = fl.agentsView(t, i)
		if len(alive) == n {
			return alive
		}
		if time.Now().After(deadline) {
			t.Fatalf("cp%d sees agents %v; want %d", i, alive, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (fl *fleet) metric(t *testing.T, i int, name string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fl.cp(i).URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+readerSecret) // Prometheus scrapes with a read token
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			return f[1]
		}
	}
	return ""
}

// opsOf lists an environment's audited operations as "kind:status:code@agent", newest first.
func opsOf(t *testing.T, f *fabric, wf, node string) []string {
	t.Helper()
	var out []string
	for _, o := range f.do(t, "GET", "/envs/"+wf+"/"+node+"/operations", nil).Body["operations"].([]any) {
		op := o.(map[string]any)
		out = append(out, fmt.Sprint(op["operation"], ":", op["status"], ":", op["error_code"], "@", op["agent"]))
	}
	return out
}

// TestFleetMembership: two control planes and three agents find each other by gossip; work
// spreads over the agents; agents that join and leave show in GET /agents and in the metrics; an
// agent with the wrong gossip key or on the wrong storage is kept out.
func TestFleetMembership(t *testing.T) {
	t.Parallel()
	fl := newFleet(t, fleetOptions{controlPlanes: 2, agents: 3})
	fleetID, err := os.ReadFile(filepath.Join(fl.DataRoot, ".envfabric-fleet-id"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		alive, _, body := fl.agentsView(t, i)
		if !slices.Equal(alive, []string{"agent1", "agent2", "agent3"}) || body["fleet_id"] != strings.TrimSpace(string(fleetID)) {
			t.Errorf("cp%d: GET /agents: %v fleet %v; want agent1..3 on fleet %s", i, alive, body["fleet_id"], fleetID)
		}
		if cps := fmt.Sprint(body["control_planes"]); cps != fmt.Sprintf("[cp%d]", 1-i) {
			t.Errorf("cp%d sees control planes %s; want the other one", i, cps)
		}
		if got := fl.metric(t, i, "envfabric_agents_alive"); got != "3" {
			t.Errorf("cp%d: envfabric_agents_alive = %q; want 3", i, got)
		}
	}

	// Creates through both control planes spread over the agents.
	used := map[string]bool{}
	for i := range 6 {
		node := fmt.Sprintf("n%d", i)
		expect(t, fl.cp(i%2).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": node, "packages": []string{"alpha==1.0.0"}}), 201, "")
		r := fl.cp(1-i%2).do(t, "POST", "/envs/wf/"+node+"/run", map[string]any{"code": "import alpha; print(alpha.__version__)"})
		expect(t, r, 200, "")
		if strings.TrimSpace(r.str("stdout")) != "1.0.0" {
			t.Errorf("run on %s: %s", node, r.Raw)
		}
		for _, op := range opsOf(t, fl.cp(0), "wf", node) {
			_, agent, _ := strings.Cut(op, "@")
			used[agent] = true
		}
	}
	if len(used) < 2 {
		t.Errorf("12 operations all went to %v; want them spread over the agents", used)
	}

	// No agent offers Python 3.12: a clear 503 with its own code, and nothing recorded.
	r := fl.cp(0).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "py312", "python_version": "3.12"})
	expect(t, r, 503, "NO_AGENT_AVAILABLE")
	if r := fl.cp(0).do(t, "GET", "/envs/wf/py312", nil); r.Status != 404 {
		t.Errorf("a create no agent could take left a record: %s", r.Raw)
	}

	// An agent with another gossip key, and one on other storage (its own fleet id), are kept out.
	otherKey := base64.StdEncoding.EncodeToString([]byte("another-gossip-key-of-32-bytes!!"))
	fl.startAgent(t, "intruder", "GOSSIP_KEYS="+otherKey)
	strangerRoot := t.TempDir()
	fl.startAgent(t, "stranger", "DATA_ROOT="+strangerRoot)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, refused, _ := fl.agentsView(t, 0)
		if _, ok := refused["stranger"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent on other storage was not refused: %v", refused)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A new agent joins meanwhile: it shows; the intruder never does.
	fl.startAgent(t, "agent4")
	alive := fl.waitAgents(t, 0, 4)
	if slices.Contains(alive, "intruder") || slices.Contains(alive, "stranger") {
		t.Errorf("alive agents %v include an agent that must be kept out", alive)
	}
	if got := fl.metric(t, 0, "envfabric_agents_refused"); got == "" || got == "0" {
		t.Errorf("envfabric_agents_refused = %q; want the stranger counted", got)
	}
	for i := range 4 {
		expect(t, fl.cp(0).do(t, "POST", "/envs/wf/n"+fmt.Sprint(i)+"/run", map[string]any{"code": "pass"}), 200, "")
	}
	if entries, _ := os.ReadDir(filepath.Join(strangerRoot, "envs")); len(entries) != 0 {
		t.Errorf("the agent on other storage got work: %v", entries)
	}
	for _, op := range opsOf(t, fl.cp(0), "wf", "n0") {
		if strings.HasSuffix(op, "@intruder") || strings.HasSuffix(op, "@stranger") {
			t.Errorf("an operation went to an agent that is not part of the fleet: %s", op)
		}
	}

	// An agent that stops leaves the view at once (it leaves gossip on its way out).
	fl.agents["agent3"].proc.stop(t)
	fl.waitAgents(t, 0, 3)
	fl.waitAgents(t, 1, 3)
	if got := fl.metric(t, 1, "envfabric_agents_alive"); got != "3" {
		t.Errorf("after agent3 left: envfabric_agents_alive = %q; want 3", got)
	}
}

// TestFleetAgentDiesMidAdd: kill -9 of the agent in the middle of an add. The request fails with a
// clear error, the lease is released, the environment never left its last good revision (the add
// resolved in a staging copy: nothing to put back), and the next operation works on the other agent.
func TestFleetAgentDiesMidAdd(t *testing.T) {
	t.Parallel()
	fl := newFleet(t, fleetOptions{controlPlanes: 1, agents: 2})
	cp := fl.cp(0)
	expect(t, cp.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	pyproject := cp.readFile(t, "wf", "n", "pyproject.toml")
	lock := cp.readFile(t, "wf", "n", "uv.lock")

	// loaded is the agents with work in flight, as gossip (and this control plane) sees them.
	loaded := func() []string {
		var ids []string
		_, _, body := fl.agentsView(t, 0)
		for _, a := range body["agents"].([]any) {
			if m := a.(map[string]any); m["load"].(float64) > 0 {
				ids = append(ids, m["agent_id"].(string))
			}
		}
		return ids
	}
	// The create is two calls (resolve, build), perhaps on two agents: wait until gossip shows
	// them done, so that the one loaded below is the one doing the add.
	waitFor(t, func() bool { return len(loaded()) == 0 })
	stalled := fl.Index.Stall("delta")
	result := make(chan response, 1)
	go func() { result <- cp.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}}) }()
	select {
	case <-stalled:
	case <-time.After(60 * time.Second):
		t.Fatal("the add never reached the index")
	}
	// The agent doing the add is the one with work in flight.
	var busy string
	waitFor(t, func() bool {
		ids := loaded()
		if len(ids) == 1 {
			busy = ids[0]
		}
		return busy != ""
	})
	_ = fl.agents[busy].proc.cmd.Process.Kill()
	<-fl.agents[busy].proc.done

	var r response
	select {
	case r = <-result:
	case <-time.After(2 * time.Minute):
		t.Fatal("the add did not answer after its agent died")
	}
	expect(t, r, 503, "AGENT_UNAVAILABLE")
	if cp.readFile(t, "wf", "n", "pyproject.toml") != pyproject || cp.readFile(t, "wf", "n", "uv.lock") != lock {
		t.Error("the project files are not at the last good revision after the agent died")
	}
	st := cp.do(t, "GET", "/envs/wf/n", nil)
	if st.str("state") != "ACTIVE" || len(st.Body["operations_in_progress"].([]any)) != 0 {
		t.Errorf("status after the failure: %s; want ACTIVE with no lease held", st.Raw)
	}
	// The next operation works at once, on the agent that is left.
	r = cp.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"beta"}})
	expect(t, r, 200, "")
	if v := lockedVersions(t, r); v["beta"] == "" || v["delta"] != "" {
		t.Errorf("after recovery: %s", r.Raw)
	}
	ops := opsOf(t, cp, "wf", "n")
	if !strings.HasPrefix(ops[0], "add:succeeded:") || strings.HasSuffix(ops[0], "@"+busy) {
		t.Errorf("audit %v; want the last add succeeded on another agent than %s", ops, busy)
	}
	if want := "add:failed:AGENT_UNAVAILABLE@" + busy; !slices.Contains(ops, want) {
		t.Errorf("audit %v; want %s", ops, want)
	}
	expect(t, cp.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": "import alpha, beta"}), 200, "")
}

// TestFleetControlPlaneDies: a control plane killed mid-add. Its lease expires, another control
// plane serves the environment, at its last good revision.
func TestFleetControlPlaneDies(t *testing.T) {
	t.Parallel()
	fl := newFleet(t, fleetOptions{controlPlanes: 2, agents: 2})
	expect(t, fl.cp(0).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	pyproject := fl.cp(0).readFile(t, "wf", "n", "pyproject.toml")
	lock := fl.cp(0).readFile(t, "wf", "n", "uv.lock")

	stalled := fl.Index.Stall("delta")
	fl.cp(0).addInto(t, "wf", "n", "delta", stalled)
	fl.cp(0).killControlPlane(t)

	// The dead holder's lease stands until it expires (LEASE_TTL=6s), then cp1 serves.
	expect(t, fl.cp(1).do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"beta"}}), 423, "ENV_LOCKED")
	waitFor(t, func() bool {
		ops, _ := fl.cp(1).do(t, "GET", "/envs/wf/n", nil).Body["operations_in_progress"].([]any)
		return len(ops) == 0
	})
	// The agent saw its caller go, stopped uv with SIGINT and put the files back.
	if fl.cp(1).readFile(t, "wf", "n", "pyproject.toml") != pyproject || fl.cp(1).readFile(t, "wf", "n", "uv.lock") != lock {
		t.Error("the files are not at the last good revision after the control plane died")
	}
	r := fl.cp(1).do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"beta"}})
	expect(t, r, 200, "")
	if v := lockedVersions(t, r); v["delta"] != "" || v["beta"] == "" {
		t.Errorf("after cp0 died: %s", r.Raw)
	}
	if ops := opsOf(t, fl.cp(1), "wf", "n"); !slices.ContainsFunc(ops, func(s string) bool { return strings.HasPrefix(s, "add:failed:INTERRUPTED") }) {
		t.Errorf("audit %v; want the dead control plane's add closed as INTERRUPTED", ops)
	}
}

// TestFleetConcurrentMutations: the same environment changed through two control planes at once:
// exactly one proceeds, the other gets 423.
func TestFleetConcurrentMutations(t *testing.T) {
	t.Parallel()
	fl := newFleet(t, fleetOptions{controlPlanes: 2, agents: 2})
	expect(t, fl.cp(0).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")
	stalled := fl.Index.Stall("delta")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	results := make([]response, 2)
	start := make(chan struct{})
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = fl.cp(i).doCtx(t, ctx, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"delta"}})
		}()
	}
	close(start)
	<-stalled
	// One request is stalled in uv; the other must have been refused already.
	waitFor(t, func() bool { return results[0].Status == 423 || results[1].Status == 423 })
	cancel() // its caller gives up; admitted, the add runs on once the index answers
	wg.Wait()
	fl.Index.Release("delta")
	locked := 0
	for i, r := range results {
		if r.Status == 423 {
			locked++
			if r.errCode() != "ENV_LOCKED" || r.Body["error"].(map[string]any)["held_by"] == nil {
				t.Errorf("cp%d refusal: %s", i, r.Raw)
			}
		}
	}
	if locked != 1 {
		t.Errorf("%d of 2 concurrent mutations were refused; want exactly 1", locked)
	}
	// Once the first is gone the environment takes mutations again, through either control plane.
	var r response
	waitFor(t, func() bool {
		r = fl.cp(1).do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{"beta"}})
		return r.Status != 423
	})
	expect(t, r, 200, "")
}

// TestFleetCleanup: environments idle past CLEANUP_IDLE_HOURS are removed across the fleet, except
// one whose interpreter a workflow executor started directly on an agent's host. The clock is
// injected by ageing every environment's recorded last use by 100 hours.
func TestFleetCleanup(t *testing.T) {
	t.Parallel()
	// Usage is looked at when cleanup asks (a rescan), not by the background scan, so the
	// test decides what the agents can have seen.
	fl := newFleet(t, fleetOptions{controlPlanes: 2, agents: 2, agentEnv: []string{"USAGE_SCAN_INTERVAL=1h"}})
	for _, n := range []string{"a", "b", "c"} {
		expect(t, fl.cp(0).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": n, "packages": []string{"alpha==1.0.0"}}), 201, "")
	}
	conn, err := pgx.Connect(t.Context(), fl.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `UPDATE envs SET last_used_at = now() - interval '100 hours'`); err != nil {
		t.Fatal(err)
	}
	// A workflow executor on an agent's host runs b's interpreter itself, outside the API.
	python := filepath.Join(fl.Envs, "wf", "b", "v1", ".venv", "bin", "python")
	if out, err := exec.Command(python, "-c", "import alpha").CombinedOutput(); err != nil {
		t.Fatalf("running b directly: %v\n%s", err, out)
	}

	// The dry run merges the agents' usage reports; b drops out once an agent has seen its use.
	var dry response
	waitFor(t, func() bool {
		dry = fl.cp(1).do(t, "POST", "/envs/cleanup", map[string]any{"dry_run": true})
		return dry.Status == 200 && len(dry.Body["removed"].([]any)) == 2
	})
	var names []string
	for _, e := range dry.Body["removed"].([]any) {
		names = append(names, e.(map[string]any)["node_id"].(string))
	}
	if !slices.Equal(names, []string{"a", "c"}) || dry.Body["bytes_freed"].(float64) <= 0 {
		t.Errorf("dry run: %s; want a and c, with the disk they free", dry.Raw)
	}
	for _, n := range []string{"a", "b", "c"} {
		if _, err := os.Stat(filepath.Join(fl.Envs, "wf", n)); err != nil {
			t.Errorf("the dry run removed %s", n)
		}
	}

	r := fl.cp(1).do(t, "POST", "/envs/cleanup", map[string]any{})
	expect(t, r, 200, "")
	if n := len(r.Body["removed"].([]any)); n != 2 {
		t.Errorf("cleanup removed %d; want 2: %s", n, r.Raw)
	}
	for n, want := range map[string]bool{"a": false, "b": true, "c": false} {
		_, err := os.Stat(filepath.Join(fl.Envs, "wf", n))
		if got := err == nil; got != want {
			t.Errorf("after cleanup %s exists = %v; want %v", n, got, want)
		}
	}
	if ops := opsOf(t, fl.cp(0), "wf", "a"); !strings.HasPrefix(ops[0], "cleanup:succeeded:") {
		t.Errorf("a's audit %v; want a cleanup", ops)
	}
	expect(t, fl.cp(0).do(t, "POST", "/envs/wf/b/run", map[string]any{"code": "import alpha"}), 200, "")
}

// TestFleetCleanupLeader: with scheduled cleanup on every control plane, one holds the role at a
// time, and the environments go once.
func TestFleetCleanupLeader(t *testing.T) {
	t.Parallel()
	fl := newFleet(t, fleetOptions{controlPlanes: 2, agents: 1, cpEnv: []string{"CLEANUP_INTERVAL=1s", "CLEANUP_IDLE_HOURS=0.0003"}})
	expect(t, fl.cp(0).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "old", "packages": []string{"alpha==1.0.0"}}), 201, "")
	waitFor(t, func() bool { return fl.cp(0).do(t, "GET", "/envs/wf/old", nil).Status == 404 })
	conn, err := pgx.Connect(t.Context(), fl.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var holders int
	if err := conn.QueryRow(t.Context(), `SELECT count(DISTINCT holder) FROM leaders WHERE name = 'cleanup'`).Scan(&holders); err != nil || holders != 1 {
		t.Errorf("cleanup role holders: %d, %v; want 1", holders, err)
	}
	var cleanups int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM env_operations WHERE operation = 'cleanup' AND status = 'succeeded'`).Scan(&cleanups); err != nil || cleanups != 1 {
		t.Errorf("succeeded cleanups of the one environment: %d, %v; want 1", cleanups, err)
	}
}
