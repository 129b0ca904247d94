package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCommandsOnTheWire: what the new commands send and print, against a server that answers as
// the API does. The real API is TestCLIBuilds' (controlplane/e2e).
func TestCommandsOnTheWire(t *testing.T) {
	type request struct{ method, path, query, body string }
	var got request
	answer := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = request{r.Method, r.URL.Path, r.URL.RawQuery, string(b)}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answer)
	}))
	defer srv.Close()

	const dryRun = `{"workflow_id": "wf", "node_id": "n", "version_id": "v1", "dry_run": true, "revision": 2, "operation_id": 7,
		"dependencies": ["alpha>=2"], "locked_versions": {"alpha": "2.0.0"}, "changes": [{"name": "alpha", "from": "1.0.0", "to": "2.0.0"}]}`
	const run = `{"workflow_id": "wf", "node_id": "n", "version_id": "v1", "stdout": "hi\n", "stdout_encoding": "utf-8",
		"stderr": "", "stderr_encoding": "utf-8", "exit_code": 0, "exit_reason": "exited", "revision": 2, "woke": true}`
	tests := []struct {
		name       string
		args       []string
		tty        bool
		answer     string
		want       request
		wantStdout string // a part of stdout
		wantStderr string // stderr exactly
	}{
		{name: "add --dry-run", args: []string{"add", "wf", "n", "alpha>=2", "--dry-run"}, answer: dryRun,
			want:       request{"POST", "/envs/wf/n/deps", "", `{"packages":["alpha>=2"],"dry_run":true}`},
			wantStdout: "dry run of add on wf/n/v1: 1 locked package would change"},
		{name: "remove --dry-run", args: []string{"remove", "wf", "n", "alpha", "--dry-run", "--version", "v2"}, answer: dryRun,
			want:       request{"DELETE", "/envs/wf/n/deps", "version_id=v2", `{"packages":["alpha"],"dry_run":true}`},
			wantStdout: "alpha    1.0.0  2.0.0  changed"},
		{name: "update --dry-run --json", args: []string{"update", "wf", "n", "alpha", "--dry-run", "--json"}, answer: dryRun,
			want: request{"PUT", "/envs/wf/n/deps", "", `{"packages":["alpha"],"dry_run":true}`}, wantStdout: dryRun},
		{name: "add without --dry-run sends none", args: []string{"add", "wf", "n", "six"},
			answer: `{"workflow_id": "wf", "node_id": "n", "version_id": "v1", "status": "added", "revision": 3, "locked_versions": {"six": "1.0"}}`,
			want:   request{"POST", "/envs/wf/n/deps", "", `{"packages":["six"]}`}, wantStdout: "added wf/n/v1: revision 3"},
		{name: "rollback", args: []string{"rollback", "wf", "n", "1"},
			answer: `{"workflow_id": "wf", "node_id": "n", "version_id": "v1", "status": "rolled_back", "revision": 5, "rolled_back_to": 1, "rebuilt": true,
				"dependencies": ["alpha==1.0.0"], "locked_versions": {"alpha": "1.0.0"}}`,
			want:       request{"POST", "/envs/wf/n/rollback", "", `{"revision":1}`},
			wantStdout: "rolled back wf/n/v1 to revision 1's files and build: now revision 5\nrebuilt: "},
		{name: "preload", args: []string{"preload", "wf", "n", "numpy", "pandas"},
			answer:     `{"workflow_id": "wf", "node_id": "n", "version_id": "v1", "preload": ["numpy", "pandas"], "operation_id": 7}`,
			want:       request{"PUT", "/envs/wf/n/preload", "", `{"modules":["numpy","pandas"]}`},
			wantStdout: "wf/n/v1 preloads: numpy pandas\n"},
		{name: "preload with no module clears", args: []string{"preload", "wf", "n", "--version", "v2"},
			answer:     `{"workflow_id": "wf", "node_id": "n", "version_id": "v2", "preload": [], "operation_id": 8}`,
			want:       request{"PUT", "/envs/wf/n/preload", "version_id=v2", `{"modules":[]}`},
			wantStdout: "wf/n/v2 preloads nothing of its own"},
		{name: "create --from", args: []string{"create", "wf", "copy", "--from", "wf/n/v2"},
			answer:     `{"workflow_id": "wf", "node_id": "copy", "version_id": "v1", "status": "created", "revision": 1, "build_id": "b1"}`,
			want:       request{"POST", "/envs", "", `{"workflow_id":"wf","node_id":"copy","from":{"workflow_id":"wf","node_id":"n","version_id":"v2"}}`},
			wantStdout: "build: b1\nfrom: wf/n/v2, its files and build (no resolution, no install)\n"},
		{name: "run --cold asks for a fresh interpreter", args: []string{"run", "wf", "n", "--cold", "-c", "print('hi')"}, answer: run,
			want: request{"POST", "/envs/wf/n/run", "", `{"code":"print('hi')","warm":false}`}, wantStdout: "hi\n"},
		{name: "a run that woke, stderr a file: the code's stderr only", args: []string{"run", "wf", "n", "-c", "print('hi')"}, answer: run,
			want: request{"POST", "/envs/wf/n/run", "", `{"code":"print('hi')"}`}, wantStdout: "hi\n"},
		{name: "a run that woke, stderr a terminal: said there", args: []string{"run", "wf", "n", "-c", "print('hi')"}, tty: true, answer: run,
			want: request{"POST", "/envs/wf/n/run", "", `{"code":"print('hi')"}`}, wantStdout: "hi\n",
			wantStderr: "envfabric: wf/n/v1 was hibernated: its build was materialised again before the run\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			answer = tt.answer
			inv, err := parse(append(tt.args, "--url", srv.URL), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			c := &cli{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, stderrTTY: tt.tty}
			if code := c.execute(context.Background(), inv); code != 0 {
				t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
			}
			if got != tt.want {
				t.Errorf("sent %+v\nwant %+v", got, tt.want)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) || stderr.String() != tt.wantStderr {
				t.Errorf("stdout:\n%s\nstderr:\n%s\nwant stdout with %q, stderr %q", stdout.String(), stderr.String(), tt.wantStdout, tt.wantStderr)
			}
		})
	}
}
