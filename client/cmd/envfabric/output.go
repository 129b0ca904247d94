package main

// Human output: tables through text/tabwriter; --json prints the API's answer instead.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envfabric/envfabric/client"
)

// writeRaw prints an answer's JSON as the server sent it, ending in a newline.
func (c *cli) writeRaw(b []byte) {
	c.stdout.Write(b)
	if len(b) == 0 || b[len(b)-1] != '\n' {
		c.stdout.Write([]byte("\n"))
	}
}

// printJSON prints v the way the server formats its answers.
func (c *cli) printJSON(v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		fmt.Fprintf(c.stderr, "envfabric: encoding JSON: %v\n", err)
		return
	}
	c.writeRaw(b)
}

func (c *cli) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
}

func (c *cli) printCreated(r *client.CreatedEnv) {
	fmt.Fprintf(c.stdout, "%s %s: Python %s, revision %d, %s installed\n", r.Status,
		envName(r.WorkflowID, r.NodeID, r.VersionID), r.PythonFullVersion, r.Revision, count(r.PackagesInstalled, "package"))
	for _, h := range r.HostConstraints {
		fmt.Fprintf(c.stdout, "host constraint: %s -> %s\n", h.Requested, h.Applied)
	}
	fmt.Fprintf(c.stdout, "path: %s\n", r.EnvPath)
	if r.BuildID != "" {
		fmt.Fprintf(c.stdout, "build: %s\n", r.BuildID)
	}
}

// namePrefix is a requirement's distribution name (PEP 508: it comes first).
var namePrefix = regexp.MustCompile(`^\s*([A-Za-z0-9][A-Za-z0-9._-]*)`)

var separators = regexp.MustCompile(`[-_.]+`)

// normalize is PEP 503's normal form of a name, the form uv.lock's names have.
func normalize(name string) string {
	return strings.ToLower(separators.ReplaceAllString(name, "-"))
}

func (c *cli) printDeps(r *client.DepsResult) {
	if r.Status != "" {
		fmt.Fprintf(c.stdout, "%s %s: revision %d\n", r.Status, envName(r.WorkflowID, r.NodeID, r.VersionID), r.Revision)
	} else {
		fmt.Fprintf(c.stdout, "%s: revision %d\n", envName(r.WorkflowID, r.NodeID, r.VersionID), r.Revision)
	}
	c.depsTable(r)
}

func (c *cli) printRollback(r *client.RollbackResult) {
	fmt.Fprintf(c.stdout, "rolled back %s to revision %d's files and build: now revision %d\n",
		envName(r.WorkflowID, r.NodeID, r.VersionID), r.RolledBackTo, r.Revision)
	if r.Rebuilt {
		fmt.Fprintf(c.stdout, "rebuilt: that build had been removed and was materialised again from its uv.lock\n")
	}
	c.depsTable(&r.DepsResult)
}

// printDryRun is what a change would do: every locked package it would add, remove or move, and
// the dependencies it would leave.
func (c *cli) printDryRun(verb string, r *client.DryRunResult) {
	fmt.Fprintf(c.stdout, "dry run of %s on %s: %s would change; nothing was changed (revision %d stays current)\n",
		verb, envName(r.WorkflowID, r.NodeID, r.VersionID), count(len(r.Changes), "locked package"), r.Revision)
	if len(r.Changes) > 0 {
		tw := c.table()
		fmt.Fprintln(tw, "PACKAGE\tFROM\tTO\tCHANGE")
		for _, ch := range r.Changes {
			what := "changed"
			switch {
			case ch.From == nil:
				what = "added"
			case ch.To == nil:
				what = "removed"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ch.Name, orDash(ch.From), orDash(ch.To), what)
		}
		tw.Flush()
	}
	deps := strings.Join(r.Dependencies, ", ")
	if deps == "" {
		deps = "(none)"
	}
	fmt.Fprintf(c.stdout, "dependencies after it: %s\n", deps)
	for _, h := range r.HostConstraints {
		fmt.Fprintf(c.stdout, "host constraint: %s -> %s\n", h.Requested, h.Applied)
	}
}

func orDash(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

func (c *cli) printSync(r *client.SyncResult) {
	fmt.Fprintf(c.stdout, "%s %s: revision %d, %s installed\n", r.Status,
		envName(r.WorkflowID, r.NodeID, r.VersionID), r.Revision, count(r.PackagesInstalled, "package"))
	switch {
	case r.Repaired:
		fmt.Fprintf(c.stdout, "repaired: the build was damaged and was replaced by a fresh one (build %s)\n", r.BuildID)
	case r.Rebuilt:
		fmt.Fprintf(c.stdout, "rebuilt: the build was not on disk and was materialised again (build %s)\n", r.BuildID)
	}
}

// depsTable is the deps answer's table and host constraints.
func (c *cli) depsTable(r *client.DepsResult) {
	// One row per locked package; the dependencies (direct) show what was asked for.
	requested := map[string]string{}
	for _, d := range r.Dependencies {
		if m := namePrefix.FindStringSubmatch(d); m != nil {
			requested[normalize(m[1])] = d
		} else {
			requested[d] = d
		}
	}
	names := make([]string, 0, len(r.LockedVersions))
	for n := range r.LockedVersions {
		names = append(names, n)
	}
	for n := range requested {
		if _, ok := r.LockedVersions[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	tw := c.table()
	fmt.Fprintln(tw, "PACKAGE\tLOCKED\tREQUESTED")
	for _, n := range names {
		v, ok := r.LockedVersions[n]
		if !ok {
			v = "-"
		}
		req, direct := requested[n]
		if !direct {
			req = "(dependency)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n, v, req)
	}
	tw.Flush()
	for _, h := range r.HostConstraints {
		fmt.Fprintf(c.stdout, "host constraint: %s -> %s\n", h.Requested, h.Applied)
	}
}

func (c *cli) printStatus(r *client.Status) {
	now := time.Now()
	tw := c.table()
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("environment", envName(r.WorkflowID, r.NodeID, r.VersionID))
	row("state", r.State)
	row("revision", strconv.FormatInt(r.Revision, 10))
	row("python", r.PythonVersion+" ("+r.PythonPath+")")
	row("path", r.EnvPath)
	row("in step", strconv.FormatBool(r.InStep))
	ops := strings.Join(r.Operations, ", ")
	if ops == "" {
		ops = "-"
	}
	row("operations", ops)
	row("created", ago(r.CreatedAt, now))
	row("updated", ago(r.UpdatedAt, now))
	row("last used", ago(r.LastUsedAt, now))
	if r.LastError != "" {
		row("last error", r.LastError)
	}
	if d := r.Disk; d != nil {
		row("disk", fmt.Sprintf("pyproject.toml %s, uv.lock %s, .venv %s, files match revision %s, venv in sync %s, interpreter %s",
			yes(d.HasPyproject), yes(d.HasLock), yes(d.HasVenv), yes(d.FilesMatch), yes(d.VenvInSync), yes(d.InterpreterPresent)))
		row("installed", count(d.PackagesInstalled, "package"))
	}
	if r.DiskError != "" {
		row("disk error", r.DiskError)
	}
	if b := r.Build; b != nil {
		row("build", fmt.Sprintf("%s (%s), %s, shared with %s", b.ID, orValue(b.State, "unrecorded"),
			count(b.PackagesInstalled, "package"), count(b.SharedWith, "other environment")))
		row("build check", buildCheck(b))
		for _, d := range b.Damaged {
			row("damaged", packageDamage(d))
		}
	} else if r.Revision > 0 && r.BuildID == "" {
		row("build", "- (the layout before builds: its own .venv until its next change or sync)")
	}
	tw.Flush()
}

func orValue(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

// buildCheck is what verifying the build against its packages' RECORD files found.
func buildCheck(b *client.Build) string {
	switch {
	case !b.Verified && b.State == "REMOVED":
		return "not verified: the build is not on disk (hibernated; the next run or sync materialises it again)"
	case !b.Verified:
		return "not verified: the build is not complete on disk"
	case b.Intact:
		return fmt.Sprintf("intact (%d files checked against their RECORD)", b.FilesChecked)
	}
	return fmt.Sprintf("DAMAGED: %s with missing or wrong-size files (%d files checked); `envfabric sync` replaces the build",
		count(len(b.Damaged), "package"), b.FilesChecked)
}

// packageDamage is one damaged package: its counts and the first few files.
func packageDamage(d client.PackageDamage) string {
	s := fmt.Sprintf("%s %s: %d missing, %d wrong size", d.Name, d.Version, d.MissingCount, d.WrongSizeCount)
	files := append(append([]string(nil), d.Missing...), d.WrongSize...)
	const shown = 3
	if len(files) > 0 {
		more := ""
		if total := d.MissingCount + d.WrongSizeCount; total > min(len(files), shown) {
			more = fmt.Sprintf(", … %d more", total-min(len(files), shown))
		}
		s += " (" + strings.Join(files[:min(len(files), shown)], ", ") + more + ")"
	}
	return s
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (c *cli) printEnvs(envs []client.EnvView) {
	now := time.Now()
	tw := c.table()
	fmt.Fprintln(tw, "WORKFLOW\tNODE\tVERSION\tSTATE\tPYTHON\tREVISION\tLAST USED")
	for _, e := range envs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.WorkflowID, e.NodeID, e.VersionID, e.State, e.PythonVersion, e.Revision, ago(e.LastUsedAt, now))
	}
	tw.Flush()
}

func (c *cli) printHistory(r *client.History) {
	tw := c.table()
	fmt.Fprintln(tw, "ID\tOPERATION\tSTATUS\tACTOR\tAGENT\tSTARTED\tDURATION\tREVISION\tERROR")
	for _, o := range r.Operations {
		op := o.Operation
		if dry, _ := o.Params["dry_run"].(bool); dry {
			op += " (dry run)"
		}
		// The revision the operation committed (what rollback takes) or ran against.
		rev := "-"
		if n, ok := o.Result["revision"].(float64); ok {
			rev = strconv.FormatInt(int64(n), 10)
		}
		errText := "-"
		if o.ErrorCode != "" {
			errText = o.ErrorCode
		}
		agent := o.Agent
		if agent == "" {
			agent = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.ID, op, o.Status, o.Actor, agent,
			o.StartedAt.Local().Format(time.DateTime), (time.Duration(o.DurationMS) * time.Millisecond).String(), rev, errText)
	}
	tw.Flush()
}

func (c *cli) printAgents(r *client.Agents) {
	fmt.Fprintf(c.stdout, "mode: %s\n", r.Mode)
	if r.FleetID != "" {
		fmt.Fprintf(c.stdout, "fleet: %s (control plane %s; control planes %s)\n", r.FleetID, r.ControlPlane, strings.Join(r.ControlPlanes, ", "))
	}
	tw := c.table()
	fmt.Fprintln(tw, "AGENT\tSTATE\tURL\tVERSION\tSANDBOX\tPYTHONS")
	for _, a := range r.Agents {
		pythons := make([]string, 0, len(a.Interpreters))
		for _, p := range a.Interpreters {
			pythons = append(pythons, p.Version+"="+p.Path)
		}
		sandbox := a.Sandbox
		if sandbox == "" {
			sandbox = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.State, a.URL, a.Version, sandbox, strings.Join(pythons, " "))
	}
	tw.Flush()
	for _, a := range r.Agents {
		if a.Error != "" {
			fmt.Fprintf(c.stdout, "%s: %s\n", a.ID, a.Error)
		}
	}
	for member, why := range r.Refused {
		fmt.Fprintf(c.stdout, "refused %s: %s\n", member, why)
	}
}

func (c *cli) printCleanup(r *client.CleanupResult) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	// BytesFreed is the total of both kinds; each line says its own part.
	var envsFreed int64
	for _, e := range r.Removed {
		envsFreed += e.BytesFreed
	}
	fmt.Fprintf(c.stdout, "%s %s unused for %gh, freeing %s; skipped %d\n", verb, count(len(r.Removed), "environment"), r.IdleHours, humanBytes(envsFreed), len(r.Skipped))
	now := time.Now()
	if len(r.Removed)+len(r.Skipped) > 0 {
		tw := c.table()
		fmt.Fprintln(tw, "WORKFLOW\tNODE\tVERSION\tLAST USED\tOUTCOME")
		for _, e := range r.Removed {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.WorkflowID, e.NodeID, e.VersionID, ago(e.LastUsedAt, now), verb)
		}
		for _, e := range r.Skipped {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tskipped: %s\n", e.WorkflowID, e.NodeID, e.VersionID, ago(e.LastUsedAt, now), e.Reason)
		}
		tw.Flush()
	}
	if len(r.BuildsRemoved)+len(r.BuildsSkipped) == 0 {
		return
	}
	fmt.Fprintf(c.stdout, "%s %s no environment's current revision uses, freeing %s; skipped %d (in all: %s)\n", verb,
		count(len(r.BuildsRemoved), "build"), humanBytes(r.BytesFreed-envsFreed), len(r.BuildsSkipped), humanBytes(r.BytesFreed))
	tw := c.table()
	fmt.Fprintln(tw, "BUILD\tENVIRONMENTS\tLAST USED\tFREED\tOUTCOME")
	for _, b := range r.BuildsRemoved {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", b.BuildID, b.CurrentEnvs, ago(b.LastUsedAt, now), humanBytes(b.BytesFreed), verb)
	}
	for _, b := range r.BuildsSkipped {
		fmt.Fprintf(tw, "%s\t%d\t%s\t-\tskipped: %s\n", b.BuildID, b.CurrentEnvs, ago(b.LastUsedAt, now), b.Reason)
	}
	tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (c *cli) printHolders(name, specifier string, holders []client.PackageHolder) {
	what := name
	if specifier != "" {
		what += " " + specifier
	}
	fmt.Fprintf(c.stdout, "%s: %s\n", what, count(len(holders), "environment"))
	if len(holders) == 0 {
		return
	}
	tw := c.table()
	fmt.Fprintln(tw, "WORKFLOW\tNODE\tVERSION\tINSTALLED\tDIRECT")
	for _, h := range holders {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.WorkflowID, h.NodeID, h.VersionID, h.Version, yes(h.Direct))
	}
	tw.Flush()
}

// severity is an advisory's severity, with the CVSS score it came from when there is one.
func severity(a client.Advisory) string {
	s := orValue(a.Severity, "UNKNOWN")
	if a.CVSSScore > 0 {
		s += fmt.Sprintf(" %.1f", a.CVSSScore)
	}
	return s
}

// advisoryLegend is one line per advisory: its aliases and summary, which the tables leave out.
func (c *cli) advisoryLegend(as []client.Advisory) {
	for _, a := range as {
		line := a.ID + ":"
		if a.Summary != "" {
			line += " " + a.Summary
		}
		if len(a.Aliases) > 0 {
			line += " (" + strings.Join(a.Aliases, ", ") + ")"
		}
		fmt.Fprintln(c.stdout, line)
	}
}

// printVulnerabilities is one row per advisory and environment it hits, then each advisory's
// aliases and summary.
func (c *cli) printVulnerabilities(loaded int, vs []client.FleetVulnerability) {
	fmt.Fprintf(c.stdout, "%s hit the fleet (%d loaded from OSV_DATA)\n", count(len(vs), "advisory"), loaded)
	if len(vs) == 0 {
		if loaded == 0 {
			fmt.Fprintf(c.stdout, "no advisories are loaded: the control plane's OSV_DATA names none\n")
		}
		return
	}
	tw := c.table()
	fmt.Fprintln(tw, "ADVISORY\tSEVERITY\tPACKAGE\tINSTALLED\tFIXED IN\tENVIRONMENT")
	as := make([]client.Advisory, 0, len(vs))
	for _, v := range vs {
		as = append(as, v.Advisory)
		fixed := map[string]string{}
		for _, p := range v.Packages {
			fixed[p.Name] = orValue(strings.Join(p.FixedVersions, ", "), "no fix")
		}
		for _, e := range v.Environments {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, severity(v.Advisory), e.Package, e.Version, orValue(fixed[e.Package], "-"),
				envName(e.WorkflowID, e.NodeID, e.VersionID))
		}
		if more := v.EnvironmentCount - len(v.Environments); more > 0 {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t… %s more (--env-limit)\n", v.ID, severity(v.Advisory), count(more, "environment"))
		}
	}
	tw.Flush()
	c.advisoryLegend(as)
}

func (c *cli) printEnvVulnerabilities(r *client.EnvVulnerabilitiesResult) {
	fmt.Fprintf(c.stdout, "%s: %s\n", envName(r.WorkflowID, r.NodeID, r.VersionID), count(len(r.Vulnerabilities), "known vulnerability"))
	if len(r.Vulnerabilities) == 0 {
		return
	}
	tw := c.table()
	fmt.Fprintln(tw, "ADVISORY\tSEVERITY\tPACKAGE\tINSTALLED\tFIXED IN")
	as := make([]client.Advisory, 0, len(r.Vulnerabilities))
	for _, v := range r.Vulnerabilities {
		as = append(as, v.Advisory)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.ID, severity(v.Advisory), v.Package, v.Version, orValue(strings.Join(v.FixedVersions, ", "), "no fix"))
	}
	tw.Flush()
	c.advisoryLegend(as)
}
