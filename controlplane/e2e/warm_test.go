package e2e

import (
	"slices"
	"strings"
	"testing"
)

// TestWarmRuns: what a caller sees of warm runs through the API. The environment's preload list
// is set, shown and refused when malformed (changing nothing); once the agent has a warm
// interpreter for the build, runs answer "warm": true with the preloaded module already
// imported, while "warm": false still gets a fresh interpreter; and nothing one warm run changes
// (a module attribute, the environment, a file in its temporary directory, random state) is seen
// by the next.
func TestWarmRuns(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n", "packages": []string{"alpha==1.0.0"}}), 201, "")

	r := f.do(t, "PUT", "/envs/wf/n/preload", map[string]any{"modules": []string{"alpha", "json", "alpha"}})
	expect(t, r, 200, "")
	if got := strs(r.Body["preload"]); !slices.Equal(got, []string{"alpha", "json"}) {
		t.Errorf("preload answered %q; want [alpha json] (duplicates dropped, order kept)", got)
	}
	for _, bad := range []map[string]any{
		{"modules": []string{"os; import shutil"}},
		{"modules": []string{"../alpha"}},
		{},
	} {
		expect(t, f.do(t, "PUT", "/envs/wf/n/preload", bad), 400, "INVALID_REQUEST")
	}
	expect(t, f.do(t, "PUT", "/envs/wf/missing/preload", map[string]any{"modules": []string{"alpha"}}), 404, "ENV_NOT_FOUND")
	st := f.do(t, "GET", "/envs/wf/n", nil)
	if got := strs(st.Body["preload"]); !slices.Equal(got, []string{"alpha", "json"}) {
		t.Fatalf("status preload %q after refused lists; want [alpha json] unchanged", got)
	}

	run := func(code string, warm bool) response {
		t.Helper()
		body := map[string]any{"code": code}
		if !warm {
			body["warm"] = false
		}
		r := f.do(t, "POST", "/envs/wf/n/run", body)
		expect(t, r, 200, "")
		if r.Body["exit_code"] != float64(0) {
			t.Fatalf("run of %q: %s", code, r.Raw)
		}
		return r
	}
	const imported = "import sys; print('alpha' in sys.modules)"
	// The first runs of a build go cold while its warm interpreter starts.
	waitFor(t, func() bool { return run(imported, true).Body["warm"] == true })
	if out := run(imported, true).str("stdout"); out != "True\n" {
		t.Errorf("a warm run: alpha in sys.modules before the code imports it = %q; want True (preloaded)", out)
	}
	cold := run(imported, false)
	if cold.Body["warm"] != false || cold.str("stdout") != "False\n" {
		t.Errorf(`"warm": false answered warm=%v, alpha already imported=%q; want a fresh interpreter (false, False)`, cold.Body["warm"], cold.str("stdout"))
	}

	leave := `import alpha, os, random, tempfile
alpha.LEFT_BEHIND = 1
os.environ["LEFT_BEHIND"] = "1"
open(os.path.join(tempfile.gettempdir(), "left-behind"), "w").write("x")
open("/tmp/left-behind", "w").write("x")
print(random.random())`
	look := `import alpha, os, random, tempfile
print(hasattr(alpha, "LEFT_BEHIND"), "LEFT_BEHIND" in os.environ,
      os.path.exists(os.path.join(tempfile.gettempdir(), "left-behind")), os.path.exists("/tmp/left-behind"))
print(random.random())`
	first := run(leave, true)
	second := run(look, true)
	if first.Body["warm"] != true || second.Body["warm"] != true {
		t.Fatalf("runs after the warm interpreter was ready went cold: %s\n%s", first.Raw, second.Raw)
	}
	lines := strings.Split(strings.TrimSpace(second.str("stdout")), "\n")
	if len(lines) != 2 || lines[0] != "False False False False" {
		t.Errorf("a later warm run saw what an earlier one left (module attribute, environment variable, temporary file, /tmp): %q", second.str("stdout"))
	}
	if len(lines) == 2 && strings.TrimSpace(first.str("stdout")) == lines[1] {
		t.Errorf("two warm runs drew the same random number %s", lines[1])
	}

	h := f.do(t, "GET", "/envs/wf/n/operations", nil)
	ops, _ := h.Body["operations"].([]any)
	var kinds []string
	for _, o := range ops {
		m, _ := o.(map[string]any)
		kinds = append(kinds, m["operation"].(string))
	}
	if !slices.Contains(kinds, "preload") {
		t.Errorf("history %v has no preload operation", kinds)
	}
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
