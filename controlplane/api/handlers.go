package api

// The handlers: each decodes its request, calls the service and answers with a REST response
// type (responses.go).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // specifiers such as "numpy>=1.24" stay readable
	_ = enc.Encode(body)
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) (int, any, error) {
	req, err := h.decodeCreate(r)
	if err != nil {
		return 0, nil, err
	}
	res, err := h.svc.Create(r.Context(), caller(r), req)
	return http.StatusCreated, CreatedEnv(res), err
}

// keyed serves a bodiless request on one environment.
func keyed(fn func(r *http.Request, key envid.Key) (any, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		key, err := envKey(r, "")
		if err != nil {
			return 0, nil, err
		}
		res, err := fn(r, key)
		return http.StatusOK, res, err
	}
}

func (h *Handler) mutate(kind envs.MutationKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body struct {
			versioned
			Packages packageList `json:"packages"`
			DryRun   bool        `json:"dry_run"`
		}
		key, err := decodeEnvRequest(r, &body)
		if err != nil {
			return 0, nil, err
		}
		res, err := h.svc.Mutate(r.Context(), caller(r), key, kind, body.Packages, body.DryRun)
		if res.DryRun {
			return http.StatusOK, dryRunOf(res), err
		}
		return http.StatusOK, DepsResult(res), err
	}
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var body struct {
		versioned
		Revision *int64 `json:"revision"`
	}
	key, err := decodeEnvRequest(r, &body)
	if err != nil {
		return 0, nil, err
	}
	if body.Revision == nil {
		return 0, nil, errcode.New(errcode.InvalidRequest, "revision: required (the revision to make current again)")
	}
	res, err := h.svc.Rollback(r.Context(), caller(r), key, *body.Revision)
	return http.StatusOK, RollbackResult{DepsResult: DepsResult(res), RolledBackTo: res.RolledBackTo, Rebuilt: res.Rebuilt}, err
}

func (h *Handler) preload(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var body struct {
		versioned
		Modules *[]string `json:"modules"`
	}
	key, err := decodeEnvRequest(r, &body)
	if err != nil {
		return 0, nil, err
	}
	if body.Modules == nil {
		return 0, nil, errcode.New(errcode.InvalidRequest, `modules: required (the module names to preload; [] clears the list)`)
	}
	res, err := h.svc.SetPreload(r.Context(), caller(r), key, *body.Modules)
	return http.StatusOK, PreloadResult{WorkflowID: res.WorkflowID, NodeID: res.NodeID, VersionID: res.VersionID,
		Preload: res.Preload, OperationID: res.OperationID}, err
}

func (h *Handler) sync(w http.ResponseWriter, r *http.Request) (int, any, error) {
	key, err := decodeEnvRequest(r, &versioned{})
	if err != nil {
		return 0, nil, err
	}
	res, err := h.svc.Sync(r.Context(), caller(r), key)
	return http.StatusOK, SyncResult(res), err
}

func (h *Handler) run(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var body struct {
		versioned
		Code    string   `json:"code"`
		Timeout *float64 `json:"timeout"`
		Warm    *bool    `json:"warm"`
	}
	key, err := decodeEnvRequest(r, &body)
	if err != nil {
		return 0, nil, err
	}
	req := envs.RunRequest{Code: body.Code, Cold: body.Warm != nil && !*body.Warm}
	if body.Timeout != nil {
		if *body.Timeout <= 0 {
			return 0, nil, errcode.New(errcode.InvalidRequest, "timeout: must be a positive number of seconds")
		}
		if *body.Timeout > maxSeconds {
			// Past this the conversion to a duration overflows; the service's own maximum is lower.
			return 0, nil, errcode.New(errcode.InvalidRequest, "timeout: far over the maximum")
		}
		req.Timeout = time.Duration(*body.Timeout * float64(time.Second))
	}
	res, err := h.svc.Run(r.Context(), caller(r), key, req)
	return http.StatusOK, runResponse(res), err
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	n, err := limit(r)
	if err != nil {
		return 0, nil, err
	}
	var after envid.Key
	if c := r.URL.Query().Get("cursor"); c != "" {
		if after, err = decodeCursor(c); err != nil {
			return 0, nil, err
		}
	}
	wf := r.URL.Query().Get("workflow_id")
	if wf != "" {
		if err := envid.ValidateID("workflow_id", wf); err != nil {
			return 0, nil, errcode.Wrap(errcode.InvalidID, err, "")
		}
	}
	res, page, err := h.svc.List(r.Context(), wf, after, n)
	if err != nil {
		return 0, nil, err
	}
	if len(page) > 0 {
		res.NextCursor = encodeCursor(page[len(page)-1].Key)
	}
	return http.StatusOK, listOf(res), nil
}

func (h *Handler) operations(w http.ResponseWriter, r *http.Request) (int, any, error) {
	key, err := envKey(r, "")
	if err != nil {
		return 0, nil, err
	}
	n, err := limit(r)
	if err != nil {
		return 0, nil, err
	}
	var before int64
	if s := r.URL.Query().Get("before"); s != "" {
		if before, err = strconv.ParseInt(s, 10, 64); err != nil || before < 1 {
			return 0, nil, errcode.New(errcode.InvalidRequest, "before: want an operation id")
		}
	}
	res, err := h.svc.Operations(r.Context(), key, before, n)
	return http.StatusOK, historyOf(res), err
}

func (h *Handler) cleanup(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var body struct {
		IdleHours *float64 `json:"idle_hours"`
		DryRun    bool     `json:"dry_run"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return 0, nil, err
	}
	switch r.URL.Query().Get("dry_run") {
	case "", "false":
	case "true":
		body.DryRun = true
	default:
		return 0, nil, errcode.New(errcode.InvalidRequest, "dry_run: want true or false")
	}
	req := envs.CleanupRequest{DryRun: body.DryRun, IdleFor: -1}
	if body.IdleHours != nil {
		if *body.IdleHours < 0 || *body.IdleHours > maxSeconds/3600 {
			return 0, nil, errcode.New(errcode.InvalidRequest, fmt.Sprintf("idle_hours: want 0 to %g", float64(maxSeconds/3600)))
		}
		req.IdleFor = time.Duration(*body.IdleHours * float64(time.Hour))
	}
	res, err := h.svc.Cleanup(r.Context(), caller(r), req)
	return http.StatusOK, cleanupOf(res), err
}

func (h *Handler) agents(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if h.opt.Agents == nil {
		return http.StatusOK, agentsOf(envs.AgentsView{Mode: envs.ModeSingleHost}), nil
	}
	return http.StatusOK, agentsOf(h.opt.Agents.View(r.Context())), nil
}

func (h *Handler) status(r *http.Request, k envid.Key) (any, error) {
	res, err := h.svc.Status(r.Context(), k)
	return statusOf(res), err
}

func (h *Handler) delete(r *http.Request, k envid.Key) (any, error) {
	res, err := h.svc.Delete(r.Context(), caller(r), k)
	return DeleteResult(res), err
}

func (h *Handler) export(r *http.Request, k envid.Key) (any, error) {
	res, err := h.svc.Export(r.Context(), k)
	return ExportResult(res), err
}

func (h *Handler) deps(r *http.Request, k envid.Key) (any, error) {
	res, err := h.svc.Deps(r.Context(), k)
	return DepsResult(res), err
}
