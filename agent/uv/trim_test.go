package uv_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/agent/uv"
)

// uv 0.12's output for a failed `uv add`, as the agent captures it (stdout and stderr together).
const addConflict = `Using CPython 3.11.2 interpreter at: /usr/bin/python3.11
  × No solution found when resolving dependencies:
  ╰─▶ Because all versions of gamma depend on alpha<1.1 and beta>=2.0.0 depends on alpha>=2, we can
      conclude that beta>=2.0.0 and all versions of gamma are incompatible.
      And because your project depends on beta==2.0.0 and gamma, we can conclude that your project's
      requirements are unsatisfiable.
  help: If you want to add the package regardless of the failed resolution, provide the ` + "`--frozen`" + ` flag to skip locking and syncing.
`

const addConflictPlain = `error: Failed to add dependencies
  cause: No solution found when resolving dependencies
  cause: Because gamma depends on alpha<1.1 and beta>=2.0.0 depends on alpha>=2, gamma and beta>=2 are incompatible.

hint: If you want to add the package regardless of the failed resolution, provide the ` + "`--frozen`" + ` flag to skip locking and syncing
`

func TestTrim(t *testing.T) {
	tests := []struct {
		name, out string
		want      []string // in the trimmed output
		notWant   []string
	}{
		{"plain conflict", addConflictPlain, []string{"error: Failed to add dependencies", "gamma depends on alpha<1.1"}, []string{"--frozen", "hint:"}},
		{"fancy conflict", addConflict, []string{"No solution found", "requirements are unsatisfiable"}, []string{"Using CPython", "/usr/bin/python3.11", "--frozen", "help:"}},
		{"a hint without a flag stays", "error: no wheel\n\nhint: alpha was yanked (reason: broken)\n", []string{"hint: alpha was yanked"}, nil},
		{"no error line", "Resolved 3 packages\nsomething odd\n", []string{"something odd"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := uv.Trim(tt.out)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("got %q; want it to hold %q", got, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("got %q; want no %q", got, w)
				}
			}
		})
	}
}

func TestPublic(t *testing.T) {
	ee := &uv.ExitError{Args: []string{"add", "--project", "/srv/nas/envs/wf/n/v1", "--python", "/usr/bin/python3.11", "--", "gamma"},
		ExitCode: 1, Output: addConflictPlain}
	got := ee.Public()
	want := "uv add failed (exit status 1): Failed to add dependencies: No solution found when resolving dependencies: " +
		"Because gamma depends on alpha<1.1 and beta>=2.0.0 depends on alpha>=2, gamma and beta>=2 are incompatible."
	if got != want {
		t.Errorf("got %q;\nwant %q", got, want)
	}
	if !strings.Contains(ee.Error(), "--project /srv/nas/envs/wf/n/v1") {
		t.Errorf("Error() = %q; want the command line (for the agent's log)", ee.Error())
	}
}

func TestMinors(t *testing.T) {
	got := uv.Minors([]uv.Python{{Version: "3.11.2"}, {Version: "3.9.18"}, {Version: "3.11.9"}, {Version: "3.12.0"}, {Version: "pypy"}})
	if want := []string{"3.9", "3.11", "3.12"}; !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
	if got := uv.Minors(nil); !slices.Equal(got, []string{"none"}) {
		t.Errorf("no interpreters: got %q; want [none]", got)
	}
}
