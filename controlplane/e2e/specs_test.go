package e2e

import (
	"testing"
)

// TestAcceptedSpecsReachUV: every form of requirement the strict parser accepts is one uv
// understands. Each goes through a real `uv add`, which resolves it or says why not (422), and
// none is a uv failure (500): the parser refuses what uv would choke on instead of passing it on.
func TestAcceptedSpecsReachUV(t *testing.T) {
	t.Parallel()
	f := newFabric(t, options{})
	expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "wf", "node_id": "n"}), 201, "")
	tests := []struct {
		spec   string
		status int
	}{
		{"alpha==1.0.0", 200},
		{"alpha===1.0.0", 200},
		{"alpha==1.*", 200},
		{"alpha!=1.1.*", 200},
		{"alpha~=1.0", 200},
		{"alpha>=1.0rc1", 200},
		{"alpha>=1.0.post1.dev2", 200},
		{"alpha<=2.0.0a1", 200},
		{"alpha==v1.0.0", 200},
		{"alpha==1.0.0-1", 422},
		{"alpha==1!1.0", 422},
		{"alpha==1.0.0+local", 422},
		{"Alpha (>=1.0, <2)", 200},
		{"alpha[extra]>=1", 200},
		{`alpha; python_version >= "3.8"`, 200},
		{`alpha; python_full_version == "3.11.*"`, 200},
		{`alpha; sys_platform not in "win32 cygwin"`, 200},
		{`alpha; "linux" in sys_platform`, 200},
		{`alpha; implementation_name == "cpython" and (os_name == "posix" or platform_machine == "x86_64")`, 200},
		{`alpha; platform_release == "anything" or platform_version != "x"`, 200},
		{`alpha; os_name ~= "posix"`, 200},
		{`alpha; platform_python_implementation < "CPython"`, 200},
		{`alpha; extra == "x"`, 200},
		{"does-not-exist", 422},
		{"alpha>=99", 422},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			r := f.do(t, "POST", "/envs/wf/n/deps", map[string]any{"packages": []string{tt.spec}})
			if r.Status >= 500 {
				t.Fatalf("uv could not take %q: %d %s", tt.spec, r.Status, tail(r.Raw, 3000))
			}
			if r.Status != tt.status {
				t.Errorf("got %d %q; want %d\n%s", r.Status, r.errCode(), tt.status, tail(r.Raw, 1500))
			}
		})
	}
}
