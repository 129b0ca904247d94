package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/envfabric/envfabric/shared/errcode"
)

// The fleet's dependency questions (README "Dependency intelligence"): which environments hold a
// package, which advisories of OSV_DATA hit them, and an environment's SBOM.

// HoldersOptions selects a page of GET /packages/{name}. Specifier is a PEP 440 specifier set
// ("<1.1,>=1.0"): only holders of a matching version; empty, every version. Zero Limit and Cursor
// are the server's defaults (50, the first page).
type HoldersOptions struct {
	Specifier string
	Limit     int    // 1–500
	Cursor    string // a previous page's NextCursor
}

// HoldersResult answers GET /packages/{name}: one page of the environments whose current lock
// holds the package.
type HoldersResult struct {
	Raw
	Name         string          `json:"name"` // the package's normalised name (PEP 503)
	Specifier    string          `json:"specifier"`
	Environments []PackageHolder `json:"environments"`
	NextCursor   string          `json:"next_cursor,omitempty"`
}

// PackageHolder is one environment holding a package, in the version its current lock has.
type PackageHolder struct {
	WorkflowID string `json:"workflow_id"`
	NodeID     string `json:"node_id"`
	VersionID  string `json:"version_id"`
	Version    string `json:"version"`
	Direct     bool   `json:"direct"` // a declared dependency, not only a transitive one
}

// Holders returns one page of the environments holding package name.
func (c *Client) Holders(ctx context.Context, name string, opt HoldersOptions) (*HoldersResult, error) {
	q := url.Values{}
	if opt.Specifier != "" {
		q.Set("specifier", opt.Specifier)
	}
	pageQuery(q, opt.Limit, opt.Cursor)
	var out HoldersResult
	if err := c.call(ctx, http.MethodGet, "/packages/"+url.PathEscape(name), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// HoldersAll follows the pages of Holders from opt.Cursor to the end (opt.Limit is the page size).
func (c *Client) HoldersAll(ctx context.Context, name string, opt HoldersOptions) ([]PackageHolder, error) {
	var all []PackageHolder
	for {
		page, err := c.Holders(ctx, name, opt)
		if err != nil {
			return all, err
		}
		all = append(all, page.Environments...)
		if page.NextCursor == "" || page.NextCursor == opt.Cursor {
			return all, nil
		}
		opt.Cursor = page.NextCursor
	}
}

func pageQuery(q url.Values, limit int, cursor string) {
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
}

// Advisory is one OSV record as the API shows it.
type Advisory struct {
	ID       string   `json:"id"`
	Aliases  []string `json:"aliases"`
	Summary  string   `json:"summary"`
	Severity string   `json:"severity"` // CRITICAL, HIGH, MEDIUM, LOW or UNKNOWN
	// CVSSScore is the CVSS v3 base score the severity came from; 0 when it came from the
	// database's own rating or is unknown.
	CVSSScore float64 `json:"cvss_score"`
}

// VulnerabilitiesOptions selects a page of GET /vulnerabilities; zero values are the server's
// defaults (50 advisories, 20 environments listed under each, the first page).
type VulnerabilitiesOptions struct {
	Limit    int    // advisories, 1–500
	EnvLimit int    // environments listed under each advisory, 1–1000 (EnvironmentCount counts them all)
	Cursor   string // a previous page's NextCursor
}

// VulnerabilitiesResult answers GET /vulnerabilities: the advisories that hit at least one
// current environment, most severe first.
type VulnerabilitiesResult struct {
	Raw
	AdvisoriesLoaded int                  `json:"advisories_loaded"` // records of OSV_DATA in effect (0: none configured)
	Vulnerabilities  []FleetVulnerability `json:"vulnerabilities"`
	NextCursor       string               `json:"next_cursor,omitempty"`
}

// FleetVulnerability is one advisory, the packages it affects and the environments it hits.
type FleetVulnerability struct {
	Advisory
	Packages         []AffectedPackage  `json:"packages"`
	EnvironmentCount int                `json:"environment_count"`
	Environments     []InstalledPackage `json:"environments"` // the first EnvLimit of them
}

// AffectedPackage is a package an advisory affects: the versions the fleet holds in its ranges,
// and the versions that fix it.
type AffectedPackage struct {
	Name             string   `json:"name"`
	AffectedVersions []string `json:"affected_versions"`
	FixedVersions    []string `json:"fixed_versions"`
}

// InstalledPackage is an environment holding an affected version.
type InstalledPackage struct {
	WorkflowID string `json:"workflow_id"`
	NodeID     string `json:"node_id"`
	VersionID  string `json:"version_id"`
	Package    string `json:"package"`
	Version    string `json:"version"`
}

// Vulnerabilities returns one page of the advisories hitting the fleet.
func (c *Client) Vulnerabilities(ctx context.Context, opt VulnerabilitiesOptions) (*VulnerabilitiesResult, error) {
	q := url.Values{}
	pageQuery(q, opt.Limit, opt.Cursor)
	if opt.EnvLimit != 0 {
		q.Set("env_limit", strconv.Itoa(opt.EnvLimit))
	}
	var out VulnerabilitiesResult
	if err := c.call(ctx, http.MethodGet, "/vulnerabilities", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// EnvVulnerabilitiesResult answers GET /envs/{wf}/{node}/vulnerabilities.
type EnvVulnerabilitiesResult struct {
	Raw
	WorkflowID      string             `json:"workflow_id"`
	NodeID          string             `json:"node_id"`
	VersionID       string             `json:"version_id"`
	Vulnerabilities []EnvVulnerability `json:"vulnerabilities"`
}

// EnvVulnerability is one advisory hitting a package of the environment's current lock.
type EnvVulnerability struct {
	Advisory
	Package       string   `json:"package"`
	Version       string   `json:"version"`
	FixedVersions []string `json:"fixed_versions"`
}

// EnvVulnerabilities returns the advisories that hit the environment's current lock.
func (c *Client) EnvVulnerabilities(ctx context.Context, env Env) (*EnvVulnerabilitiesResult, error) {
	var out EnvVulnerabilitiesResult
	if err := c.call(ctx, http.MethodGet, env.path("/vulnerabilities"), env.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SBOM returns the CycloneDX JSON document of the environment's current lock, as the server
// sent it.
func (c *Client) SBOM(ctx context.Context, env Env) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.call(ctx, http.MethodGet, env.path("/sbom"), env.query(), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Denial is the PACKAGE_POLICY rule that refused a change (422 PACKAGE_DENIED).
type Denial struct {
	Rule    string `json:"rule"`
	Package string `json:"package"`
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// Denied says which policy rule refused the change, when the answer is PACKAGE_DENIED.
func (e *Error) Denied() (Denial, bool) {
	if e.Code != errcode.PackageDenied {
		return Denial{}, false
	}
	var b struct {
		Denied *Denial `json:"denied"`
	}
	if json.Unmarshal(e.Body, &b) != nil || b.Denied == nil {
		return Denial{}, false
	}
	return *b.Denied, true
}
