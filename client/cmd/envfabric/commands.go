package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/envfabric/envfabric/client"
)

// cli runs one invocation: its streams, and the client once the command line is parsed.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// stderrTTY: stderr is a terminal, a person reading it. Notes about a run that are not the
	// code's own output (the environment woke first) go there only then, so a script capturing
	// the code's stderr gets exactly the code's bytes.
	stderrTTY bool

	ctx context.Context
	api *client.Client
	inv *invocation
}

// exitStatus ends a command with a status of its own (a run's exit code) without an error message.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// localError is a failure on this side (writing an exported file): exitAPI, its message printed.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func (c *cli) execute(ctx context.Context, inv *invocation) int {
	api, err := client.New(inv.opt.url, client.WithToken(inv.opt.token))
	if err != nil {
		return c.usageFailure(&usageError{cmd: inv.cmd, msg: err.Error()})
	}
	c.ctx, c.api, c.inv = ctx, api, inv
	return c.exitCode(inv.cmd.run(c, inv))
}

// exitCode reports err on stderr (and with --json the API's error body on stdout) and says how
// the program exits.
func (c *cli) exitCode(err error) int {
	var (
		status exitStatus
		apiErr *client.Error
		usage  *usageError
		local  *localError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return int(status)
	case errors.As(err, &usage):
		return c.usageFailure(usage)
	case errors.As(err, &apiErr):
		if c.inv.opt.json && apiErr.Code != "" {
			c.printJSON(map[string]json.RawMessage{"error": apiErr.Body})
		}
		fmt.Fprintf(c.stderr, "envfabric: %s\n", apiErr.Error())
		if out := apiErr.UVOutput(); out != "" && !c.inv.opt.json {
			fmt.Fprintf(c.stderr, "uv said:\n%s\n", strings.TrimRight(out, "\n"))
		}
		if apiErr.Code == "" {
			return exitUnreachable // not the API answering: a proxy, another server
		}
		return exitAPI
	case errors.As(err, &local):
		fmt.Fprintf(c.stderr, "envfabric: %v\n", local.err)
		return exitAPI
	}
	if c.ctx != nil && c.ctx.Err() != nil {
		fmt.Fprintf(c.stderr, "envfabric: interrupted (%v); an operation the control plane admitted runs to its end: see `envfabric history`\n", c.ctx.Err())
		return exitUnreachable
	}
	fmt.Fprintf(c.stderr, "envfabric: cannot reach the control plane at %s: %v\n", c.inv.opt.url, err)
	return exitUnreachable
}

func (c *cli) usageFailure(err error) int {
	var u *usageError
	if !errors.As(err, &u) {
		u = &usageError{msg: err.Error()}
	}
	if u.cmd != nil {
		fmt.Fprintf(c.stderr, "envfabric %s: %s\nusage: envfabric %s\nRun 'envfabric %s -h' for help.\n", u.cmd.name, u.msg, usageLine(u.cmd), u.cmd.name)
	} else {
		fmt.Fprintf(c.stderr, "envfabric: %s\nRun 'envfabric -h' for the commands.\n", u.msg)
	}
	return exitUsage
}

func usageLine(cmd *command) string {
	s := cmd.name
	if cmd.args != "" {
		s += " " + cmd.args
	}
	return s + " [flags]"
}

func (c *cli) printHelp(cmd *command) {
	w := c.stdout
	if cmd == nil {
		fmt.Fprintf(w, "envfabric — the command-line client of Environment Fabric's REST API\n\nusage: envfabric COMMAND [ARGS] [flags]\n\ncommands:\n")
		for _, k := range commands {
			fmt.Fprintf(w, "  %-15s %s\n", k.name, k.summary)
		}
		fmt.Fprintf(w, "\nflags of every command:\n")
		fs := newFlagSet(&command{name: "help"}, &options{})
		fs.SetOutput(w)
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nExit status: 0 success, 1 an API error (its code on stderr), 2 a usage error, 3 the control plane\n"+
			"not reachable; run: the code's own status, 124 past its timeout, 137 killed.\n"+
			"Run 'envfabric COMMAND -h' for a command's flags.\n")
		return
	}
	fmt.Fprintf(w, "usage: envfabric %s\n\n%s.\n\nflags:\n", usageLine(cmd), cmd.summary)
	fs := newFlagSet(cmd, &options{})
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func (c *cli) env() client.Env {
	return client.Env{WorkflowID: c.inv.args[0], NodeID: c.inv.args[1], VersionID: c.inv.opt.version}
}

// readInput reads a file named on the command line, "-" being stdin. A file that cannot be read is
// a usage error: nothing was sent.
func (c *cli) readInput(what, name string) (string, error) {
	var (
		b   []byte
		err error
	)
	if name == "-" {
		b, err = io.ReadAll(c.stdin)
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return "", &usageError{cmd: c.inv.cmd, msg: fmt.Sprintf("reading %s: %v", what, err)}
	}
	return string(b), nil
}

// answered prints a result: its JSON with --json, else what human does.
func (c *cli) answered(r interface{ JSON() json.RawMessage }, human func()) error {
	if c.inv.opt.json {
		c.writeRaw(r.JSON())
		return nil
	}
	human()
	return nil
}

func (c *cli) create(inv *invocation) error {
	req := client.CreateRequest{WorkflowID: inv.args[0], NodeID: inv.args[1], VersionID: inv.opt.version,
		PythonVersion: inv.opt.python, Packages: inv.args[2:]}
	if inv.opt.from != "" {
		from, err := parseEnvRef(inv.opt.from) // checked by checkArgs
		if err != nil {
			return &usageError{cmd: inv.cmd, msg: "--from: " + err.Error()}
		}
		req.From = &from
	}
	if inv.opt.requirements != "" {
		text, err := c.readInput("the requirements file", inv.opt.requirements)
		if err != nil {
			return err
		}
		req.Requirements = text
	}
	r, err := c.api.Create(c.ctx, req)
	if err != nil {
		return err
	}
	return c.answered(r, func() {
		c.printCreated(r)
		if req.From != nil {
			fmt.Fprintf(c.stdout, "from: %s, its files and build (no resolution, no install)\n", req.From)
		}
	})
}

func (c *cli) deps(inv *invocation) error {
	r, err := c.api.Deps(c.ctx, c.env())
	if err != nil {
		return err
	}
	return c.answered(r, func() { c.printDeps(r) })
}

// change is add, remove or update: the change, or with --dry-run its preview.
type change struct {
	do      func(context.Context, client.Env, []string) (*client.DepsResult, error)
	preview func(context.Context, client.Env, []string) (*client.DryRunResult, error)
	verb    string // what the preview says the change would do: "add", "remove", "update"
}

func (c *cli) mutation(ch change) error {
	if c.inv.opt.dryRun {
		r, err := ch.preview(c.ctx, c.env(), c.inv.args[2:])
		if err != nil {
			return err
		}
		return c.answered(r, func() { c.printDryRun(ch.verb, r) })
	}
	r, err := ch.do(c.ctx, c.env(), c.inv.args[2:])
	if err != nil {
		return err
	}
	return c.answered(r, func() { c.printDeps(r) })
}

func (c *cli) add(inv *invocation) error {
	return c.mutation(change{do: c.api.Add, preview: c.api.AddDryRun, verb: "add"})
}

func (c *cli) remove(inv *invocation) error {
	return c.mutation(change{do: c.api.Remove, preview: c.api.RemoveDryRun, verb: "remove"})
}

func (c *cli) update(inv *invocation) error {
	return c.mutation(change{do: c.api.Update, preview: c.api.UpdateDryRun, verb: "update"})
}

func (c *cli) rollback(inv *invocation) error {
	r, err := c.api.Rollback(c.ctx, c.env(), inv.opt.revision)
	if err != nil {
		return err
	}
	return c.answered(r, func() { c.printRollback(r) })
}

func (c *cli) preload(inv *invocation) error {
	r, err := c.api.SetPreload(c.ctx, c.env(), inv.args[2:])
	if err != nil {
		return err
	}
	return c.answered(r, func() {
		if len(r.Preload) == 0 {
			fmt.Fprintf(c.stdout, "%s/%s/%s preloads nothing of its own (the agent still preloads its direct dependencies)\n", r.WorkflowID, r.NodeID, r.VersionID)
			return
		}
		fmt.Fprintf(c.stdout, "%s/%s/%s preloads: %s\n", r.WorkflowID, r.NodeID, r.VersionID, strings.Join(r.Preload, " "))
	})
}

func (c *cli) run(inv *invocation) error {
	code := inv.opt.code
	if len(inv.args) == 3 {
		var err error
		if code, err = c.readInput("the code", inv.args[2]); err != nil {
			return err
		}
	}
	r, err := c.api.Run(c.ctx, c.env(), client.RunRequest{Code: code, Timeout: inv.opt.timeoutDuration(), Cold: inv.opt.cold})
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		if partial, ok := apiErr.RunTimeout(); ok {
			// What the code printed before it was killed, then why it stopped.
			if inv.opt.json {
				c.printJSON(map[string]json.RawMessage{"error": apiErr.Body})
			} else {
				c.stdout.Write(partial.Stdout)
				c.stderr.Write(partial.Stderr)
			}
			fmt.Fprintf(c.stderr, "envfabric: %s (killed after %.1f s)\n", apiErr.Error(), float64(partial.DurationMS)/1000)
			return exitStatus(exitTimeout)
		}
	}
	if err != nil {
		return err
	}
	if inv.opt.json {
		c.writeRaw(r.JSON())
	} else {
		// Byte for byte: the code's output is the command's output.
		c.stdout.Write(r.Stdout)
		c.stderr.Write(r.Stderr)
		if r.Woke && c.stderrTTY {
			fmt.Fprintf(c.stderr, "envfabric: %s was hibernated: its build was materialised again before the run\n", c.env())
		}
	}
	if r.StdoutTruncated || r.StderrTruncated {
		fmt.Fprintf(c.stderr, "envfabric: output cut at the fabric's RUN_MAX_OUTPUT_BYTES (stdout truncated: %t, stderr truncated: %t)\n", r.StdoutTruncated, r.StderrTruncated)
	}
	switch {
	case r.ExitCode >= 0 && r.ExitCode <= 255:
		return exitStatus(r.ExitCode)
	case r.ExitReason == "memory":
		fmt.Fprintf(c.stderr, "envfabric: the run passed its memory bound and was killed\n")
	default:
		fmt.Fprintf(c.stderr, "envfabric: the code was killed (%s, exit code %d)\n", r.ExitReason, r.ExitCode)
	}
	return exitStatus(exitKilled)
}

func (c *cli) export(inv *invocation) error {
	r, err := c.api.Export(c.ctx, c.env())
	if err != nil {
		return err
	}
	if inv.opt.json {
		c.writeRaw(r.JSON())
		if inv.opt.outDir == "" {
			return nil
		}
	}
	dir := inv.opt.outDir
	if dir == "" {
		dir = "."
	}
	files := []struct{ name, text string }{{"pyproject.toml", r.PyprojectTOML}, {"uv.lock", r.UvLock}}
	if !inv.opt.force {
		// Both or neither: check before writing either.
		for _, f := range files {
			p := filepath.Join(dir, f.name)
			if _, err := os.Lstat(p); err == nil {
				return &localError{fmt.Errorf("%s exists; pass --force to overwrite it, or -o another directory", p)}
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return &localError{fmt.Errorf("making %s: %w", dir, err)}
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), []byte(f.text)); err != nil {
			return &localError{err}
		}
	}
	if !inv.opt.json {
		fmt.Fprintf(c.stdout, "wrote %s and %s (%s, revision %d)\n", filepath.Join(dir, "pyproject.toml"),
			filepath.Join(dir, "uv.lock"), envName(r.WorkflowID, r.NodeID, r.VersionID), r.Revision)
	}
	return nil
}

// writeFileAtomic writes through a temporary file renamed into place, so an interrupted export
// leaves the old file or the new one, never half of one.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func (c *cli) sync(inv *invocation) error {
	r, err := c.api.Sync(c.ctx, c.env())
	if err != nil {
		return err
	}
	return c.answered(r, func() { c.printSync(r) })
}

func (c *cli) status(inv *invocation) error {
	r, err := c.api.Status(c.ctx, c.env())
	if err != nil {
		return err
	}
	return c.answered(r, func() { c.printStatus(r) })
}

func (c *cli) list(inv *invocation) error {
	opt := client.ListOptions{WorkflowID: inv.opt.workflow, Limit: inv.opt.limit, Cursor: inv.opt.cursor}
	if inv.opt.limit > 0 || inv.opt.cursor != "" {
		// One page, as the API answers it.
		r, err := c.api.List(c.ctx, opt)
		if err != nil {
			return err
		}
		return c.answered(r, func() {
			c.printEnvs(r.Environments)
			if r.NextCursor != "" {
				fmt.Fprintf(c.stderr, "more: envfabric list --cursor %s\n", r.NextCursor)
			}
		})
	}
	opt.Limit = 500
	all, err := c.api.ListAll(c.ctx, opt)
	if err != nil {
		return err
	}
	if inv.opt.json {
		// Every page in the API's list shape, without a cursor: there is no next page.
		c.printJSON(struct {
			Environments []client.EnvView `json:"environments"`
		}{Environments: nonNil(all)})
		return nil
	}
	c.printEnvs(all)
	return nil
}

func (c *cli) history(inv *invocation) error {
	r, err := c.api.Operations(c.ctx, c.env(), client.OperationsOptions{Limit: inv.opt.limit, Before: inv.opt.before})
	if err != nil {
		return err
	}
	return c.answered(r, func() {
		c.printHistory(r)
		if r.NextBefore != 0 {
			fmt.Fprintf(c.stderr, "more: envfabric history %s %s --before %d\n", r.WorkflowID, r.NodeID, r.NextBefore)
		}
	})
}

func (c *cli) delete(inv *invocation) error {
	r, err := c.api.Delete(c.ctx, c.env())
	if err != nil {
		return err
	}
	return c.answered(r, func() {
		fmt.Fprintf(c.stdout, "%s %s: freed %s\n", r.Status, envName(r.WorkflowID, r.NodeID, r.VersionID), humanBytes(r.BytesFreed))
	})
}

func (c *cli) packages(inv *invocation) error {
	opt := client.HoldersOptions{Specifier: inv.opt.specifier, Limit: inv.opt.limit, Cursor: inv.opt.cursor}
	name := inv.args[0]
	if inv.opt.limit > 0 || inv.opt.cursor != "" {
		r, err := c.api.Holders(c.ctx, name, opt)
		if err != nil {
			return err
		}
		return c.answered(r, func() {
			c.printHolders(r.Name, r.Specifier, r.Environments)
			if r.NextCursor != "" {
				spec := ""
				if inv.opt.specifier != "" {
					spec = " --specifier '" + inv.opt.specifier + "'"
				}
				fmt.Fprintf(c.stderr, "more: envfabric packages %s%s --cursor %s\n", name, spec, r.NextCursor)
			}
		})
	}
	// Every page; the first one's answer gives the normalised name.
	opt.Limit = 500
	first, err := c.api.Holders(c.ctx, name, opt)
	if err != nil {
		return err
	}
	all := first.Environments
	if first.NextCursor != "" {
		opt.Cursor = first.NextCursor
		rest, err := c.api.HoldersAll(c.ctx, name, opt)
		if err != nil {
			return err
		}
		all = append(all, rest...)
	}
	if inv.opt.json {
		// Every page in the API's shape, without a cursor: there is no next page.
		c.printJSON(struct {
			Name         string                 `json:"name"`
			Specifier    string                 `json:"specifier"`
			Environments []client.PackageHolder `json:"environments"`
		}{first.Name, first.Specifier, nonNil(all)})
		return nil
	}
	c.printHolders(first.Name, first.Specifier, all)
	return nil
}

func (c *cli) vulnerabilities(inv *invocation) error {
	if len(inv.args) == 2 {
		r, err := c.api.EnvVulnerabilities(c.ctx, c.env())
		if err != nil {
			return err
		}
		return c.answered(r, func() { c.printEnvVulnerabilities(r) })
	}
	opt := client.VulnerabilitiesOptions{Limit: inv.opt.limit, EnvLimit: inv.opt.envLimit, Cursor: inv.opt.cursor}
	if inv.opt.limit > 0 || inv.opt.cursor != "" {
		r, err := c.api.Vulnerabilities(c.ctx, opt)
		if err != nil {
			return err
		}
		return c.answered(r, func() {
			c.printVulnerabilities(r.AdvisoriesLoaded, r.Vulnerabilities)
			if r.NextCursor != "" {
				fmt.Fprintf(c.stderr, "more: envfabric vulnerabilities --cursor %s\n", r.NextCursor)
			}
		})
	}
	opt.Limit = 500
	var (
		all    []client.FleetVulnerability
		loaded int
	)
	for {
		page, err := c.api.Vulnerabilities(c.ctx, opt)
		if err != nil {
			return err
		}
		all, loaded = append(all, page.Vulnerabilities...), page.AdvisoriesLoaded
		if page.NextCursor == "" || page.NextCursor == opt.Cursor {
			break
		}
		opt.Cursor = page.NextCursor
	}
	if inv.opt.json {
		c.printJSON(struct {
			AdvisoriesLoaded int                         `json:"advisories_loaded"`
			Vulnerabilities  []client.FleetVulnerability `json:"vulnerabilities"`
		}{loaded, nonNil(all)})
		return nil
	}
	c.printVulnerabilities(loaded, all)
	return nil
}

func (c *cli) sbom(inv *invocation) error {
	doc, err := c.api.SBOM(c.ctx, c.env())
	if err != nil {
		return err
	}
	if inv.opt.outFile == "" {
		c.writeRaw(doc)
		return nil
	}
	if !inv.opt.force {
		if _, err := os.Lstat(inv.opt.outFile); err == nil {
			return &localError{fmt.Errorf("%s exists; pass --force to overwrite it", inv.opt.outFile)}
		}
	}
	if err := writeFileAtomic(inv.opt.outFile, append(doc, '\n')); err != nil {
		return &localError{err}
	}
	if !inv.opt.json {
		fmt.Fprintf(c.stdout, "wrote %s (%s)\n", inv.opt.outFile, c.env())
	}
	return nil
}

func (c *cli) agents(inv *invocation) error {
	r, err := c.api.Agents(c.ctx)
	if err != nil {
		return err
	}
	return c.answered(r, func() { c.printAgents(r) })
}

func (c *cli) cleanup(inv *invocation) error {
	req := client.CleanupRequest{DryRun: inv.opt.dryRun}
	if inv.opt.idleSet {
		h := inv.opt.idleHours
		req.IdleHours = &h
	}
	r, err := c.api.Cleanup(c.ctx, req)
	if err != nil {
		return err
	}
	return c.answered(r, func() { c.printCleanup(r) })
}

// count is "1 package", "2 packages", "2 advisories".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func envName(wf, node, version string) string { return wf + "/" + node + "/" + version }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ago is how long before now t was, for tables.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return t.Format(time.RFC3339)
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
