package e2e

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/controlplane/osv/osvtest"
	"github.com/envfabric/envfabric/controlplane/sbom/sbomtest"
)

// list reads r.Body[key] as a list of objects.
func list(t *testing.T, r response, key string) []map[string]any {
	t.Helper()
	raw, ok := r.Body[key].([]any)
	if !ok {
		t.Fatalf("no list %q in %s", key, r.Raw)
	}
	out := make([]map[string]any, 0, len(raw))
	for _, x := range raw {
		out = append(out, x.(map[string]any))
	}
	return out
}

// holders renders GET /packages/{name} as "node=version" ("*" when direct).
func holders(t *testing.T, r response) string {
	t.Helper()
	var out []string
	for _, e := range list(t, r, "environments") {
		s := fmt.Sprintf("%s=%s", e["node_id"], e["version"])
		if e["direct"] == true {
			s += "*"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func advisoryIDs(t *testing.T, r response) string {
	t.Helper()
	var out []string
	for _, v := range list(t, r, "vulnerabilities") {
		out = append(out, v["id"].(string))
	}
	return strings.Join(out, " ")
}

// TestDependencyIntelligence: the package index, the advisories of OSV_DATA (and their
// reload), the SBOM and the install policy, against real uv and a local index, as an operator
// would use them.
func TestDependencyIntelligence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	osvZip := filepath.Join(dir, "all.zip")
	osvtest.WriteZip(t, osvZip, nil)
	f := newFabric(t, options{cpEnv: []string{"OSV_DATA=" + osvZip, "OSV_POLL_INTERVAL=100ms"}})

	// Four environments: alpha affected by GHSA-aaaa-1111-2222 (1.0.0, first range; 2.0.0, second
	// range through beta 2.0.0), alpha fixed (1.1.0), delta affected by PYSEC-2099-2.
	for node, pkgs := range map[string][]string{
		"old":   {"alpha==1.0.0"},
		"fixed": {"alpha==1.1.0"},
		"two":   {"beta==2.0.0"},
		"delta": {"delta==0.1.0"},
	} {
		expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": node, "packages": pkgs}), 201, "")
	}

	// Which environments hold alpha, in which version, declared or not.
	r := f.do(t, "GET", "/packages/Alpha", nil)
	expect(t, r, 200, "")
	if got := holders(t, r); got != "fixed=1.1.0* old=1.0.0* two=2.0.0" || r.str("name") != "alpha" || r.str("next_cursor") != "" {
		t.Errorf("GET /packages/Alpha: %q (name %q); want fixed=1.1.0* old=1.0.0* two=2.0.0", got, r.str("name"))
	}
	for spec, want := range map[string]string{"<1.1": "old=1.0.0*", ">=1.1,!=2.*": "fixed=1.1.0*", "~=2.0": "two=2.0.0", "==3.*": ""} {
		r := f.do(t, "GET", "/packages/alpha?specifier="+urlQuery(spec), nil)
		expect(t, r, 200, "")
		if got := holders(t, r); got != want {
			t.Errorf("alpha%s: %q; want %q", spec, got, want)
		}
	}
	// Pages of one.
	var pages []string
	for path := "/packages/alpha?limit=1"; ; {
		r := f.do(t, "GET", path, nil)
		expect(t, r, 200, "")
		pages = append(pages, holders(t, r))
		c := r.str("next_cursor")
		if c == "" {
			break
		}
		path = "/packages/alpha?limit=1&cursor=" + c
	}
	if got := strings.Join(pages, " | "); got != "fixed=1.1.0* | old=1.0.0* | two=2.0.0" {
		t.Errorf("pages of alpha: %q", got)
	}
	expect(t, f.do(t, "GET", "/packages/alpha?specifier="+urlQuery("=>1"), nil), 400, "INVALID_REQUEST")

	// The fleet's advisories: affected and unaffected versions told apart, the withdrawn
	// record and the other ecosystem's left out.
	r = f.do(t, "GET", "/vulnerabilities", nil)
	expect(t, r, 200, "")
	if got := advisoryIDs(t, r); got != "GHSA-aaaa-1111-2222 PYSEC-2099-2" {
		t.Fatalf("GET /vulnerabilities: %q; want GHSA-aaaa-1111-2222 PYSEC-2099-2\n%s", got, r.Raw)
	}
	ghsa := list(t, r, "vulnerabilities")[0]
	var envs []string
	for _, e := range ghsa["environments"].([]any) {
		m := e.(map[string]any)
		envs = append(envs, fmt.Sprintf("%s:%s=%s", m["node_id"], m["package"], m["version"]))
	}
	pkgs := ghsa["packages"].([]any)[0].(map[string]any)
	if ghsa["severity"] != "CRITICAL" || ghsa["environment_count"] != float64(2) || strings.Join(envs, " ") != "old:alpha=1.0.0 two:alpha=2.0.0" ||
		fmt.Sprint(pkgs["fixed_versions"]) != "[1.1.0]" || fmt.Sprint(pkgs["affected_versions"]) != "[1.0.0 2.0.0]" ||
		fmt.Sprint(ghsa["aliases"]) != "[CVE-2099-0001 PYSEC-2099-1]" {
		t.Errorf("GHSA-aaaa-1111-2222: %v", ghsa)
	}
	for node, want := range map[string]string{"old": "GHSA-aaaa-1111-2222", "fixed": "", "two": "GHSA-aaaa-1111-2222", "delta": "PYSEC-2099-2"} {
		r := f.do(t, "GET", "/envs/wf/"+node+"/vulnerabilities?version_id=v1", nil)
		expect(t, r, 200, "")
		if got := advisoryIDs(t, r); got != want {
			t.Errorf("vulnerabilities of %s: %q; want %q", node, got, want)
		}
	}
	expect(t, f.do(t, "GET", "/envs/wf/none/vulnerabilities", nil), 404, "ENV_NOT_FOUND")

	// The SBOM: valid CycloneDX 1.5, every locked package with its hashes.
	r = f.do(t, "GET", "/envs/wf/two/sbom", nil)
	expect(t, r, 200, "")
	if err := sbomtest.Validate(t, []byte(r.Raw)); err != nil {
		t.Fatalf("the SBOM does not validate against CycloneDX 1.5: %v\n%s", err, r.Raw)
	}
	comps := list(t, r, "components")
	var purls []string
	for _, c := range comps {
		purls = append(purls, c["purl"].(string))
		refs, _ := c["externalReferences"].([]any)
		if len(refs) == 0 || len(refs[0].(map[string]any)["hashes"].([]any)) == 0 {
			t.Errorf("component %s has no distribution with a hash: %v", c["purl"], c)
		}
	}
	if got := strings.Join(purls, " "); got != "pkg:pypi/alpha@2.0.0 pkg:pypi/beta@2.0.0" {
		t.Errorf("SBOM components %q", got)
	}

	// A reload of OSV_DATA: the withdrawn record is reinstated; the answers follow without a restart.
	recs := maps.Clone(osvtest.Records)
	recs["PYSEC-2099-3.json"] = strings.Replace(recs["PYSEC-2099-3.json"], `"withdrawn": "2099-01-05T00:00:00Z",`, "", 1)
	osvtest.WriteZip(t, osvZip, recs)
	waitFor(t, func() bool {
		return advisoryIDs(t, f.do(t, "GET", "/envs/wf/two/vulnerabilities", nil)) == "GHSA-aaaa-1111-2222 PYSEC-2099-3"
	})
	// And the gauge counts each vulnerable environment once, under its worst severity.
	waitFor(t, func() bool {
		m := metricsText(t, f)
		return strings.Contains(m, `envfabric_vulnerable_environments{severity="CRITICAL"} 2`) &&
			strings.Contains(m, `envfabric_vulnerable_environments{severity="MEDIUM"} 1`)
	})

	// The install policy, before anything changes.
	policy := filepath.Join(dir, "policy.toml")
	if err := os.WriteFile(policy, []byte(`
[[deny]]
package = "gamma"
reason = "not allowed here"

[[deny]]
package = "delta"
specifier = ">=0.2"

[advisories]
deny_severity = "HIGH"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	f.killControlPlane(t)
	f.cpEnv = append(f.cpEnv, "PACKAGE_POLICY="+policy)
	f.startControlPlane(t)
	before := f.do(t, "GET", "/envs/wf/delta/export", nil)
	expect(t, before, 200, "")
	status := f.do(t, "GET", "/envs/wf/delta", nil)
	for _, c := range []struct {
		method string
		body   map[string]any
		rule   string
	}{
		{"POST", map[string]any{"packages": []string{"gamma"}}, "gamma"},                               // the name, any version
		{"PUT", map[string]any{"packages": []string{"delta==0.2.0"}}, "delta>=0.2"},                    // a specifier
		{"POST", map[string]any{"packages": []string{"alpha==1.0.0"}}, "advisories: severity >= HIGH"}, // a CRITICAL advisory
		{"POST", map[string]any{"packages": []string{"epsilon", "alpha==1.1.0"}}, ""},                  // allowed: MEDIUM is below HIGH
	} {
		r := f.do(t, c.method, "/envs/wf/delta/deps", c.body)
		if c.rule == "" {
			expect(t, r, 200, "")
			continue
		}
		expect(t, r, 422, "PACKAGE_DENIED")
		denied, _ := r.Body["error"].(map[string]any)["denied"].(map[string]any)
		if denied["rule"] != c.rule || !strings.Contains(r.Body["error"].(map[string]any)["message"].(string), c.rule) {
			t.Errorf("%s %v: denied %v; want rule %q named", c.method, c.body, denied, c.rule)
		}
		after := f.do(t, "GET", "/envs/wf/delta/export", nil)
		if after.str("pyproject_toml") != before.str("pyproject_toml") || after.str("uv_lock") != before.str("uv_lock") ||
			f.readFile(t, "wf", "delta", "uv.lock") != before.str("uv_lock") || f.readFile(t, "wf", "delta", "pyproject.toml") != before.str("pyproject_toml") {
			t.Errorf("a refused %s changed the files", c.method)
		}
		if now := f.do(t, "GET", "/envs/wf/delta", nil); now.Body["revision"] != status.Body["revision"] || now.str("state") != "ACTIVE" {
			t.Errorf("after a refusal: revision %v, state %s; want revision %v, ACTIVE", now.Body["revision"], now.str("state"), status.Body["revision"])
		}
		ops := list(t, f.do(t, "GET", "/envs/wf/delta/operations", nil), "operations")
		if ops[0]["error_code"] != "PACKAGE_DENIED" || ops[0]["status"] == "succeeded" {
			t.Errorf("the audit of the refusal: %v", ops[0])
		}
	}
	// A create that would lock a denied version leaves no environment behind.
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "new", "packages": []string{"gamma==1.0.0"}}), 422, "PACKAGE_DENIED")
	expect(t, f.do(t, "GET", "/envs/wf/new", nil), 404, "ENV_NOT_FOUND")
	if _, err := os.Stat(f.envDir("wf", "new", "v1")); !os.IsNotExist(err) {
		t.Errorf("a refused create left %s: %v", f.envDir("wf", "new", "v1"), err)
	}
}

func urlQuery(s string) string {
	return strings.NewReplacer("<", "%3C", ">", "%3E", "=", "%3D", ",", "%2C", "!", "%21", "~", "%7E", "*", "%2A").Replace(s)
}

func metricsText(t *testing.T, f *fabric) string {
	t.Helper()
	req, err := http.NewRequest("GET", f.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
