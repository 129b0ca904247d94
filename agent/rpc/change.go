package rpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/agent/builds"
	"github.com/envfabric/envfabric/agent/uv"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// stagingDirName holds the private copies where Lock resolves; ids never start with a dot.
const stagingDirName = ".staging"

// Lock resolves a change in a private staging copy of the project and answers the new files.
// Nothing of the environment and nothing of any build is written, so it takes no lock: a dry run
// is a Lock whose answer is not committed.
func (s *Server) Lock(ctx context.Context, req *connect.Request[agentv1.LockRequest]) (*connect.Response[agentv1.LockResponse], error) {
	start := time.Now()
	m := req.Msg
	op := "lock " + m.GetKind().String()
	if _, err := envKey(m.GetEnv()); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if err := checkLock(m); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	python, full, pyproj, lock, err := s.lockInputs(ctx, m)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	staging, err := s.stagingDir(m.GetOperationId())
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer os.RemoveAll(staging)
	if err := os.WriteFile(filepath.Join(staging, pyprojectFile), []byte(pyproj), 0o644); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if lock != "" {
		if err := os.WriteFile(filepath.Join(staging, lockFile), []byte(lock), 0o644); err != nil {
			return nil, s.fail(ctx, op, err)
		}
	}
	p := uv.Project{Dir: staging, Python: python, NoSync: true}
	var out string
	switch m.GetKind() {
	case agentv1.LockKind_LOCK_KIND_CREATE:
		if len(m.GetPackages()) == 0 {
			out, err = s.uv.Lock(ctx, p)
		} else {
			out, err = s.uv.Add(ctx, p, m.GetPackages(), nil)
		}
	case agentv1.LockKind_LOCK_KIND_ADD:
		out, err = s.uv.Add(ctx, p, m.GetPackages(), nil)
	case agentv1.LockKind_LOCK_KIND_UPDATE:
		out, err = s.uv.Add(ctx, p, m.GetPackages(), m.GetUpgradePackages())
	case agentv1.LockKind_LOCK_KIND_REMOVE:
		out, err = s.uv.Remove(ctx, p, m.GetPackages())
	}
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	files, err := readFiles(staging)
	if err != nil {
		return nil, s.fail(ctx, op, fmt.Errorf("reading the resolved files: %w", err))
	}
	s.logger.InfoContext(ctx, "locked", "env", m.GetEnv().String(), "kind", m.GetKind().String(), "packages", m.GetPackages(), "duration", time.Since(start))
	return connect.NewResponse(&agentv1.LockResponse{
		Files:             files,
		PythonPath:        python,
		PythonFullVersion: full,
		UvOutput:          out,
		DurationMs:        time.Since(start).Milliseconds(),
	}), nil
}

// lockInputs finds the interpreter and the files a Lock starts from: a fresh pyproject.toml for a
// create, else the base, whose project moves to the reserved name if it was made with the name
// of the layout before builds (one per environment), so the new revision carries it.
func (s *Server) lockInputs(ctx context.Context, m *agentv1.LockRequest) (python, full, pyproj, lock string, err error) {
	if m.GetKind() == agentv1.LockKind_LOCK_KIND_CREATE {
		version := m.GetPythonVersion()
		if version == "" {
			version = s.cfg.DefaultPython
		}
		python, full, err = s.uv.FindPython(ctx, version)
		if err != nil {
			return "", "", "", "", err
		}
		b, err := newPyproject(envid.ProjectName, full)
		return python, full, string(b), "", err
	}
	python = m.GetPythonPath()
	if err := checkInterpreter(python); err != nil {
		return "", "", "", "", err
	}
	if python != "" {
		if full, err = s.uv.PythonVersion(ctx, python); err != nil {
			return "", "", "", "", err
		}
	}
	renamed, changed, err := pyproject.SetName(m.GetBase().GetPyprojectToml(), envid.ProjectName)
	if err != nil {
		return "", "", "", "", errcode.Wrap(errcode.InvalidRequest, err, "base pyproject.toml")
	}
	if changed {
		s.logger.InfoContext(ctx, "project moves to the reserved name", "env", m.GetEnv().String(), "name", envid.ProjectName)
	}
	return python, full, renamed, m.GetBase().GetUvLock(), nil
}

// stagingDir makes a fresh private directory under .staging, named for the operation.
func (s *Server) stagingDir(op int64) (string, error) {
	root := filepath.Join(s.cfg.EnvsBasePath, stagingDirName)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", root, err)
	}
	dir, err := os.MkdirTemp(root, fmt.Sprintf("%d-", op))
	if err != nil {
		return "", fmt.Errorf("creating a staging copy: %w", err)
	}
	return dir, os.Chmod(dir, 0o755)
}

// checkLock refuses a change before uv runs. For removal every name must be a dependency in
// base: uv remove would fail on it anyway, with a message less clear.
func checkLock(m *agentv1.LockRequest) error {
	kind := m.GetKind()
	if kind != agentv1.LockKind_LOCK_KIND_CREATE {
		if err := checkRevision(m.GetBase(), "base"); err != nil {
			return err
		}
		if len(m.GetPackages()) == 0 {
			return errcode.New(errcode.InvalidRequest, "no packages given")
		}
	}
	switch kind {
	case agentv1.LockKind_LOCK_KIND_CREATE, agentv1.LockKind_LOCK_KIND_ADD:
		return checkPackages(m.GetPackages())
	case agentv1.LockKind_LOCK_KIND_UPDATE:
		return errors.Join(checkPackages(m.GetPackages()), checkNames(m.GetUpgradePackages()))
	case agentv1.LockKind_LOCK_KIND_REMOVE:
		if err := checkNames(m.GetPackages()); err != nil {
			return err
		}
		base, err := pyproject.Parse(m.GetBase().GetPyprojectToml())
		if err != nil {
			return errcode.Wrap(errcode.InvalidRequest, err, "")
		}
		deps := base.DependencyIndex()
		for _, n := range m.GetPackages() {
			if _, ok := deps[pyproject.Normalize(n)]; !ok {
				return errcode.New(errcode.DependencyNotFound, fmt.Sprintf("%s is not a dependency of this environment", n))
			}
		}
		return nil
	}
	return errcode.New(errcode.InvalidRequest, "unknown lock kind "+kind.String())
}

// Build makes sure the build of the given files exists complete, materialising it if not.
func (s *Server) Build(ctx context.Context, req *connect.Request[agentv1.BuildRequest]) (*connect.Response[agentv1.BuildResponse], error) {
	start := time.Now()
	m := req.Msg
	if err := checkRevision(m.GetFiles(), "files"); err != nil {
		return nil, s.fail(ctx, "build", err)
	}
	if m.GetPythonPath() == "" {
		return nil, s.fail(ctx, "build", errcode.New(errcode.InvalidRequest, "python_path is required"))
	}
	if err := checkInterpreter(m.GetPythonPath()); err != nil {
		return nil, s.fail(ctx, "build", err)
	}
	if m.GetReplaceDamaged() && s.cfg.Warm.Enabled() {
		// A repair waits for every holder of the build, warm interpreters included: they go.
		if ident, err := s.builds.Identity(ctx, m.GetFiles().GetUvLock(), m.GetPythonPath()); err == nil {
			s.cfg.Warm.Drop(ident.ID())
		}
	}
	info, out, err := s.builds.Ensure(ctx, m.GetFiles().GetPyprojectToml(), m.GetFiles().GetUvLock(), m.GetPythonPath(), m.GetReplaceDamaged())
	if s.cfg.OnBuild != nil {
		outcome := "existing"
		switch {
		case err != nil:
			outcome = "error"
		case info.Created:
			outcome = "created"
		}
		s.cfg.OnBuild(outcome, time.Since(start))
	}
	if err != nil {
		return nil, s.fail(ctx, "build", err)
	}
	s.logger.InfoContext(ctx, "build ready", "build", info.ID, "created", info.Created, "duration", time.Since(start))
	return connect.NewResponse(&agentv1.BuildResponse{
		Build:      buildInfo(info),
		UvOutput:   out,
		DurationMs: time.Since(start).Milliseconds(),
	}), nil
}

// Switch points the environment's project directory at a committed revision: its files, each
// replaced by a rename, and its .venv at the revision's build (agent/builds.Link). Fenced like
// every write of a project: an older operation may not switch back over a newer revision.
func (s *Server) Switch(ctx context.Context, req *connect.Request[agentv1.SwitchRequest]) (*connect.Response[agentv1.SwitchResponse], error) {
	m := req.Msg
	key, err := envKey(m.GetEnv())
	if err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	if err := checkRevision(m.GetFiles(), "files"); err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	// Never point an environment at a half build or none.
	if err := s.builds.RequireComplete(m.GetBuildId()); err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	lock, err := s.lockProject(ctx, key)
	if err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	defer lock.release()
	if err := lock.admit(key, m.GetRevision(), m.GetOperationId()); err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	// Recorded before writing: from here an older operation may not write this revision back.
	if err := lock.record(m.GetRevision(), m.GetOperationId()); err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	dir := key.Dir(s.cfg.EnvsBasePath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	wrote, err := writeFiles(dir, m.GetFiles())
	if err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	linked, err := s.builds.Link(dir, m.GetBuildId())
	if err != nil {
		return nil, s.fail(ctx, "switch", err)
	}
	s.logger.InfoContext(ctx, "switched", "env", key.String(), "revision", m.GetRevision(), "build", m.GetBuildId(), "files_written", wrote, "link_changed", linked)
	if s.cfg.Warm.StartsAtCreate() {
		// WARM_START=create: the build's warm interpreter starts now, not at its first run.
		s.cfg.Warm.Warmup(s.warmBuild(m.GetBuildId(), nil))
	}
	return connect.NewResponse(&agentv1.SwitchResponse{EnvPath: dir, Changed: wrote || linked}), nil
}

// ListBuilds describes every build directory on the shared storage.
func (s *Server) ListBuilds(ctx context.Context, _ *connect.Request[agentv1.ListBuildsRequest]) (*connect.Response[agentv1.ListBuildsResponse], error) {
	list, err := s.builds.List(ctx)
	if err != nil {
		return nil, s.fail(ctx, "list builds", err)
	}
	resp := &agentv1.ListBuildsResponse{}
	for _, b := range list {
		resp.Builds = append(resp.Builds, buildInfo(b))
	}
	return connect.NewResponse(resp), nil
}

// RemoveBuild deletes a build unless a run holds it.
func (s *Server) RemoveBuild(ctx context.Context, req *connect.Request[agentv1.RemoveBuildRequest]) (*connect.Response[agentv1.RemoveBuildResponse], error) {
	// Its warm interpreters hold it: they go first (a busy one when its run ends).
	s.cfg.Warm.Drop(req.Msg.GetBuildId())
	r, err := s.builds.Remove(ctx, req.Msg.GetBuildId())
	if err != nil {
		return nil, s.fail(ctx, "remove build", err)
	}
	return connect.NewResponse(&agentv1.RemoveBuildResponse{Existed: r.Existed, InUse: r.InUse, BytesFreed: r.BytesFreed}), nil
}

// buildInfo is the wire form of a build.
func buildInfo(b builds.Info) *agentv1.BuildInfo {
	out := &agentv1.BuildInfo{
		Id:             b.ID,
		VenvPath:       b.Venv,
		ExclusiveBytes: b.ExclusiveBytes,
		Created:        b.Created,
	}
	if m := b.Marker; m != nil {
		out.PythonPath = m.PythonPath
		out.PythonFullVersion = m.PythonFullVersion
		out.PackagesInstalled = int32(len(m.Packages))
		out.CompletedUnixMs = m.CompletedUnixMs
	}
	if !b.LastUsed.IsZero() {
		out.LastUsedUnixMs = b.LastUsed.UnixMilli()
	}
	return out
}

// buildCheck is the wire form of a verification.
func buildCheck(c builds.Check) *agentv1.BuildCheck {
	out := &agentv1.BuildCheck{
		BuildId:      c.ID,
		Complete:     c.Complete,
		Intact:       c.Intact,
		FilesChecked: c.FilesChecked,
		BytesChecked: c.BytesChecked,
	}
	for _, d := range c.Damaged {
		out.Damaged = append(out.Damaged, &agentv1.PackageDamage{
			Name: d.Name, Version: d.Version, Missing: d.Missing, WrongSize: d.WrongSize,
			MissingCount: int32(d.MissingCount), WrongSizeCount: int32(d.WrongCount),
		})
	}
	return out
}
