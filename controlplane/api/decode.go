package api

// Decoding requests: bodies bounded in size and time, strict query strings, JSON and form data,
// environment keys, cursors.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// drainOversizeFactor bounds how much of a body over MaxBodyBytes is read and dropped so that
// its client sees the 413 (a multiple of the limit; beyond it the connection is just closed).
const drainOversizeFactor = 4

// readBody reads the whole body, bounded in size by MaxBodyBytes and in time by BodyTimeout,
// before the endpoint runs: a client that trickles its body holds a connection for BodyTimeout at
// most, and the deadline is gone before a long operation (a run) starts.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) error {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.opt.BodyTimeout))
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opt.MaxBodyBytes))
	if err != nil {
		// The deadline stays: the server would otherwise wait for the rest of the body before
		// answering. The connection is not reused.
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			// Read (and drop) what the client is still sending, within the same deadline and up
			// to a bound, before answering: closing on a client in the middle of its body resets
			// the connection, and the reset can discard the 413 before the client reads it.
			_, _ = io.CopyN(io.Discard, r.Body, drainOversizeFactor*h.opt.MaxBodyBytes)
			return err
		case errors.As(err, &ne) && ne.Timeout():
			return errcode.New(errcode.RequestTimeout, fmt.Sprintf("request body not received within %s", h.opt.BodyTimeout))
		}
		return errcode.Wrap(errcode.InvalidRequest, err, "reading the request body: "+err.Error())
	}
	_ = rc.SetReadDeadline(time.Time{})
	r.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// checkQuery refuses query parameters the endpoint does not read, and repeated ones: a parameter
// that is silently ignored or read as its first copy hides a caller's mistake.
func checkQuery(r *http.Request, allowed []string) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return errcode.New(errcode.InvalidRequest, "query string: "+err.Error())
	}
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return errcode.New(errcode.InvalidRequest, fmt.Sprintf("query parameter %q: this endpoint takes none", k))
			}
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("query parameter %q: this endpoint takes only %s", k, strings.Join(allowed, ", ")))
		}
		if len(vs) > 1 {
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("query parameter %q given %d times", k, len(vs)))
		}
	}
	return nil
}

// checkBody refuses a body where none is read, and a body whose media type the endpoint does not
// read, before any of it is read.
func checkBody(r *http.Request, kind body) error {
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		return nil
	}
	if kind == noBody {
		return errcode.New(errcode.InvalidRequest, fmt.Sprintf("%s %s takes no request body", r.Method, r.URL.Path))
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = ""
	}
	switch {
	case mt == "application/json":
		return nil
	case ct == "" && len(r.Header.Values("Content-Type")) == 0:
		// No Content-Type at all: the body is read as JSON, the API's own media type (the
		// decoder says what is wrong with it if it is not).
		return nil
	case kind == formBody && (mt == "multipart/form-data" || mt == "application/x-www-form-urlencoded"):
		return nil
	case kind == formBody:
		return errcode.New(errcode.UnsupportedMediaType, fmt.Sprintf("Content-Type %q: POST /envs takes application/json, multipart/form-data or application/x-www-form-urlencoded", ct))
	}
	if mt == "application/x-www-form-urlencoded" {
		return errcode.New(errcode.UnsupportedMediaType, fmt.Sprintf("Content-Type %q: the body must be JSON; send Content-Type: application/json (curl -d sends form data unless told otherwise)", ct))
	}
	return errcode.New(errcode.UnsupportedMediaType, fmt.Sprintf("Content-Type %q: the body must be application/json", ct))
}

// envKey reads {wf}/{node} from the path and version_id from the query, or from bodyVersion.
func envKey(r *http.Request, bodyVersion string) (envid.Key, error) {
	v := r.URL.Query().Get("version_id")
	if v == "" {
		v = bodyVersion
	} else if bodyVersion != "" && bodyVersion != v {
		return envid.Key{}, errcode.New(errcode.InvalidRequest, fmt.Sprintf("version_id %q in the query and %q in the body disagree", v, bodyVersion))
	}
	k, err := envid.New(r.PathValue("workflow_id"), r.PathValue("node_id"), v)
	if err != nil {
		return k, errcode.Wrap(errcode.InvalidID, err, "")
	}
	return k, nil
}

// decodeJSON reads an optional JSON object body into v.
func decodeJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errcode.Wrap(errcode.InvalidRequest, err, "reading the request body: "+err.Error())
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if !utf8.Valid(b) {
		return errcode.New(errcode.InvalidRequest, "request body: not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var coded *errcode.Error
		if errors.As(err, &coded) {
			return coded
		}
		return errcode.Wrap(errcode.InvalidRequest, err, "request body: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return errcode.New(errcode.InvalidRequest, "request body: more than one JSON value")
	}
	return nil
}

// packageList is a JSON body's packages: an array of strings, as the document declares. A string
// (even one holding a JSON array, which form data may send) is refused, not guessed at.
type packageList []string

func (p *packageList) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errcode.New(errcode.InvalidRequest, `packages: want a JSON array of strings, one package each, e.g. ["numpy>=1.24", "pandas"]`)
	}
	for _, s := range list {
		if names := listedNames(s); names != nil {
			return errcode.New(errcode.InvalidPackages, fmt.Sprintf("packages: %q names %d packages; give each its own array item: %s", s, len(names), quotedList(names)))
		}
	}
	*p = list
	return nil
}

// splitPackages reads form values: repeated fields, or a single field holding a JSON array.
func splitPackages(values []string) ([]string, error) {
	if len(values) == 1 && strings.HasPrefix(strings.TrimSpace(values[0]), "[") {
		var list []string
		if err := json.Unmarshal([]byte(values[0]), &list); err != nil {
			return nil, errcode.New(errcode.InvalidPackages, "packages: not a JSON array of strings: "+err.Error())
		}
		return list, nil
	}
	var out []string
	for _, v := range values {
		if names := listedNames(v); names != nil {
			return nil, errcode.New(errcode.InvalidPackages, fmt.Sprintf(
				"packages: %q names %d packages; send a JSON array (packages=%s) or repeat the field (%s)",
				v, len(names), quotedList(names), "packages="+strings.Join(names, "&packages=")))
		}
		if strings.TrimSpace(v) != "" {
			out = append(out, v)
		}
	}
	return out, nil
}

// listedNames splits a package string that is really a comma-separated list of packages
// ("numpy,pandas") into its items, or returns nil. A comma inside a requirement separates version
// clauses ("numpy>=1,<2") or extras ("pkg[a,b]"): only one at the top level followed by a
// name (a letter or digit, not an operator) separates packages.
func listedNames(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[', '(':
			depth++
		case ']', ')':
			depth--
		case ';':
			i = len(s) // a marker follows: its commas are not the list's
		case ',':
			if depth == 0 {
				parts = append(parts, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if len(parts) == 0 {
		return nil
	}
	parts = append(parts, strings.TrimSpace(s[start:]))
	for _, p := range parts[1:] {
		if p == "" || !isAlnum(p[0]) {
			return nil
		}
	}
	return parts
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func quotedList(names []string) string {
	b, _ := json.Marshal(names)
	return string(b)
}

// maxSeconds bounds any number of seconds a request may carry: about 31 years, far below where
// a time.Duration overflows.
const maxSeconds = 1e9

// formFields are the fields of POST /envs as form data; each once, except packages.
var formFields = map[string]bool{"workflow_id": false, "node_id": false, "version_id": false,
	"python_version": false, "packages": true, "requirements_file": false}

// checkForm refuses unknown and repeated form fields, and uploads other than requirements_file.
func checkForm(r *http.Request) error {
	for k, vs := range r.PostForm {
		repeatable, ok := formFields[k]
		if !ok {
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("form field %q: unknown", k))
		}
		if len(vs) > 1 && !repeatable {
			return errcode.New(errcode.InvalidRequest, fmt.Sprintf("form field %q given %d times", k, len(vs)))
		}
	}
	if r.MultipartForm != nil {
		for k := range r.MultipartForm.File {
			if k != "requirements_file" {
				return errcode.New(errcode.InvalidRequest, fmt.Sprintf("form file %q: only requirements_file is read", k))
			}
		}
		if len(r.MultipartForm.File["requirements_file"]) > 0 && len(r.PostForm["requirements_file"]) > 0 {
			return errcode.New(errcode.InvalidRequest, "requirements_file: send it once, as a file or as a field")
		}
	}
	return nil
}

// versioned is the version_id an env-scoped JSON body may carry instead of the query.
type versioned struct {
	VersionID string `json:"version_id"`
}

func (v versioned) version() string { return v.VersionID }

// decodeEnvRequest reads an optional JSON body into body and names the environment it is for.
func decodeEnvRequest(r *http.Request, body interface{ version() string }) (envid.Key, error) {
	if err := decodeJSON(r, body); err != nil {
		return envid.Key{}, err
	}
	return envKey(r, body.version())
}

// limit reads ?limit= (default 50, at most 500).
func limit(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 50, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 500 {
		return 0, errcode.New(errcode.InvalidRequest, "limit: want a whole number from 1 to 500")
	}
	return n, nil
}

func encodeCursor(k envid.Key) string { return k.Cursor() }

func decodeCursor(c string) (envid.Key, error) {
	k, err := envid.ParseCursor(c)
	if err != nil {
		return envid.Key{}, errcode.New(errcode.InvalidRequest, err.Error())
	}
	return k, nil
}

// refuseJSONAsForm says what to do with a JSON object sent as urlencoded form data, what curl -d
// does without -H 'Content-Type: application/json': read as a form, its text is one unknown field.
func refuseJSONAsForm(r *http.Request) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return errcode.Wrap(errcode.InvalidRequest, err, "reading the request body: "+err.Error())
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' && json.Valid(t) {
		return errcode.New(errcode.UnsupportedMediaType, "the body is JSON but Content-Type says application/x-www-form-urlencoded "+
			"(curl -d's default): send Content-Type: application/json")
	}
	return nil
}

// decodeCreate reads POST /envs: JSON, or form data with an optional requirements_file upload.
// The requirements file is read here and validated by the service, with the package lists.
func (h *Handler) decodeCreate(r *http.Request) (envs.CreateRequest, error) {
	var (
		wf, node, version, python string
		packages                  []string
		requirements              string
		from                      *envid.Key
		err                       error
	)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 || len(r.Header.Values("Content-Type")) == 0 {
		ct = "application/json" // no body, or no media type: the JSON decoder reports what is wrong
	}
	switch ct {
	case "application/json":
		var body struct {
			WorkflowID    string      `json:"workflow_id"`
			NodeID        string      `json:"node_id"`
			VersionID     string      `json:"version_id"`
			PythonVersion string      `json:"python_version"`
			Packages      packageList `json:"packages"`
			Requirements  string      `json:"requirements"`
			From          *struct {
				WorkflowID string `json:"workflow_id"`
				NodeID     string `json:"node_id"`
				VersionID  string `json:"version_id"`
			} `json:"from"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return envs.CreateRequest{}, err
		}
		if f := body.From; f != nil {
			if f.WorkflowID == "" || f.NodeID == "" {
				return envs.CreateRequest{}, errcode.New(errcode.InvalidRequest, "from: workflow_id and node_id are required")
			}
			k, err := envid.New(f.WorkflowID, f.NodeID, f.VersionID)
			if err != nil {
				return envs.CreateRequest{}, errcode.Wrap(errcode.InvalidID, err, "from: "+err.Error())
			}
			from = &k
		}
		wf, node, version, python, packages, requirements = body.WorkflowID, body.NodeID, body.VersionID, body.PythonVersion, body.Packages, body.Requirements
	case "multipart/form-data", "application/x-www-form-urlencoded":
		if ct == "multipart/form-data" {
			// All of it in memory (the body is bounded already), so no upload touches the disk.
			err = r.ParseMultipartForm(h.opt.MaxBodyBytes)
		} else {
			if err := refuseJSONAsForm(r); err != nil {
				return envs.CreateRequest{}, err
			}
			err = r.ParseForm()
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return envs.CreateRequest{}, err
			}
			return envs.CreateRequest{}, errcode.Wrap(errcode.InvalidRequest, err, "reading form data: "+err.Error())
		}
		if err := checkForm(r); err != nil {
			return envs.CreateRequest{}, err
		}
		wf, node, version, python = r.PostFormValue("workflow_id"), r.PostFormValue("node_id"), r.PostFormValue("version_id"), r.PostFormValue("python_version")
		if packages, err = splitPackages(r.PostForm["packages"]); err != nil {
			return envs.CreateRequest{}, err
		}
		if r.MultipartForm != nil {
			if fhs := r.MultipartForm.File["requirements_file"]; len(fhs) > 0 {
				if len(fhs) > 1 {
					return envs.CreateRequest{}, errcode.New(errcode.InvalidRequest, "requirements_file: send one file")
				}
				f, err := fhs[0].Open()
				if err != nil {
					return envs.CreateRequest{}, errcode.Wrap(errcode.InvalidRequest, err, "requirements_file: "+err.Error())
				}
				b, err := io.ReadAll(io.LimitReader(f, reqspec.MaxRequirementsFile+1))
				f.Close()
				if err != nil {
					return envs.CreateRequest{}, errcode.Wrap(errcode.InvalidRequest, err, "requirements_file: "+err.Error())
				}
				requirements = string(b)
			}
		}
		if requirements == "" {
			requirements = r.PostFormValue("requirements_file")
		}
	default:
		return envs.CreateRequest{}, errcode.New(errcode.UnsupportedMediaType, "POST /envs takes form data (multipart or urlencoded) or a JSON body")
	}
	if wf == "" || node == "" {
		return envs.CreateRequest{}, errcode.New(errcode.InvalidRequest, "workflow_id and node_id are required")
	}
	key, err := envid.New(wf, node, version)
	if err != nil {
		return envs.CreateRequest{}, errcode.Wrap(errcode.InvalidID, err, "")
	}
	return envs.CreateRequest{Key: key, PythonVersion: python, Packages: packages, Requirements: requirements, From: from}, nil
}
