package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/envfabric/envfabric/controlplane/depintel"
	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// The dependency questions of the fleet (issue 14): GET /packages/{name},
// GET /vulnerabilities, GET /envs/{wf}/{node}/vulnerabilities and GET /envs/{wf}/{node}/sbom.

var errNoDeps = errcode.New(errcode.Internal, "the package index is not configured in this handler")

type packageHolder struct {
	WorkflowID string `json:"workflow_id"`
	NodeID     string `json:"node_id"`
	VersionID  string `json:"version_id"`
	Version    string `json:"version"`
	Direct     bool   `json:"direct"`
}

type packageResponse struct {
	Name         string          `json:"name"`
	Specifier    string          `json:"specifier"`
	Environments []packageHolder `json:"environments"`
	NextCursor   string          `json:"next_cursor,omitempty"`
}

func (h *Handler) packageHolders(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if h.opt.Deps == nil {
		return 0, nil, errNoDeps
	}
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
	spec := r.URL.Query().Get("specifier")
	page, err := h.opt.Deps.Holders(r.Context(), r.PathValue("name"), spec, after, n)
	if err != nil {
		return 0, nil, err
	}
	res := packageResponse{Name: page.Name, Specifier: spec, Environments: make([]packageHolder, 0, len(page.Holders))}
	for _, p := range page.Holders {
		res.Environments = append(res.Environments, packageHolder{WorkflowID: p.Key.WorkflowID, NodeID: p.Key.NodeID,
			VersionID: p.Key.VersionID, Version: p.Version, Direct: p.Direct})
	}
	if page.Next != (envid.Key{}) {
		res.NextCursor = encodeCursor(page.Next)
	}
	return http.StatusOK, res, nil
}

type advisoryJSON struct {
	ID       string   `json:"id"`
	Aliases  []string `json:"aliases"`
	Summary  string   `json:"summary"`
	Severity string   `json:"severity"`
	// CVSSScore is the CVSS v3 base score the severity came from; 0 when it came from the
	// database's own rating or is unknown.
	CVSSScore float64 `json:"cvss_score"`
}

func advisoryOf(a *osv.Advisory) advisoryJSON {
	aliases := a.Aliases
	if aliases == nil {
		aliases = []string{}
	}
	return advisoryJSON{ID: a.ID, Aliases: aliases, Summary: a.Summary, Severity: a.Severity, CVSSScore: a.Score}
}

type affectedPackageJSON struct {
	Name             string   `json:"name"`
	AffectedVersions []string `json:"affected_versions"`
	FixedVersions    []string `json:"fixed_versions"`
}

type installedJSON struct {
	WorkflowID string `json:"workflow_id"`
	NodeID     string `json:"node_id"`
	VersionID  string `json:"version_id"`
	Package    string `json:"package"`
	Version    string `json:"version"`
}

type fleetVulnerability struct {
	advisoryJSON
	Packages         []affectedPackageJSON `json:"packages"`
	EnvironmentCount int                   `json:"environment_count"`
	Environments     []installedJSON       `json:"environments"`
}

type vulnerabilitiesResponse struct {
	Advisories      int                  `json:"advisories_loaded"`
	Vulnerabilities []fleetVulnerability `json:"vulnerabilities"`
	NextCursor      string               `json:"next_cursor,omitempty"`
}

func (h *Handler) vulnerabilities(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if h.opt.Deps == nil {
		return 0, nil, errNoDeps
	}
	n, err := limit(r)
	if err != nil {
		return 0, nil, err
	}
	q := depintel.VulnQuery{Limit: n, EnvLimit: 20}
	if s := r.URL.Query().Get("env_limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > depintel.MaxLimit {
			return 0, nil, errcode.New(errcode.InvalidRequest, "env_limit: want a whole number from 0 to 1000")
		}
		q.EnvLimit = v
	}
	if c := r.URL.Query().Get("cursor"); c != "" {
		if q.After, err = decodeVulnCursor(c); err != nil {
			return 0, nil, err
		}
	}
	page, err := h.opt.Deps.Vulnerabilities(r.Context(), q)
	if err != nil {
		return 0, nil, err
	}
	res := vulnerabilitiesResponse{Advisories: h.opt.Deps.Advisories().Len(), Vulnerabilities: []fleetVulnerability{}}
	for _, f := range page.Findings {
		v := fleetVulnerability{advisoryJSON: advisoryOf(f.Advisory), EnvironmentCount: f.EnvCount,
			Packages: []affectedPackageJSON{}, Environments: []installedJSON{}}
		for _, p := range f.Packages {
			v.Packages = append(v.Packages, affectedPackageJSON{Name: p.Name, AffectedVersions: p.Versions, FixedVersions: p.Fixed})
		}
		for _, e := range f.Envs {
			v.Environments = append(v.Environments, installedJSON{WorkflowID: e.Key.WorkflowID, NodeID: e.Key.NodeID,
				VersionID: e.Key.VersionID, Package: e.Package, Version: e.Version})
		}
		res.Vulnerabilities = append(res.Vulnerabilities, v)
	}
	if page.Next != nil {
		res.NextCursor = encodeVulnCursor(*page.Next)
	}
	return http.StatusOK, res, nil
}

func encodeVulnCursor(c depintel.VulnCursor) string {
	b, _ := json.Marshal([]any{c.Rank, c.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeVulnCursor(s string) (depintel.VulnCursor, error) {
	bad := errcode.New(errcode.InvalidRequest, "cursor: not a cursor this API returned")
	b, err := base64.RawURLEncoding.DecodeString(s)
	var parts []any
	if err != nil || len(s) > 512 || json.Unmarshal(b, &parts) != nil || len(parts) != 2 {
		return depintel.VulnCursor{}, bad
	}
	rank, ok1 := parts[0].(float64)
	id, ok2 := parts[1].(string)
	if !ok1 || !ok2 || id == "" {
		return depintel.VulnCursor{}, bad
	}
	return depintel.VulnCursor{Rank: int(rank), ID: id}, nil
}

type envVulnerability struct {
	advisoryJSON
	Package       string   `json:"package"`
	Version       string   `json:"version"`
	FixedVersions []string `json:"fixed_versions"`
}

type envVulnerabilitiesResponse struct {
	WorkflowID      string             `json:"workflow_id"`
	NodeID          string             `json:"node_id"`
	VersionID       string             `json:"version_id"`
	Vulnerabilities []envVulnerability `json:"vulnerabilities"`
}

func (h *Handler) envVulnerabilities(r *http.Request, key envid.Key) (any, error) {
	if h.opt.Deps == nil {
		return nil, errNoDeps
	}
	fs, err := h.opt.Deps.EnvVulnerabilities(r.Context(), key)
	if err != nil {
		return nil, err
	}
	res := envVulnerabilitiesResponse{WorkflowID: key.WorkflowID, NodeID: key.NodeID, VersionID: key.VersionID, Vulnerabilities: []envVulnerability{}}
	for _, f := range fs {
		res.Vulnerabilities = append(res.Vulnerabilities, envVulnerability{advisoryJSON: advisoryOf(f.Advisory), Package: f.Package,
			Version: f.Version, FixedVersions: f.Fixed})
	}
	return res, nil
}

func (h *Handler) sbom(r *http.Request, key envid.Key) (any, error) {
	if h.opt.Deps == nil {
		return nil, errNoDeps
	}
	return h.opt.Deps.SBOM(r.Context(), key)
}
