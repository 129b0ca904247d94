package main

// Command-line parsing: the commands, their flags and positional arguments. Flags may come before,
// between or after the positional arguments (`envfabric create wf n six --version v2`); "--" ends
// the flags.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envfabric/envfabric/client"
)

const defaultURL = "http://127.0.0.1:8080"

// options holds every flag of every command; each command registers the ones it reads.
type options struct {
	url, token string
	json       bool

	version      string // version_id
	python       string
	requirements string // -r FILE
	code         string // -c CODE
	timeout      float64
	cold         bool
	outDir       string
	force        bool
	workflow     string
	limit        int
	cursor       string
	before       int64
	dryRun       bool
	idleHours    float64
	idleSet      bool
	from         string // create --from WF/NODE[/VERSION]
	specifier    string // packages --specifier
	envLimit     int    // vulnerabilities --env-limit
	outFile      string // sbom -o FILE
	revision     int64  // rollback's REVISION, read by checkArgs
}

// command is one subcommand.
type command struct {
	name    string
	args    string // the positional arguments, for the usage line
	summary string
	min     int // positional arguments: at least min, at most max (-1: any number)
	max     int
	flags   func(fs *flag.FlagSet, o *options)
	run     func(c *cli, inv *invocation) error
}

// invocation is a parsed command line.
type invocation struct {
	cmd  *command
	opt  options
	args []string
	help bool // -h: print the command's help (cmd nil: the overview)
}

// usageError is a command line that cannot be run; it exits with exitUsage.
type usageError struct {
	cmd *command // nil: not a command's
	msg string
}

func (e *usageError) Error() string { return e.msg }

func versionFlag(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.version, "version", "", "the environment's `version_id` (default v1)")
}

// changeFlags are add's, remove's and update's.
func changeFlags(fs *flag.FlagSet, o *options) {
	versionFlag(fs, o)
	fs.BoolVar(&o.dryRun, "dry-run", false, "resolve only and print what would change; change nothing")
}

func commonFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.url, "url", o.url, "the control plane's `URL` (default $ENVFABRIC_URL, else "+defaultURL+")")
	fs.StringVar(&o.token, "token", o.token, "bearer `token` (default $ENVFABRIC_TOKEN)")
	fs.BoolVar(&o.json, "json", o.json, "print the API's JSON answer instead of a table")
}

var commands []*command

func init() {
	// Assigned in init: the commands refer to their run functions, which print help from this list.
	commands = []*command{
		{name: "create", args: "WF NODE [PKG...]", summary: "create an environment with packages (and/or a requirements file)", min: 2, max: -1,
			flags: func(fs *flag.FlagSet, o *options) {
				versionFlag(fs, o)
				fs.StringVar(&o.python, "python", "", "Python `X.Y` (default: the server's DEFAULT_PYTHON)")
				fs.StringVar(&o.requirements, "r", "", "a requirements `FILE` to install (- reads stdin)")
				fs.StringVar(&o.from, "from", "", "make it from another environment, `WF/NODE[/VERSION]`: its files and build, no resolution, no install (no PKG or -r then)")
			}, run: (*cli).create},
		{name: "deps", args: "WF NODE", summary: "list dependencies and every locked version", min: 2, max: 2, flags: versionFlag, run: (*cli).deps},
		{name: "add", args: "WF NODE PKG...", summary: "add packages (uv add; all or nothing)", min: 3, max: -1, flags: changeFlags, run: (*cli).add},
		{name: "remove", args: "WF NODE NAME...", summary: "remove dependencies by name (uv remove; all or nothing)", min: 3, max: -1, flags: changeFlags, run: (*cli).remove},
		{name: "update", args: "WF NODE PKG...", summary: "change specifiers, or upgrade bare names within theirs (all or nothing)", min: 3, max: -1, flags: changeFlags, run: (*cli).update},
		{name: "rollback", args: "WF NODE REVISION", summary: "make an earlier revision's files and build current again, as a new revision", min: 3, max: 3, flags: versionFlag, run: (*cli).rollback},
		{name: "preload", args: "WF NODE [MODULE...]", summary: "set the modules the build's warm interpreter imports before any run (none: clear the list)", min: 2, max: -1, flags: versionFlag, run: (*cli).preload},
		{name: "run", args: "WF NODE (-c CODE | FILE)", summary: "run Python code in the environment; prints its stdout and stderr and exits with its status", min: 2, max: 3,
			flags: func(fs *flag.FlagSet, o *options) {
				versionFlag(fs, o)
				fs.StringVar(&o.code, "c", "", "the `CODE` to run (instead of FILE; FILE - reads stdin)")
				fs.Float64Var(&o.timeout, "timeout", 0, "timeout in `seconds` (default: the server's EXECUTION_TIMEOUT)")
				fs.BoolVar(&o.cold, "cold", false, "a fresh interpreter, even where the agent has a warm one for the build")
			}, run: (*cli).run},
		{name: "export", args: "WF NODE", summary: "write the environment's pyproject.toml and uv.lock into a directory", min: 2, max: 2,
			flags: func(fs *flag.FlagSet, o *options) {
				versionFlag(fs, o)
				fs.StringVar(&o.outDir, "o", "", "the `DIR` to write into (default: the current directory; with --json nothing is written unless -o is given)")
				fs.BoolVar(&o.force, "force", false, "overwrite files that exist")
			}, run: (*cli).export},
		{name: "sync", args: "WF NODE", summary: "rebuild .venv from the recorded uv.lock", min: 2, max: 2, flags: versionFlag, run: (*cli).sync},
		{name: "status", args: "WF NODE", summary: "the recorded state and what the agent sees on disk", min: 2, max: 2, flags: versionFlag, run: (*cli).status},
		{name: "list", args: "", summary: "list environments", min: 0, max: 0,
			flags: func(fs *flag.FlagSet, o *options) {
				fs.StringVar(&o.workflow, "workflow", "", "only this workflow's environments")
				fs.IntVar(&o.limit, "limit", 0, "one page of at most `N` (1-500) instead of every page")
				fs.StringVar(&o.cursor, "cursor", "", "continue from a page's next_cursor")
			}, run: (*cli).list},
		{name: "history", args: "WF NODE", summary: "the environment's operations from the audit, newest first", min: 2, max: 2,
			flags: func(fs *flag.FlagSet, o *options) {
				versionFlag(fs, o)
				fs.IntVar(&o.limit, "limit", 0, "at most `N` (1-500; default the server's 50)")
				fs.Int64Var(&o.before, "before", 0, "operations older than this operation `id` (a page's next_before)")
			}, run: (*cli).history},
		{name: "delete", args: "WF NODE", summary: "delete the environment and its directory", min: 2, max: 2, flags: versionFlag, run: (*cli).delete},
		{name: "packages", args: "NAME", summary: "the environments whose current lock holds a package, and in which version", min: 1, max: 1,
			flags: func(fs *flag.FlagSet, o *options) {
				fs.StringVar(&o.specifier, "specifier", "", "only versions matching this PEP 440 `specifier` (\"<1.1\", \">=2,!=2.0.1\")")
				fs.IntVar(&o.limit, "limit", 0, "one page of at most `N` (1-500) instead of every page")
				fs.StringVar(&o.cursor, "cursor", "", "continue from a page's next_cursor")
			}, run: (*cli).packages},
		{name: "vulnerabilities", args: "[WF NODE]", summary: "the advisories of OSV_DATA that hit the fleet's environments, or one environment", min: 0, max: 2,
			flags: func(fs *flag.FlagSet, o *options) {
				versionFlag(fs, o)
				fs.IntVar(&o.limit, "limit", 0, "the fleet's: one page of at most `N` advisories (1-500) instead of every page")
				fs.StringVar(&o.cursor, "cursor", "", "the fleet's: continue from a page's next_cursor")
				fs.IntVar(&o.envLimit, "env-limit", 0, "the fleet's: list at most `N` environments under each advisory (1-1000; default the server's 20)")
			}, run: (*cli).vulnerabilities},
		{name: "sbom", args: "WF NODE", summary: "the CycloneDX JSON SBOM of the environment's current lock", min: 2, max: 2,
			flags: func(fs *flag.FlagSet, o *options) {
				versionFlag(fs, o)
				fs.StringVar(&o.outFile, "o", "", "write it to `FILE` (default: stdout)")
				fs.BoolVar(&o.force, "force", false, "overwrite FILE if it exists")
			}, run: (*cli).sbom},
		{name: "agents", args: "", summary: "the fabric's agents, their state and interpreters", min: 0, max: 0, run: (*cli).agents},
		{name: "cleanup", args: "", summary: "remove environments unused for CLEANUP_IDLE_HOURS (an admin token)", min: 0, max: 0,
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.dryRun, "dry-run", false, "list what would be removed; remove nothing")
				fs.Func("idle-hours", "remove those unused this many `hours` (default: the server's CLEANUP_IDLE_HOURS; 0: all unused now)", func(s string) error {
					var h float64
					if _, err := fmt.Sscan(s, &h); err != nil || h < 0 {
						return errors.New("want a number of hours, 0 or more")
					}
					o.idleHours, o.idleSet = h, true
					return nil
				})
			}, run: (*cli).cleanup},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// parse reads a command line. The URL and token fall back to ENVFABRIC_URL and ENVFABRIC_TOKEN.
func parse(args []string, getenv func(string) string) (*invocation, error) {
	inv := &invocation{}
	// Flags before the command: the common ones only.
	top := flag.NewFlagSet("envfabric", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	commonFlags(top, &inv.opt)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			inv.help = true
			return inv, nil
		}
		return nil, &usageError{msg: err.Error()}
	}
	rest := top.Args()
	if len(rest) == 0 {
		return nil, &usageError{msg: "no command given"}
	}
	name := rest[0]
	if name == "help" {
		inv.help = true
		if len(rest) > 1 {
			if inv.cmd = lookup(rest[1]); inv.cmd == nil {
				return nil, &usageError{msg: fmt.Sprintf("unknown command %q", rest[1])}
			}
		}
		return inv, nil
	}
	if inv.cmd = lookup(name); inv.cmd == nil {
		return nil, &usageError{msg: fmt.Sprintf("unknown command %q", name)}
	}
	fs := newFlagSet(inv.cmd, &inv.opt)
	pos, err := parseInterspersed(fs, rest[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			inv.help = true
			return inv, nil
		}
		return nil, &usageError{cmd: inv.cmd, msg: err.Error()}
	}
	inv.args = pos
	if err := checkArgs(inv); err != nil {
		return nil, err
	}
	if inv.opt.url == "" {
		inv.opt.url = getenv("ENVFABRIC_URL")
	}
	if inv.opt.url == "" {
		inv.opt.url = defaultURL
	}
	if inv.opt.token == "" {
		inv.opt.token = getenv("ENVFABRIC_TOKEN")
	}
	return inv, nil
}

func newFlagSet(cmd *command, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("envfabric "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are returned and printed once, by the caller
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	commonFlags(fs, o)
	return fs
}

// parseInterspersed parses flags wherever they are among the positional arguments, which it
// returns in order. Everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		consumed := len(args) - fs.NArg()
		rest := fs.Args()
		if consumed > 0 && args[consumed-1] == "--" && !takesValue(fs, args, consumed-1) {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// takesValue reports whether args[i] is the value of the flag before it ("-c --").
func takesValue(fs *flag.FlagSet, args []string, i int) bool {
	if i == 0 {
		return false
	}
	prev := strings.TrimLeft(args[i-1], "-")
	if prev == "" || strings.Contains(prev, "=") || !strings.HasPrefix(args[i-1], "-") {
		return false
	}
	f := fs.Lookup(prev)
	if f == nil {
		return false
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return false
	}
	return true
}

// checkArgs checks the number of positional arguments and the rules between flags.
func checkArgs(inv *invocation) error {
	cmd, n := inv.cmd, len(inv.args)
	fail := func(format string, a ...any) error {
		return &usageError{cmd: cmd, msg: fmt.Sprintf(format, a...)}
	}
	if n < cmd.min {
		want := strings.Fields(cmd.args)
		missing := want[min(n, len(want)-1)]
		return fail("missing %s", strings.Trim(missing, "[].()"))
	}
	if cmd.max >= 0 && n > cmd.max {
		return fail("unexpected argument %q", inv.args[cmd.max])
	}
	o := inv.opt
	switch cmd.name {
	case "run":
		switch {
		case o.code != "" && n == 3:
			return fail("give the code with -c or as FILE, not both")
		case o.code == "" && n == 2:
			return fail("missing the code: -c CODE or FILE")
		}
		if o.timeout < 0 {
			return fail("--timeout: want a positive number of seconds")
		}
	case "create":
		if o.from != "" {
			if n > 2 || o.requirements != "" {
				return fail("give packages (or -r) or --from, not both: an environment made from another takes its packages")
			}
			if _, err := parseEnvRef(o.from); err != nil {
				return fail("--from: %v", err)
			}
		}
	case "vulnerabilities":
		if n == 1 {
			return fail("missing NODE: give WF NODE for one environment, or nothing for the fleet")
		}
		if n == 2 && (o.limit != 0 || o.cursor != "" || o.envLimit != 0) {
			return fail("--limit, --cursor and --env-limit page the fleet's list; one environment's has no pages")
		}
		if o.envLimit < 0 {
			return fail("--env-limit: want a number from 1 to 1000")
		}
	case "sbom":
		if o.force && o.outFile == "" {
			return fail("--force: only with -o FILE")
		}
	case "rollback":
		r, err := strconv.ParseInt(inv.args[2], 10, 64)
		if err != nil || r < 1 {
			return fail("REVISION %q: want a revision number, 1 or more (see `envfabric history`)", inv.args[2])
		}
		inv.opt.revision = r
	}
	return nil
}

// parseEnvRef reads WF/NODE or WF/NODE/VERSION, the way the CLI prints an environment.
func parseEnvRef(s string) (client.Env, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return client.Env{}, fmt.Errorf("%q: want WF/NODE or WF/NODE/VERSION", s)
	}
	e := client.Env{WorkflowID: parts[0], NodeID: parts[1]}
	if len(parts) == 3 {
		e.VersionID = parts[2]
	}
	return e, nil
}

// timeoutDuration is --timeout as a duration (0: the server's default).
func (o options) timeoutDuration() time.Duration {
	return time.Duration(o.timeout * float64(time.Second))
}
