package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// scrape returns the metric families an endpoint exports, by name, with their type, and the
// samples' lines.
func scrape(t *testing.T, url, token string) (families map[string]string, samples []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s/metrics: %d %s", url, resp.StatusCode, b)
	}
	families = map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = f[3]
		} else if !strings.HasPrefix(line, "#") && line != "" {
			samples = append(samples, line)
		}
	}
	return families, samples
}

// envfabricFamilies keeps the families of our own (not the Go runtime's).
func envfabricFamilies(fams map[string]string) []string {
	var out []string
	for n := range fams {
		if strings.HasPrefix(n, "envfabric_") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// TestMetricsComplete: a single host exports every series a fleet's control plane does (agents
// alive among them), every environment state has a series, IDLE included, and every metric the
// alert rules and the dashboard in deploy/ name exists on a live single host or fleet.
func TestMetricsComplete(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{cpEnv: []string{"IDLE_AFTER=1s"}})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha"}}), 201, "")
	expect(t, f.do(t, "POST", "/envs/wf/n/run", map[string]any{"code": "print(1)"}), 200, "")

	fl := newFleet(t, fleetOptions{controlPlanes: 1, agents: 1})
	expect(t, fl.cp(0).do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha"}}), 201, "")
	expect(t, fl.cp(0).do(t, "POST", "/envs/wf/n/run", map[string]any{"code": "print(1)"}), 200, "")

	singleCP, samples := scrape(t, f.URL, readerSecret)
	singleAgent, _ := scrape(t, f.AgentURL, f.AgentToken)
	fleetCP, _ := scrape(t, fl.cp(0).URL, readerSecret)
	var fleetAgent map[string]string
	for _, a := range fl.agents {
		fleetAgent, _ = scrape(t, a.url, fl.token)
	}

	if missing := slices.DeleteFunc(envfabricFamilies(fleetCP), func(n string) bool { _, ok := singleCP[n]; return ok }); len(missing) > 0 {
		t.Errorf("the fleet's control plane exports %v, the single host's does not", missing)
	}
	if !slices.Contains(samples, "envfabric_agents_alive 1") {
		t.Errorf("single host: no envfabric_agents_alive 1 among %d samples", len(samples))
	}
	for _, state := range []string{"CREATING", "ACTIVE", "INSTALLING", "SYNCING", "RUNNING", "IDLE", "DELETING", "ERROR"} {
		if !slices.ContainsFunc(samples, func(s string) bool { return strings.HasPrefix(s, `envfabric_environments{state="`+state+`"} `) }) {
			t.Errorf("single host: no envfabric_environments series for %s", state)
		}
	}
	// Unused for IDLE_AFTER, the environment moves from the ACTIVE series to the IDLE one, as GET
	// /envs reports it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, samples = scrape(t, f.URL, readerSecret)
		if slices.Contains(samples, `envfabric_environments{state="IDLE"} 1`) && slices.Contains(samples, `envfabric_environments{state="ACTIVE"} 0`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the idle environment is not counted IDLE: %v", slices.DeleteFunc(samples, func(s string) bool { return !strings.HasPrefix(s, "envfabric_environments") }))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := f.do(t, "GET", "/envs/wf/n", nil); r.str("state") != "IDLE" {
		t.Errorf("GET /envs/wf/n says %q; the metric says IDLE", r.str("state"))
	}

	// One /agents shape: the single host's agent has every field the fleet's has but what gossip
	// alone knows, the sandbox tier included.
	one := f.do(t, "GET", "/agents", nil).Body["agents"].([]any)[0].(map[string]any)
	_, _, fleetBody := fl.agentsView(t, 0)
	for k := range fleetBody["agents"].([]any)[0].(map[string]any) {
		if _, ok := one[k]; !ok && k != "gossip_addr" && k != "load" && k != "fleet_id" { // gossip's own
			t.Errorf("the single host's GET /agents has no %q, the fleet's has", k)
		}
	}
	if one["sandbox"] == "" || one["sandbox"] == nil {
		t.Errorf("the single host's agent does not say its sandbox: %v", one)
	}

	// Every name deploy/ refers to is a family (or a histogram's _bucket, _sum, _count) that a
	// live single host or fleet exports.
	exported := map[string]string{}
	for _, fams := range []map[string]string{singleCP, singleAgent, fleetCP, fleetAgent} {
		for n, typ := range fams {
			exported[n] = typ
		}
	}
	root := testenv.RepoRoot(t)
	name := regexp.MustCompile(`envfabric_[a-z0-9_]*[a-z0-9]`)
	for _, file := range []string{"deploy/prometheus/alerts.yml", "deploy/grafana/envfabric.json"} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, n := range name.FindAllString(string(b), -1) {
			if seen[n] {
				continue
			}
			seen[n] = true
			if _, ok := exported[n]; ok {
				continue
			}
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if exported[base] == "histogram" || (exported[base] == "summary" && !strings.HasSuffix(n, "_bucket")) {
				continue
			}
			t.Errorf("%s names %s, which neither a single host nor a fleet exports", file, n)
		}
		if len(seen) < 10 {
			t.Errorf("%s names only %d metrics: is the pattern right?", file, len(seen))
		}
	}
}

// TestAlertRules checks deploy/prometheus/alerts.yml with promtool and runs its unit tests
// (alerts_test.yml). promtool comes from Debian's prometheus package, which .ci/run installs;
// without it the test is skipped, except in CI.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found (Debian's prometheus package; .ci/run installs it)")
		}
		t.Skip("promtool not found: install Debian's prometheus package to test the alert rules")
	}
	dir := filepath.Join(testenv.RepoRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"check", "config", "--syntax-only", "prometheus.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
