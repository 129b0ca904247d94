// Package agentclient is the control plane's side of the agent RPCs: it implements envs.Agent
// over Connect and turns the agent's errors back into error codes. It is the only control-plane
// package that imports the generated proto.
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/envfabric/envfabric/controlplane/envs"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1/agentv1connect"
	"github.com/envfabric/envfabric/shared/agentauth"
	sharedconfig "github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/fleettls"
)

// Client talks to one agent.
type Client struct {
	name  string
	url   string
	token string
	http  *http.Client
	rpc   agentv1connect.AgentServiceClient
}

// Option says how a client reaches its agent.
type Option func(*dialing)

type dialing struct {
	tls            *fleettls.Source
	allowPlaintext bool
}

// WithTLS reaches https:// agents over mutual TLS with src's material, reloaded as it changes.
func WithTLS(src *fleettls.Source) Option { return func(d *dialing) { d.tls = src } }

// AllowPlaintext lets the client reach http:// agents beyond loopback (AGENT_ALLOW_PLAINTEXT).
func AllowPlaintext(allow bool) Option { return func(d *dialing) { d.allowPlaintext = allow } }

// New returns a client for the agent at url, authenticating with token when it is set.
func New(url, token string, opts ...Option) *Client {
	var d dialing
	for _, o := range opts {
		o(&d)
	}
	var opt []connect.ClientOption
	if token != "" {
		opt = append(opt, connect.WithInterceptors(agentauth.ClientInterceptor(token)))
	}
	hc := httpClient(d)
	return &Client{name: url, url: url, token: token, http: hc, rpc: agentv1connect.NewAgentServiceClient(hc, url, opt...)}
}

func httpClient(d dialing) *http.Client {
	base := &http.Transport{
		Proxy:               nil, // agents are reached directly, never through an HTTP proxy
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	var rt http.RoundTripper = base
	if d.tls != nil {
		base.DialTLSContext = d.tls.DialTLSContext(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second})
		rt = d.tls.Transport(base)
	}
	return &http.Client{Transport: &schemePolicy{next: rt, d: d}}
}

// schemePolicy refuses what the client cannot do safely: plaintext to an agent beyond loopback
// (the token and the code would cross the network in the clear) unless allowed, and TLS without
// the fleet's material (there would be nothing to verify the agent with).
type schemePolicy struct {
	next http.RoundTripper
	d    dialing
}

func (p *schemePolicy) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case req.URL.Scheme == "https" && p.d.tls == nil:
		return nil, fmt.Errorf("agent %s speaks TLS and this control plane has no fleet certificate: set FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA", req.URL.Host)
	case req.URL.Scheme == "http" && !p.d.allowPlaintext && !sharedconfig.IsLoopback(req.URL.Hostname()):
		return nil, fmt.Errorf("refusing plaintext to agent %s beyond loopback: give it FLEET_TLS_* (an https:// AGENT_URL or AGENT_ADVERTISE_URL), or set AGENT_ALLOW_PLAINTEXT=true", req.URL.Host)
	}
	return p.next.RoundTrip(req)
}

// Named returns a client for the agent whose fleet id is name, reached at url.
func Named(name, url, token string, opts ...Option) *Client {
	c := New(url, token, opts...)
	c.name = name
	return c
}

// URL is the agent's Connect address.
func (c *Client) URL() string { return c.url }

var _ envs.Agent = (*Client)(nil)

// Name identifies the agent in the audit.
func (c *Client) Name() string { return c.name }

func ref(k envid.Key) *agentv1.EnvRef {
	return &agentv1.EnvRef{WorkflowId: k.WorkflowID, NodeId: k.NodeID, VersionId: k.VersionID}
}

func files(f envs.Files) *agentv1.ProjectFiles {
	return &agentv1.ProjectFiles{PyprojectToml: f.PyprojectTOML, UvLock: f.UvLock}
}

func fromFiles(f *agentv1.ProjectFiles) envs.Files {
	return envs.Files{PyprojectTOML: f.GetPyprojectToml(), UvLock: f.GetUvLock()}
}

// maxUVOutput bounds the uv output copied into an API error.
const maxUVOutput = 4000

// mapErr turns an RPC failure into an *envs.AgentError when the agent said what went wrong, and
// into an *errcode.Error when it could not say (unreachable, refused, timed out).
func (c *Client) mapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if cert := certificateError(c.url, err); cert != nil {
		return errcode.Wrap(errcode.AgentUnavailable, cert, fmt.Sprintf("%v (%s)", cert, what))
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		// Nothing listens at the agent's address: the call never reached it (envs may retry it).
		return errcode.Wrap(errcode.AgentUnavailable, fmt.Errorf("%w: %w", envs.ErrNotStarted, err),
			fmt.Sprintf("agent %s: %s: the agent refused the connection (it is not running)", c.url, what))
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return errcode.Wrap(errcode.AgentUnavailable, err, fmt.Sprintf("agent %s: %s: %v", c.url, what, err))
	}
	var (
		agentErr *envs.AgentError
		detail   string // the agent's whole account, for the logs and the audit
	)
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		switch det := v.(type) {
		case *agentv1.ErrorDetail:
			if !codeOf(det.GetErrorCode()).Known() {
				continue
			}
			agentErr = &envs.AgentError{Code: codeOf(det.GetErrorCode()), Message: ce.Message(), Agent: c.name, Err: err}
			if out := strings.TrimSpace(det.GetUvOutput()); out != "" {
				if len(out) > maxUVOutput {
					out = "…" + out[len(out)-maxUVOutput:]
				}
				agentErr.UVOutput = out
			}
		case *wrapperspb.StringValue:
			detail = det.GetValue()
		}
	}
	if agentErr != nil {
		agentErr.Detail = detail
		return agentErr
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeUnknown:
		return errcode.Wrap(errcode.AgentUnavailable, err, fmt.Sprintf("agent %s: %s: %v", c.url, what, ce.Message()))
	case connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return errcode.Wrap(errcode.UVExecutionError, err, fmt.Sprintf("agent %s: %s did not finish in time: %v", c.url, what, ce.Message()))
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		return errcode.Wrap(errcode.AgentUnavailable, err, fmt.Sprintf("agent %s refused the control plane's credentials (check AGENT_TOKEN on both)", c.url))
	}
	return errcode.Wrap(errcode.UVExecutionError, err, fmt.Sprintf("agent %s: %s: %v", c.url, what, ce.Message()))
}

// codeOf is the errcode of an agent's ErrorCode: ERROR_CODE_<code> is <code>. Unspecified (an
// agent that did not say) is not a known code.
func codeOf(c agentv1.ErrorCode) errcode.Code {
	if c == agentv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return ""
	}
	return errcode.Code(strings.TrimPrefix(c.String(), "ERROR_CODE_"))
}

var lockKinds = map[envs.MutationKind]agentv1.LockKind{
	envs.CreateLock: agentv1.LockKind_LOCK_KIND_CREATE,
	envs.Add:        agentv1.LockKind_LOCK_KIND_ADD,
	envs.Remove:     agentv1.LockKind_LOCK_KIND_REMOVE,
	envs.Update:     agentv1.LockKind_LOCK_KIND_UPDATE,
}

// Lock implements envs.Agent.
func (c *Client) Lock(ctx context.Context, r envs.LockRequest) (envs.Locked, error) {
	req := &agentv1.LockRequest{Env: ref(r.Key), Kind: lockKinds[r.Kind], PythonPath: r.PythonPath, PythonVersion: r.PythonVersion,
		Packages: r.Packages, UpgradePackages: r.Upgrade, OperationId: r.OperationID}
	if r.Kind != envs.CreateLock {
		req.Base = files(r.Base)
	}
	resp, err := c.rpc.Lock(ctx, connect.NewRequest(req))
	if err != nil {
		return envs.Locked{}, c.mapErr("resolving", err)
	}
	m := resp.Msg
	return envs.Locked{Files: fromFiles(m.GetFiles()), PythonPath: m.GetPythonPath(), PythonFullVersion: m.GetPythonFullVersion()}, nil
}

func unixMs(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func buildOf(b *agentv1.BuildInfo) envs.Build {
	return envs.Build{ID: b.GetId(), VenvPath: b.GetVenvPath(), PythonPath: b.GetPythonPath(), PythonFullVersion: b.GetPythonFullVersion(),
		PackagesInstalled: int(b.GetPackagesInstalled()), ExclusiveBytes: b.GetExclusiveBytes(), Created: b.GetCreated(),
		CompletedAt: unixMs(b.GetCompletedUnixMs()), LastUsedAt: unixMs(b.GetLastUsedUnixMs())}
}

// Build implements envs.Agent.
func (c *Client) Build(ctx context.Context, r envs.BuildRequest) (envs.Build, error) {
	resp, err := c.rpc.Build(ctx, connect.NewRequest(&agentv1.BuildRequest{Files: files(r.Files), PythonPath: r.PythonPath,
		OperationId: r.OperationID, ReplaceDamaged: r.ReplaceDamaged}))
	if err != nil {
		return envs.Build{}, c.mapErr("materialising a build", err)
	}
	return buildOf(resp.Msg.GetBuild()), nil
}

// Switch implements envs.Agent.
func (c *Client) Switch(ctx context.Context, r envs.SwitchRequest) (bool, error) {
	resp, err := c.rpc.Switch(ctx, connect.NewRequest(&agentv1.SwitchRequest{Env: ref(r.Key), Files: files(r.Files), BuildId: r.BuildID,
		Revision: r.Revision, OperationId: r.OperationID}))
	if err != nil {
		return false, c.mapErr("switching the project", err)
	}
	return resp.Msg.GetChanged(), nil
}

// Inspect implements envs.Agent.
func (c *Client) Inspect(ctx context.Context, r envs.InspectRequest) (envs.Disk, error) {
	resp, err := c.rpc.Inspect(ctx, connect.NewRequest(&agentv1.InspectRequest{Env: ref(r.Key), Expected: files(r.Expected), PythonPath: r.PythonPath,
		Verify: r.Verify, ExpectedBuildId: r.ExpectedBuildID}))
	if err != nil {
		return envs.Disk{}, c.mapErr("inspecting", err)
	}
	m := resp.Msg
	d := envs.Disk{Exists: m.GetExists(), HasPyproject: m.GetHasPyproject(), HasLock: m.GetHasLock(), HasVenv: m.GetHasVenv(),
		FilesMatch: m.GetFilesMatch(), VenvInSync: m.GetVenvInSync(), InterpreterPresent: m.GetInterpreterPresent(),
		PackagesInstalled: int(m.GetPackagesInstalled()), EnvPath: m.GetEnvPath(), BuildID: m.GetBuildId()}
	if bc := m.GetBuildCheck(); bc != nil {
		chk := &envs.BuildCheck{BuildID: bc.GetBuildId(), Complete: bc.GetComplete(), Intact: bc.GetIntact(),
			FilesChecked: bc.GetFilesChecked(), BytesChecked: bc.GetBytesChecked(), Damaged: []envs.PackageDamage{}}
		for _, p := range bc.GetDamaged() {
			chk.Damaged = append(chk.Damaged, envs.PackageDamage{Name: p.GetName(), Version: p.GetVersion(),
				Missing: p.GetMissing(), WrongSize: p.GetWrongSize(), MissingCount: int(p.GetMissingCount()), WrongSizeCount: int(p.GetWrongSizeCount())})
		}
		d.Check = chk
	}
	return d, nil
}

// Run implements envs.Agent.
func (c *Client) Run(ctx context.Context, r envs.RunSpec) (envs.RunResult, error) {
	resp, err := c.rpc.Run(ctx, connect.NewRequest(&agentv1.RunRequest{Env: ref(r.Key), Code: r.Code, TimeoutMs: r.Timeout.Milliseconds(),
		MaxOutputBytes: r.MaxOutput, BuildId: r.BuildID, Preload: r.Preload, Cold: r.Cold}))
	if err != nil {
		return envs.RunResult{}, c.mapErr("running code", err)
	}
	m := resp.Msg
	return envs.RunResult{Stdout: m.GetStdout(), Stderr: m.GetStderr(),
		ExitCode: int(m.GetExitCode()), ExitReason: m.GetExitReason(), Duration: time.Duration(m.GetDurationMs()) * time.Millisecond, TimedOut: m.GetTimedOut(),
		StdoutTruncated: m.GetStdoutTruncated(), StderrTruncated: m.GetStderrTruncated(), Warm: m.GetWarm()}, nil
}

// ListBuilds implements envs.Agent.
func (c *Client) ListBuilds(ctx context.Context) ([]envs.Build, error) {
	resp, err := c.rpc.ListBuilds(ctx, connect.NewRequest(&agentv1.ListBuildsRequest{}))
	if err != nil {
		return nil, c.mapErr("listing builds", err)
	}
	out := make([]envs.Build, 0, len(resp.Msg.GetBuilds()))
	for _, b := range resp.Msg.GetBuilds() {
		out = append(out, buildOf(b))
	}
	return out, nil
}

// RemoveBuild implements envs.Agent.
func (c *Client) RemoveBuild(ctx context.Context, id string) (envs.RemovedBuild, error) {
	resp, err := c.rpc.RemoveBuild(ctx, connect.NewRequest(&agentv1.RemoveBuildRequest{BuildId: id}))
	if err != nil {
		return envs.RemovedBuild{}, c.mapErr("removing a build", err)
	}
	m := resp.Msg
	return envs.RemovedBuild{Existed: m.GetExisted(), InUse: m.GetInUse(), BytesFreed: m.GetBytesFreed()}, nil
}

// Delete implements envs.Agent.
func (c *Client) Delete(ctx context.Context, key envid.Key) (int64, error) {
	resp, err := c.rpc.DeleteProject(ctx, connect.NewRequest(&agentv1.DeleteProjectRequest{Env: ref(key)}))
	if err != nil {
		return 0, c.mapErr("deleting the project", err)
	}
	return resp.Msg.GetBytesFreed(), nil
}

// Ping implements envs.Agent.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Describe(ctx)
	return err
}

var _ envs.Describer = (*Client)(nil)

// Describe implements envs.Describer: the agent's description of itself, for GET /agents.
func (c *Client) Describe(ctx context.Context) (envs.AgentInfo, error) {
	resp, err := c.rpc.Info(ctx, connect.NewRequest(&agentv1.InfoRequest{}))
	if err != nil {
		return envs.AgentInfo{URL: c.url}, c.mapErr("describing itself", err)
	}
	m := resp.Msg
	info := envs.AgentInfo{ID: m.GetAgentId(), URL: c.url, Version: m.GetVersion(), Interpreters: []envs.Interpreter{},
		Storage: envs.AgentStorage{UVVersion: m.GetUvVersion(), EnvsBasePath: m.GetEnvsBasePath(), UVCacheDir: m.GetUvCacheDir(), LinkMode: m.GetLinkMode()}}
	for _, i := range m.GetInterpreters() {
		info.Interpreters = append(info.Interpreters, envs.Interpreter{Version: i.GetVersion(), Path: i.GetPath()})
	}
	info.Sandbox = c.sandbox(ctx)
	return info, nil
}

// sandbox is the agent's run sandbox tier, as its /readyz says it ("sandbox: <tier> <details>"),
// or "" when it does not say. A fleet learns it from gossip; InfoResponse has no field for it.
func (c *Client) sandbox(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.url, "/")+"/readyz", nil)
	if err != nil {
		return ""
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "sandbox: "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// DiskUsage implements envs.Agent.
func (c *Client) DiskUsage(ctx context.Context, key envid.Key) (int64, error) {
	resp, err := c.rpc.Inspect(ctx, connect.NewRequest(&agentv1.InspectRequest{Env: ref(key), MeasureDisk: true}))
	if err != nil {
		return 0, c.mapErr("measuring an environment", err)
	}
	return resp.Msg.GetExclusiveBytes(), nil
}

// Usage implements envs.Agent.
func (c *Client) Usage(ctx context.Context, since time.Time, storageCheck []envid.Key) ([]envs.Use, error) {
	// A fresh look of the host's processes for the pass's collection (background scans may be
	// minutes old); a storage check of a batch asks only about the shared storage, which the
	// collection just before it has the processes of.
	req := &agentv1.UsageRequest{Rescan: len(storageCheck) == 0}
	if !since.IsZero() {
		req.SinceUnixMs = since.UnixMilli()
	}
	for _, k := range storageCheck {
		req.StorageCheck = append(req.StorageCheck, ref(k))
	}
	resp, err := c.rpc.Usage(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, c.mapErr("reporting usage", err)
	}
	out := make([]envs.Use, 0, len(resp.Msg.GetEnvs()))
	for _, u := range resp.Msg.GetEnvs() {
		r := u.GetEnv()
		key, err := envid.New(r.GetWorkflowId(), r.GetNodeId(), r.GetVersionId())
		if err != nil {
			continue // not an environment this control plane could have made
		}
		out = append(out, envs.Use{Key: key, At: time.UnixMilli(u.GetLastUsedUnixMs()).UTC(), Source: u.GetSource()})
	}
	return out, nil
}

// PruneCache implements envs.Agent.
func (c *Client) PruneCache(ctx context.Context) (int64, int64, error) {
	resp, err := c.rpc.PruneCache(ctx, connect.NewRequest(&agentv1.PruneCacheRequest{}))
	if err != nil {
		return 0, 0, c.mapErr("pruning the uv cache", err)
	}
	return resp.Msg.GetBytesBefore(), resp.Msg.GetBytesAfter(), nil
}
