package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		cmd     string
		pos     []string
		check   func(o options) bool // nil: not checked
		help    bool
		wantErr string // a part of the usage error; "" none
	}{
		{name: "create with packages", args: []string{"create", "wf", "n", "numpy>=1.24", "pandas"}, cmd: "create", pos: []string{"wf", "n", "numpy>=1.24", "pandas"},
			check: func(o options) bool { return o.url == defaultURL && o.version == "" }},
		{name: "flags after and between the arguments", args: []string{"create", "wf", "--version", "v2", "n", "six", "--python", "3.12", "-r", "req.txt"},
			cmd: "create", pos: []string{"wf", "n", "six"},
			check: func(o options) bool { return o.version == "v2" && o.python == "3.12" && o.requirements == "req.txt" }},
		{name: "a requirements file alone", args: []string{"create", "wf", "n", "-r", "-"}, cmd: "create", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.requirements == "-" }},
		{name: "common flags before the command", args: []string{"--url", "http://h:1", "--json", "deps", "wf", "n"}, cmd: "deps", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.url == "http://h:1" && o.json }},
		{name: "the URL and token from the environment", args: []string{"agents"}, env: map[string]string{"ENVFABRIC_URL": "http://e:2", "ENVFABRIC_TOKEN": "tok"},
			cmd: "agents", check: func(o options) bool { return o.url == "http://e:2" && o.token == "tok" }},
		{name: "flags win over the environment", args: []string{"agents", "--url=http://f:3", "--token", "t2"}, env: map[string]string{"ENVFABRIC_URL": "http://e:2", "ENVFABRIC_TOKEN": "tok"},
			cmd: "agents", check: func(o options) bool { return o.url == "http://f:3" && o.token == "t2" }},
		{name: "run -c", args: []string{"run", "wf", "n", "-c", "print(1)", "--timeout", "2.5"}, cmd: "run", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.code == "print(1)" && o.timeoutDuration().Seconds() == 2.5 }},
		{name: "run a file", args: []string{"run", "wf", "n", "job.py"}, cmd: "run", pos: []string{"wf", "n", "job.py"}},
		{name: "code that looks like a flag, after --", args: []string{"run", "wf", "n", "--", "-"}, cmd: "run", pos: []string{"wf", "n", "-"}},
		{name: "-c -- is code", args: []string{"run", "wf", "n", "-c", "--", "--json"}, cmd: "run", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.code == "--" && o.json }},
		{name: "remove names", args: []string{"remove", "wf", "n", "numpy", "pandas"}, cmd: "remove", pos: []string{"wf", "n", "numpy", "pandas"}},
		{name: "export -o", args: []string{"export", "wf", "n", "-o", "out", "--force"}, cmd: "export", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.outDir == "out" && o.force }},
		{name: "list of a workflow", args: []string{"list", "--workflow", "wf", "--limit", "5"}, cmd: "list",
			check: func(o options) bool { return o.workflow == "wf" && o.limit == 5 }},
		{name: "history pages", args: []string{"history", "wf", "n", "--before", "40", "--limit", "10"}, cmd: "history", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.before == 40 && o.limit == 10 }},
		{name: "cleanup dry run", args: []string{"cleanup", "--dry-run"}, cmd: "cleanup", check: func(o options) bool { return o.dryRun && !o.idleSet }},
		{name: "cleanup of everything unused now", args: []string{"cleanup", "--idle-hours", "0"}, cmd: "cleanup", check: func(o options) bool { return o.idleSet && o.idleHours == 0 }},
		{name: "add, dry run", args: []string{"add", "wf", "n", "six", "--dry-run"}, cmd: "add", pos: []string{"wf", "n", "six"}, check: func(o options) bool { return o.dryRun }},
		{name: "remove, dry run", args: []string{"remove", "--dry-run", "wf", "n", "six"}, cmd: "remove", pos: []string{"wf", "n", "six"}, check: func(o options) bool { return o.dryRun }},
		{name: "update, dry run", args: []string{"update", "wf", "n", "six", "--dry-run", "--version", "v2"}, cmd: "update", pos: []string{"wf", "n", "six"},
			check: func(o options) bool { return o.dryRun && o.version == "v2" }},
		{name: "rollback", args: []string{"rollback", "wf", "n", "3"}, cmd: "rollback", pos: []string{"wf", "n", "3"}, check: func(o options) bool { return o.revision == 3 }},
		{name: "create from another environment", args: []string{"create", "wf", "copy", "--from", "wf/n"}, cmd: "create", pos: []string{"wf", "copy"},
			check: func(o options) bool { return o.from == "wf/n" }},
		{name: "create from a version", args: []string{"create", "wf", "n", "--version", "v2", "--from", "wf/n/v1"}, cmd: "create", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.from == "wf/n/v1" && o.version == "v2" }},
		{name: "packages with a specifier", args: []string{"packages", "alpha", "--specifier", "<1.1"}, cmd: "packages", pos: []string{"alpha"},
			check: func(o options) bool { return o.specifier == "<1.1" }},
		{name: "the fleet's vulnerabilities, a page", args: []string{"vulnerabilities", "--limit", "2", "--env-limit", "5"}, cmd: "vulnerabilities",
			check: func(o options) bool { return o.limit == 2 && o.envLimit == 5 }},
		{name: "an environment's vulnerabilities", args: []string{"vulnerabilities", "wf", "n"}, cmd: "vulnerabilities", pos: []string{"wf", "n"}},
		{name: "sbom into a file", args: []string{"sbom", "wf", "n", "-o", "bom.json", "--force"}, cmd: "sbom", pos: []string{"wf", "n"},
			check: func(o options) bool { return o.outFile == "bom.json" && o.force }},
		{name: "a command's help", args: []string{"run", "-h"}, cmd: "run", help: true},
		{name: "help COMMAND", args: []string{"help", "export"}, cmd: "export", help: true},
		{name: "the overview", args: []string{"-h"}, help: true},

		{name: "no command", args: nil, wantErr: "no command given"},
		{name: "an unknown command", args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{name: "help of an unknown command", args: []string{"help", "frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{name: "an unknown flag", args: []string{"deps", "wf", "n", "--verbose"}, wantErr: "flag provided but not defined: -verbose"},
		{name: "a flag of another command", args: []string{"deps", "wf", "n", "-c", "x"}, wantErr: "flag provided but not defined: -c"},
		{name: "a flag without its value", args: []string{"deps", "wf", "n", "--version"}, wantErr: "flag needs an argument: -version"},
		{name: "missing NODE", args: []string{"deps", "wf"}, wantErr: "missing NODE"},
		{name: "missing WF", args: []string{"status"}, wantErr: "missing WF"},
		{name: "add without packages", args: []string{"add", "wf", "n"}, wantErr: "missing PKG"},
		{name: "remove without names", args: []string{"remove", "wf", "n"}, wantErr: "missing NAME"},
		{name: "too many arguments", args: []string{"deps", "wf", "n", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "list takes no arguments", args: []string{"list", "wf"}, wantErr: `unexpected argument "wf"`},
		{name: "run without code", args: []string{"run", "wf", "n"}, wantErr: "missing the code: -c CODE or FILE"},
		{name: "run with both", args: []string{"run", "wf", "n", "-c", "x", "job.py"}, wantErr: "not both"},
		{name: "run with two files", args: []string{"run", "wf", "n", "a.py", "b.py"}, wantErr: `unexpected argument "b.py"`},
		{name: "a negative timeout", args: []string{"run", "wf", "n", "-c", "x", "--timeout", "-1"}, wantErr: "--timeout"},
		{name: "a timeout that is not a number", args: []string{"run", "wf", "n", "-c", "x", "--timeout", "soon"}, wantErr: "invalid value"},
		{name: "negative idle hours", args: []string{"cleanup", "--idle-hours", "-2"}, wantErr: "0 or more"},
		{name: "packages without a name", args: []string{"packages"}, wantErr: "missing NAME"},
		{name: "vulnerabilities of a workflow alone", args: []string{"vulnerabilities", "wf"}, wantErr: "missing NODE"},
		{name: "an environment's vulnerabilities have no pages", args: []string{"vulnerabilities", "wf", "n", "--limit", "3"}, wantErr: "no pages"},
		{name: "sbom --force without -o", args: []string{"sbom", "wf", "n", "--force"}, wantErr: "only with -o FILE"},
		{name: "deps has no dry run", args: []string{"deps", "wf", "n", "--dry-run"}, wantErr: "flag provided but not defined: -dry-run"},
		{name: "rollback without a revision", args: []string{"rollback", "wf", "n"}, wantErr: "missing REVISION"},
		{name: "rollback to a revision that is not a number", args: []string{"rollback", "wf", "n", "latest"}, wantErr: `REVISION "latest": want a revision number`},
		{name: "rollback to revision 0", args: []string{"rollback", "wf", "n", "0"}, wantErr: "1 or more"},
		{name: "create from and packages", args: []string{"create", "wf", "n", "six", "--from", "wf/m"}, wantErr: "not both"},
		{name: "create from and a requirements file", args: []string{"create", "wf", "n", "-r", "req.txt", "--from", "wf/m"}, wantErr: "not both"},
		{name: "create from a node alone", args: []string{"create", "wf", "n", "--from", "m"}, wantErr: "want WF/NODE or WF/NODE/VERSION"},
		{name: "create from a path too long", args: []string{"create", "wf", "n", "--from", "a/b/c/d"}, wantErr: "want WF/NODE or WF/NODE/VERSION"},
		{name: "create from an empty node", args: []string{"create", "wf", "n", "--from", "wf//v1"}, wantErr: "want WF/NODE or WF/NODE/VERSION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env = tt.env
			inv, err := parse(tt.args, getenv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v; want a usage error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			name := ""
			if inv.cmd != nil {
				name = inv.cmd.name
			}
			if name != tt.cmd || inv.help != tt.help || !slices.Equal(inv.args, tt.pos) {
				t.Errorf("got %q %q help=%t; want %q %q help=%t", name, inv.args, inv.help, tt.cmd, tt.pos, tt.help)
			}
			if tt.check != nil && !tt.check(inv.opt) {
				t.Errorf("options %+v", inv.opt)
			}
		})
	}
}

// TestExitStatus: what the program prints and how it exits before any request is made.
func TestExitStatus(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		want       int
		wantStdout string
		wantStderr string
	}{
		{name: "the overview", args: []string{"-h"}, want: exitOK, wantStdout: "commands:"},
		{name: "a command's help", args: []string{"export", "-h"}, want: exitOK, wantStdout: "usage: envfabric export WF NODE [flags]"},
		{name: "nothing", args: nil, want: exitUsage, wantStderr: "envfabric: no command given"},
		{name: "a usage error names the command and its usage", args: []string{"run", "wf"}, want: exitUsage,
			wantStderr: "envfabric run: missing NODE\nusage: envfabric run WF NODE (-c CODE | FILE) [flags]"},
		{name: "a URL that is not one", args: []string{"agents", "--url", "127.0.0.1:8080"}, want: exitUsage, wantStderr: "want http://host:port"},
		{name: "a code file that does not exist", args: []string{"run", "wf", "n", "/nonexistent/job.py", "--url", "http://127.0.0.1:1"}, want: exitUsage,
			wantStderr: "reading the code: open /nonexistent/job.py"},
		{name: "nothing listening", args: []string{"agents", "--url", "http://127.0.0.1:1"}, want: exitUnreachable,
			wantStderr: "cannot reach the control plane at http://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(context.Background(), tt.args, func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr)
			if got != tt.want || !strings.Contains(stdout.String(), tt.wantStdout) || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("exit %d; want %d\nstdout: %s\nstderr: %s", got, tt.want, stdout.String(), stderr.String())
			}
		})
	}
}
