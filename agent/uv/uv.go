// Package uv runs the uv binary for the agent: every call gets the project directory, the
// environment's interpreter, a minimal environment built from configuration (never the agent's
// own), bounded output, SIGINT on cancellation so that uv rolls back its own writes, and failures
// classified into shared/errcode codes.
package uv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/shared/errcode"
)

// PassthroughVars are the variables copied from the agent's own environment into every uv call
// when set there: index, TLS, proxy and Python-discovery settings an operator may need.
var PassthroughVars = []string{
	"UV_INDEX", "UV_INDEX_STRATEGY", "UV_NATIVE_TLS", "UV_COMPILE_BYTECODE", "UV_SYSTEM_CERTS", "UV_HTTP_TIMEOUT", "UV_OFFLINE",
	"UV_PYTHON_INSTALL_DIR", "UV_PYTHON_DOWNLOADS", "UV_PYTHON_PREFERENCE",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
}

// Config is what an Executor needs; the agent's config package fills it.
type Config struct {
	// Bin is the uv binary (an absolute path).
	Bin string
	// CacheDir is UV_CACHE_DIR; LinkMode is UV_LINK_MODE ("hardlink" or "copy").
	CacheDir string
	LinkMode string
	// DefaultIndex is UV_DEFAULT_INDEX, passed on every call when set.
	DefaultIndex string
	// Path and Home are PATH and HOME for uv (where it looks for interpreters).
	Path string
	Home string
	// Passthrough holds the PassthroughVars that were set in the agent's environment at start.
	Passthrough map[string]string
	// NoBuild installs wheels only (UV_NO_BUILD): building a source distribution runs its code
	// with the agent's rights, before any sandbox. A package with no usable wheel then fails with
	// errcode.SourceBuildDisabled.
	NoBuild bool
	// WaitDelay is how long a cancelled uv gets after SIGINT before SIGKILL (default 15s).
	WaitDelay time.Duration
	// OutputLimit bounds the combined output kept from each call (the last bytes; default 64 KiB).
	OutputLimit int
	// Observe, when set, is told the subcommand ("add", "sync", ...), duration and outcome of
	// every uv call, for the metrics.
	Observe func(subcommand string, d time.Duration, err error)
}

// Executor runs uv commands. It is safe for concurrent use; callers serialise work on one project.
type Executor struct {
	cfg    Config
	env    []string
	logger *slog.Logger

	pyMu    sync.Mutex
	pythons map[string]foundPython // version request → a recent positive answer
}

// foundPython is a cached FindPython answer. Resolving costs two process starts (~200 ms), paid
// on every create otherwise; interpreters rarely move, and a cached path is re-checked on use.
type foundPython struct {
	path, full string
	at         time.Time
}

// pythonCacheTTL bounds how long a resolved interpreter is reused without asking uv again.
const pythonCacheTTL = 5 * time.Minute

// New returns an Executor with its environment fixed from cfg.
func New(cfg Config, logger *slog.Logger) *Executor {
	if cfg.WaitDelay <= 0 {
		cfg.WaitDelay = 15 * time.Second
	}
	if cfg.OutputLimit <= 0 {
		cfg.OutputLimit = 64 << 10
	}
	return &Executor{cfg: cfg, env: buildEnv(cfg), logger: logger}
}

// buildEnv makes uv's whole environment: fixed settings, then the configured ones, then the
// pass-through variables, which may override the Python-discovery defaults.
func buildEnv(cfg Config) []string {
	m := map[string]string{
		"PATH":                 cfg.Path,
		"HOME":                 cfg.Home,
		"UV_CACHE_DIR":         cfg.CacheDir,
		"UV_LINK_MODE":         cfg.LinkMode,
		"UV_NO_CONFIG":         "1",
		"UV_PYTHON_DOWNLOADS":  "never",
		"UV_PYTHON_PREFERENCE": "only-system",
		"NO_COLOR":             "1",
		"UV_NO_PROGRESS":       "1",
	}
	if cfg.DefaultIndex != "" {
		m["UV_DEFAULT_INDEX"] = cfg.DefaultIndex
	}
	if cfg.NoBuild {
		m["UV_NO_BUILD"] = "1"
	}
	for k, v := range cfg.Passthrough {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	sort.Strings(env)
	return env
}

// Env is the environment every uv call gets, for logs and tests.
func (e *Executor) Env() []string { return append([]string(nil), e.env...) }

// Project names the project a command works on and the interpreter its .venv is bound to
// (empty: let uv choose from requires-python).
type Project struct {
	Dir    string
	Python string
	// NoSync makes add and remove change pyproject.toml and uv.lock only (--no-sync): no .venv
	// is created or touched, which is how a change resolves in a staging copy.
	NoSync bool
}

// ExitError is a uv command that ran and failed, with what it printed.
type ExitError struct {
	Args     []string
	ExitCode int
	Output   string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("uv %s exited with status %d: %s", strings.Join(e.Args, " "), e.ExitCode, summary(e.Output))
}

// Public says what failed without the command line (its paths and flags are the agent's, for
// its log): the subcommand, its exit status and the heart of uv's output.
func (e *ExitError) Public() string {
	sub := subcommand(e.Args)
	if e.ExitCode < 0 {
		return fmt.Sprintf("uv %s was stopped before it finished: %s", sub, summary(e.Output))
	}
	return fmt.Sprintf("uv %s failed (exit status %d): %s", sub, e.ExitCode, summary(e.Output))
}

// Trim is the part of uv's output that concerns the request: from uv's first error line
// ("error:" or "×") on, without what comes before it (the interpreter found, packages resolved)
// and without uv's hints to pass a flag (`--frozen`, ...), which the fabric chooses, not its
// caller. Output without an error line is kept whole, less those hints.
func Trim(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, l := range lines {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "error:") || strings.HasPrefix(t, "×") {
			lines = lines[i:]
			break
		}
	}
	var kept []string
	inHint := false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "hint:") || strings.HasPrefix(t, "help:"):
			// A hint runs to the next blank line; one that tells the user to pass a flag is dropped.
			inHint = strings.Contains(t, "`--")
		case t == "":
			inHint = false
		}
		if !inHint {
			kept = append(kept, l)
		}
	}
	return strings.TrimSpace(strings.Join(kept, "\n"))
}

// OutputOf returns the uv output carried by err, if any.
func OutputOf(err error) string {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Output
	}
	return ""
}

// Add runs `uv add [--upgrade-package N]... -- pkgs` in p.
func (e *Executor) Add(ctx context.Context, p Project, pkgs, upgrade []string) (string, error) {
	var args []string
	for _, u := range upgrade {
		args = append(args, "--upgrade-package", u)
	}
	if p.NoSync {
		args = append(args, "--no-sync")
	}
	args = append(args, "--")
	args = append(args, pkgs...)
	return e.project(ctx, p, "add", args...)
}

// Remove runs `uv remove -- names` in p.
func (e *Executor) Remove(ctx context.Context, p Project, names []string) (string, error) {
	var args []string
	if p.NoSync {
		args = append(args, "--no-sync")
	}
	args = append(args, "--")
	return e.project(ctx, p, "remove", append(args, names...)...)
}

// Lock runs `uv lock` in p: it resolves pyproject.toml into uv.lock and installs nothing.
func (e *Executor) Lock(ctx context.Context, p Project) (string, error) {
	return e.project(ctx, p, "lock")
}

// Sync runs `uv sync` in p; frozen installs exactly the lock without re-resolving.
func (e *Executor) Sync(ctx context.Context, p Project, frozen bool) (string, error) {
	if frozen {
		return e.project(ctx, p, "sync", "--frozen")
	}
	return e.project(ctx, p, "sync")
}

// InSync reports whether `uv sync --frozen --dry-run` would change nothing in p.
func (e *Executor) InSync(ctx context.Context, p Project) (bool, error) {
	out, err := e.project(ctx, p, "sync", "--frozen", "--dry-run")
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "Would make no changes"), nil
}

func (e *Executor) project(ctx context.Context, p Project, sub string, rest ...string) (string, error) {
	args := []string{sub, "--project", p.Dir}
	if p.Python != "" {
		args = append(args, "--python", p.Python)
	}
	args = append(args, rest...)
	return e.run(ctx, p.Dir, args...)
}

var pythonVersion = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,2}$`)

// FindPython resolves a version request ("3.11", "3.11.7") to an interpreter path with
// `uv python find`, and asks that interpreter for its full version.
func (e *Executor) FindPython(ctx context.Context, version string) (path, fullVersion string, err error) {
	if !pythonVersion.MatchString(version) {
		return "", "", errcode.New(errcode.InvalidRequest, fmt.Sprintf("python version %q: want a version like 3.11 or 3.11.7", version))
	}
	e.pyMu.Lock()
	hit, ok := e.pythons[version]
	e.pyMu.Unlock()
	if ok && time.Since(hit.at) < pythonCacheTTL {
		if _, err := os.Stat(hit.path); err == nil {
			return hit.path, hit.full, nil
		}
	}
	path, fullVersion, err = e.findPython(ctx, version)
	if err == nil {
		e.pyMu.Lock()
		if e.pythons == nil {
			e.pythons = map[string]foundPython{}
		}
		e.pythons[version] = foundPython{path: path, full: fullVersion, at: time.Now()}
		e.pyMu.Unlock()
	}
	return path, fullVersion, err
}

func (e *Executor) findPython(ctx context.Context, version string) (path, fullVersion string, err error) {
	out, err := e.runStdout(ctx, "python", "find", "--no-project", "--", version)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", err
		}
		return "", "", errcode.Wrap(errcode.PythonUnavailable, err, e.noPython(ctx, version))
	}
	path = lastLine(string(out))
	if path == "" {
		return "", "", errcode.New(errcode.PythonUnavailable, e.noPython(ctx, version))
	}
	full, err := e.askVersion(ctx, path)
	return path, full, err
}

// PythonVersion is the full version ("3.11.7") of the interpreter at path, which takes part in a
// build's identity. Answers are kept like FindPython's, keyed by path.
func (e *Executor) PythonVersion(ctx context.Context, path string) (string, error) {
	key := "path:" + path
	e.pyMu.Lock()
	hit, ok := e.pythons[key]
	e.pyMu.Unlock()
	if ok && time.Since(hit.at) < pythonCacheTTL {
		if _, err := os.Stat(path); err == nil {
			return hit.full, nil
		}
	}
	if _, err := os.Stat(path); err != nil {
		return "", errcode.Wrap(errcode.PythonUnavailable, err, fmt.Sprintf("interpreter %s is not on this host", path))
	}
	full, err := e.askVersion(ctx, path)
	if err != nil {
		return "", err
	}
	e.pyMu.Lock()
	if e.pythons == nil {
		e.pythons = map[string]foundPython{}
	}
	e.pythons[key] = foundPython{path: path, full: full, at: time.Now()}
	e.pyMu.Unlock()
	return full, nil
}

// askVersion asks the interpreter at path for its full version.
func (e *Executor) askVersion(ctx context.Context, path string) (string, error) {
	cmd := exec.CommandContext(ctx, path, "-c", "import platform; print(platform.python_version())")
	cmd.Env = []string{"PATH=" + e.cfg.Path}
	ver, err := cmd.Output()
	if err != nil {
		return "", errcode.Wrap(errcode.PythonUnavailable, err, fmt.Sprintf("interpreter %s does not answer", path))
	}
	return strings.TrimSpace(string(ver)), nil
}

// InstallSettings are the settings of this executor that change what an install writes, part of
// a build's identity: two builds of one lock differ when these do.
type InstallSettings struct {
	LinkMode        string
	NoBuild         bool
	CompileBytecode string // UV_COMPILE_BYTECODE as passed through ("" when unset)
}

// InstallSettings returns the executor's install settings.
func (e *Executor) InstallSettings() InstallSettings {
	return InstallSettings{LinkMode: e.cfg.LinkMode, NoBuild: e.cfg.NoBuild, CompileBytecode: e.cfg.Passthrough["UV_COMPILE_BYTECODE"]}
}

// noPython says that no interpreter satisfies version, and which versions this host has.
func (e *Executor) noPython(ctx context.Context, version string) string {
	listed, err := e.ListPythons(ctx)
	if err != nil {
		return fmt.Sprintf("no Python %s on this host", version)
	}
	return fmt.Sprintf("no Python %s on this host; python_version may be one of: %s", version, strings.Join(Minors(listed), ", "))
}

// Minors are the distinct major.minor versions of ps, in version order ("3.9" before "3.11").
func Minors(ps []Python) []string {
	seen := map[[2]int]bool{}
	var vs [][2]int
	for _, p := range ps {
		var v [2]int
		if _, err := fmt.Sscanf(p.Version, "%d.%d", &v[0], &v[1]); err == nil && !seen[v] {
			seen[v] = true
			vs = append(vs, v)
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i][0] < vs[j][0] || vs[i][0] == vs[j][0] && vs[i][1] < vs[j][1] })
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%d.%d", v[0], v[1]))
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

// Python is one interpreter uv can see.
type Python struct {
	Version string `json:"version"`
	Path    string `json:"path"`
}

// ListPythons lists the interpreters installed on this host.
func (e *Executor) ListPythons(ctx context.Context) ([]Python, error) {
	out, err := e.runStdout(ctx, "python", "list", "--only-installed", "--output-format", "json")
	if err != nil {
		return nil, err
	}
	var ps []Python
	if err := json.Unmarshal(out, &ps); err != nil {
		return nil, fmt.Errorf("parse uv python list: %w", err)
	}
	return ps, nil
}

// Offered lists what this host offers environments: first the interpreter preferred (the default
// version) resolves to, then for each minor version uv can see the interpreter `uv python find`
// picks — the paths environments get bound to — then the other paths uv lists (shims and the
// like), each path once.
func (e *Executor) Offered(ctx context.Context, preferred string) []Python {
	var out []Python
	seen := map[string]bool{}
	add := func(version, path string) {
		if path != "" && !seen[path] {
			seen[path] = true
			out = append(out, Python{Version: version, Path: path})
		}
	}
	if path, full, err := e.FindPython(ctx, preferred); err == nil {
		add(full, path)
	}
	listed, _ := e.ListPythons(ctx)
	minors := map[string]bool{}
	for _, p := range listed {
		if parts := strings.SplitN(p.Version, ".", 3); len(parts) >= 2 {
			minors[parts[0]+"."+parts[1]] = true
		}
	}
	for m := range minors {
		if path, full, err := e.FindPython(ctx, m); err == nil {
			add(full, path)
		}
	}
	for _, p := range listed {
		add(p.Version, p.Path)
	}
	return out
}

// Version is uv's version ("0.12.24").
func (e *Executor) Version(ctx context.Context) (string, error) {
	out, err := e.run(ctx, "", "--version")
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return "", fmt.Errorf("unexpected uv --version output %q", out)
	}
	return f[1], nil
}

func (e *Executor) command(ctx context.Context, dir string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.cfg.Bin, args...)
	cmd.Dir = dir
	cmd.Env = e.env
	cmd.Stdin = nil
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	// If the agent dies (kill -9, OOM), uv must die with it: a uv sync left running by a dead
	// agent would keep writing a build that another agent, once the lock is free, replaces.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = e.cfg.WaitDelay
	return cmd
}

// runStdout runs uv and returns stdout alone (for machine-readable output).
func (e *Executor) runStdout(ctx context.Context, args ...string) ([]byte, error) {
	cmd := e.command(ctx, "", args)
	var stdout bytes.Buffer
	stderr := newTail(e.cfg.OutputLimit)
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	if err := e.wait(ctx, cmd, args, stderr); err != nil {
		return nil, err
	}
	return stdout.Bytes(), nil
}

func (e *Executor) run(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := e.command(ctx, dir, args)
	out := newTail(e.cfg.OutputLimit)
	cmd.Stdout = out
	cmd.Stderr = out
	err := e.wait(ctx, cmd, args, out)
	return out.String(), err
}

func (e *Executor) wait(ctx context.Context, cmd *exec.Cmd, args []string, out *tail) error {
	start := time.Now()
	err := cmd.Run()
	e.logger.DebugContext(ctx, "uv", "args", args, "dir", cmd.Dir, "duration", time.Since(start), "err", err)
	if e.cfg.Observe != nil {
		e.cfg.Observe(subcommand(args), time.Since(start), err)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("uv %s: %w", args[0], errors.Join(ctx.Err(), &ExitError{Args: args, ExitCode: -1, Output: out.String()}))
	}
	var xe *exec.ExitError
	if !errors.As(err, &xe) {
		return errcode.Wrap(errcode.UVExecutionError, fmt.Errorf("run uv %s: %w", args[0], err), "")
	}
	ee := &ExitError{Args: args, ExitCode: xe.ExitCode(), Output: out.String()}
	code := Classify(ee.ExitCode, ee.Output)
	if code == errcode.SourceBuildDisabled {
		return errcode.Wrap(code, ee, "this agent installs wheels only (UV_WHEELS_ONLY=true) and a package has no wheel for this platform, only a source distribution, whose build would run its code; "+summary(ee.Output))
	}
	// The message is the failure without the command line; the command line stays in ee.
	return errcode.Wrap(code, ee, ee.Public())
}

// Classify maps a failed uv command's exit status and output to an error code.
func Classify(exitCode int, output string) errcode.Code {
	switch {
	// Before "No solution found": with --no-build a package without a usable wheel makes the
	// resolution fail, and the hint says why; a frozen sync says it per distribution.
	case strings.Contains(output, "building from source is disabled") ||
		strings.Contains(output, "is marked as `--no-build`"):
		return errcode.SourceBuildDisabled
	case exitCode == 1 && (strings.Contains(output, "No solution found") ||
		strings.Contains(output, "is unsatisfiable")):
		return errcode.PackageResolutionFailed
	case strings.Contains(output, "error: Failed to parse: `"):
		return errcode.InvalidPackages
	case strings.Contains(output, "No interpreter found"):
		return errcode.PythonUnavailable
	}
	return errcode.UVExecutionError
}

// summary is the heart of uv's output: from its first error line ("error:" or "×"), a few lines
// joined into one; the last line when there is no error line.
func summary(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "error:") && !strings.HasPrefix(t, "×") {
			continue
		}
		// uv's account is an error line, its causes ("cause: ..." or "Caused by: ...") and their
		// continuation lines; its advice ("hint: ...") follows and is left out.
		var parts []string
		for _, l := range lines[i:min(i+8, len(lines))] {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "hint:") || strings.HasPrefix(l, "help:") {
				break
			}
			if l == "" {
				continue
			}
			cause := false
			for _, p := range []string{"error:", "×", "cause:", "Caused by:", "╰─▶"} {
				if strings.HasPrefix(l, p) {
					l, cause = strings.TrimSpace(strings.TrimPrefix(l, p)), true
				}
			}
			if cause || len(parts) == 0 {
				parts = append(parts, strings.TrimSuffix(l, ":"))
			} else {
				parts[len(parts)-1] += " " + l
			}
		}
		return strings.Join(parts, ": ")
	}
	return lastLine(out)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// tail keeps the last limit bytes written to it.
type tail struct {
	mu    sync.Mutex
	limit int
	buf   []byte
	cut   bool
}

func newTail(limit int) *tail { return &tail{limit: limit} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return "[... earlier output cut ...]\n" + string(t.buf)
	}
	return string(t.buf)
}
