package envs

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Limits of a preload list: a warm interpreter imports each module once, so the list names the
// heavy top-level imports of a node's code, not every module it touches.
const (
	MaxPreloadModules    = 64
	maxPreloadModuleName = 200
)

// moduleName is a dotted Python module path: identifiers (ASCII) joined by dots. Anything else
// (a path, a relative import, code) is refused before it reaches an agent.
var moduleName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// PreloadResult answers PUT .../preload.
type PreloadResult struct {
	WorkflowID, NodeID, VersionID string
	Preload                       []string
	OperationID                   int64
}

// ValidatePreload checks a preload list and returns it without duplicates, in its order.
func ValidatePreload(modules []string) ([]string, error) {
	if len(modules) > MaxPreloadModules {
		return nil, errcode.New(errcode.InvalidRequest, fmt.Sprintf("modules: at most %d modules, got %d", MaxPreloadModules, len(modules)))
	}
	out := make([]string, 0, len(modules))
	for i, m := range modules {
		if len(m) > maxPreloadModuleName || !moduleName.MatchString(m) {
			return nil, errcode.New(errcode.InvalidRequest, fmt.Sprintf(
				"modules[%d]: %q is not a module name (dotted Python identifiers, e.g. \"pandas\" or \"sklearn.linear_model\")", i, m))
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// SetPreload replaces the environment's preload list: the modules its warm interpreter imports
// before any run (docs/sandbox.md, "Warm runs"), on top of the agent's own choice (the direct
// dependencies' top-level modules and what recent runs imported). It changes no file and no
// revision, so it takes a run's lease: changes and runs go on; only a delete excludes it. Agents
// see it with the next run, and a warm interpreter that lacks one of the modules is replaced.
func (s *Service) SetPreload(ctx context.Context, c Caller, key envid.Key, modules []string) (PreloadResult, error) {
	res := PreloadResult{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID}
	modules, err := ValidatePreload(modules)
	if err != nil {
		return res, err
	}
	if _, err := s.getEnv(ctx, key); err != nil {
		return res, err
	}
	o := op{key: key, kind: "preload", mode: store.LeaseRun, caller: c, params: map[string]any{"modules": modules}}
	err = s.execute(ctx, o, func(ctx context.Context, r *running) (any, error) {
		if err := s.store.SetPreload(ctx, key, modules); err != nil {
			return nil, dbErr("writing the preload list", err)
		}
		res.OperationID = r.id
		return map[string]any{"modules": modules}, nil
	})
	res.Preload = modules
	return res, err
}
