// Package pyindex builds small pure-Python wheels and serves them from a PEP 503 simple index on
// an httptest server, so tests resolve and install real packages without the internet. Import it
// only from _test.go files and from test programs (scripts/chaos); never from a shipped binary.
package pyindex

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/envfabric/envfabric/shared/pyproject"
	"time"
)

// Package is one release to publish: a wheel named <Name>-<Version>-py3-none-any.whl whose
// METADATA lists Requires as Requires-Dist lines.
type Package struct {
	Name           string
	Version        string
	Requires       []string
	RequiresPython string
	// Sdist publishes a source distribution (<name>-<version>.tar.gz) instead of a wheel. Its
	// in-tree PEP 517 backend builds the wheel, so installing it runs the package's own code.
	Sdist bool
}

// Universe is the fixed set of releases the tests share:
//
//	alpha   1.0.0, 1.1.0, 2.0.0
//	beta    1.0.0 (alpha>=1.0,<2), 2.0.0 (alpha>=2)
//	gamma   1.0.0 (alpha<1.1)
//	delta   0.1.0, 0.2.0
//	epsilon 1.0.0 (beta, delta)
func Universe() []Package {
	return []Package{
		{Name: "alpha", Version: "1.0.0"},
		{Name: "alpha", Version: "1.1.0"},
		{Name: "alpha", Version: "2.0.0"},
		{Name: "beta", Version: "1.0.0", Requires: []string{"alpha>=1.0,<2"}},
		{Name: "beta", Version: "2.0.0", Requires: []string{"alpha>=2"}},
		{Name: "gamma", Version: "1.0.0", Requires: []string{"alpha<1.1"}},
		{Name: "delta", Version: "0.1.0"},
		{Name: "delta", Version: "0.2.0"},
		{Name: "epsilon", Version: "1.0.0", Requires: []string{"beta", "delta"}},
	}
}

// Index is a running simple index.
type Index struct {
	// URL is the simple index ("http://127.0.0.1:port/simple/"), the value for UV_DEFAULT_INDEX.
	URL string

	files    map[string][]byte        // wheel file name → bytes
	projects map[string][]string      // normalised name → wheel file names
	hashes   map[string]string        // wheel file name → sha256 hex
	stop     chan struct{}            // closed by Close (at the end of the test)
	stopOnce sync.Once                // Close runs once
	mu       sync.Mutex               // guards stalls
	stalls   map[string]chan struct{} // normalised name → closed on the first request
	onceFor  map[string]*sync.Once    // one close per stall
	releases map[string]chan struct{} // normalised name → closed by Release
	server   *httptest.Server
}

// Serve publishes pkgs until the test ends.
func Serve(t testing.TB, pkgs []Package) *Index {
	t.Helper()
	ix, err := Start(pkgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ix.Close)
	return ix
}

// Start publishes pkgs until Close. It is Serve for a program that has no testing.TB (the chaos
// harness runs a fleet outside `go test`).
func Start(pkgs []Package) (*Index, error) {
	ix := &Index{
		files:    map[string][]byte{},
		projects: map[string][]string{},
		hashes:   map[string]string{},
		stop:     make(chan struct{}),
		stalls:   map[string]chan struct{}{},
		onceFor:  map[string]*sync.Once{},
		releases: map[string]chan struct{}{},
	}
	for _, p := range pkgs {
		build := BuildWheel
		if p.Sdist {
			build = BuildSdist
		}
		name, data, err := build(p)
		if err != nil {
			return nil, fmt.Errorf("build %s %s: %w", p.Name, p.Version, err)
		}
		sum := sha256.Sum256(data)
		ix.files[name] = data
		ix.hashes[name] = hex.EncodeToString(sum[:])
		n := pyproject.Normalize(p.Name)
		ix.projects[n] = append(ix.projects[n], name)
		if p.Sdist {
			continue
		}
		meta := []byte(metadata(p))
		msum := sha256.Sum256(meta)
		ix.files[name+".metadata"] = meta
		ix.hashes[name+".metadata"] = hex.EncodeToString(msum[:])
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /simple/{$}", ix.serveRoot)
	mux.HandleFunc("GET /simple/{project}/{$}", ix.serveProject)
	mux.HandleFunc("GET /files/{file}", ix.serveFile)
	ix.server = httptest.NewServer(mux)
	ix.URL = ix.server.URL + "/simple/"
	return ix, nil
}

// Close releases stalled requests and stops the server. Closing twice does nothing.
func (ix *Index) Close() {
	ix.stopOnce.Do(func() {
		close(ix.stop)
		ix.server.Close()
	})
}

// Stall makes every request for project name's page hang until the request is abandoned or the
// test ends. The returned channel is closed when the first such request arrives, so a test knows
// that uv is waiting on the index.
func (ix *Index) Stall(name string) <-chan struct{} {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := pyproject.Normalize(name)
	ch := make(chan struct{})
	ix.stalls[n] = ch
	ix.onceFor[n] = new(sync.Once)
	ix.releases[n] = make(chan struct{})
	return ch
}

// Release ends a Stall of name: requests waiting for its page, and later ones, are answered.
func (ix *Index) Release(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := pyproject.Normalize(name)
	if rel, ok := ix.releases[n]; ok {
		close(rel)
		delete(ix.releases, n)
		delete(ix.stalls, n)
		delete(ix.onceFor, n)
	}
}

func (ix *Index) serveRoot(w http.ResponseWriter, _ *http.Request) {
	names := make([]string, 0, len(ix.projects))
	for n := range ix.projects {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><body>\n")
	for _, n := range names {
		fmt.Fprintf(&b, "<a href=\"/simple/%s/\">%s</a>\n", n, n)
	}
	b.WriteString("</body></html>\n")
	writePage(w, b.String())
}

func (ix *Index) serveProject(w http.ResponseWriter, r *http.Request) {
	n := pyproject.Normalize(r.PathValue("project"))
	ix.mu.Lock()
	stall, once, release := ix.stalls[n], ix.onceFor[n], ix.releases[n]
	ix.mu.Unlock()
	if stall != nil {
		once.Do(func() { close(stall) })
		select {
		case <-r.Context().Done():
			return
		case <-ix.stop:
			return
		case <-release:
		}
	}
	wheels, ok := ix.projects[n]
	if !ok {
		http.NotFound(w, r)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html><body>\n<h1>Links for %s</h1>\n", n)
	for _, f := range wheels {
		// PEP 658/714: the core metadata is served beside the wheel, as PyPI does, so resolution
		// reads it without touching the wheel.
		if strings.HasSuffix(f, ".tar.gz") {
			fmt.Fprintf(&b, "<a href=\"/files/%s#sha256=%s\">%s</a><br/>\n", f, ix.hashes[f], html.EscapeString(f))
			continue
		}
		mh := "sha256=" + ix.hashes[f+".metadata"]
		fmt.Fprintf(&b, "<a href=\"/files/%s#sha256=%s\" data-dist-info-metadata=\"%s\" data-core-metadata=\"%s\">%s</a><br/>\n",
			f, ix.hashes[f], mh, mh, html.EscapeString(f))
	}
	b.WriteString("</body></html>\n")
	writePage(w, b.String())
}

func (ix *Index) serveFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	data, ok := ix.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
}

func writePage(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=0")
	_, _ = w.Write([]byte(body))
}

// metadata is p's core metadata (the wheel's METADATA file).
func metadata(p Package) string {
	var meta strings.Builder
	fmt.Fprintf(&meta, "Metadata-Version: 2.1\nName: %s\nVersion: %s\n", p.Name, p.Version)
	for _, r := range p.Requires {
		fmt.Fprintf(&meta, "Requires-Dist: %s\n", r)
	}
	if p.RequiresPython != "" {
		fmt.Fprintf(&meta, "Requires-Python: %s\n", p.RequiresPython)
	}
	return meta.String()
}

// BuildWheel returns the file name and bytes of p's wheel: <pkg>/__init__.py with __version__,
// a data file, and a .dist-info with METADATA, WHEEL and a correct RECORD.
func BuildWheel(p Package) (string, []byte, error) {
	if p.Name == "" || p.Version == "" {
		return "", nil, fmt.Errorf("package needs a name and a version")
	}
	mod := strings.ReplaceAll(pyproject.Normalize(p.Name), "-", "_")
	distInfo := fmt.Sprintf("%s-%s.dist-info", mod, p.Version)
	fileName := fmt.Sprintf("%s-%s-py3-none-any.whl", mod, p.Version)

	entries := []struct{ path, body string }{
		{mod + "/__init__.py", fmt.Sprintf("__version__ = %q\n", p.Version)},
		{mod + "/data.txt", strings.Repeat(fmt.Sprintf("%s %s test data\n", p.Name, p.Version), 16)},
		{distInfo + "/METADATA", metadata(p)},
		{distInfo + "/WHEEL", "Wheel-Version: 1.0\nGenerator: envfabric-pyindex\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	for _, e := range entries {
		sum := sha256.Sum256([]byte(e.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", e.path, base64.RawURLEncoding.EncodeToString(sum[:]), len(e.body))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", distInfo)
	entries = append(entries, struct{ path, body string }{distInfo + "/RECORD", record.String()})

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		f, err := zw.CreateHeader(&zip.FileHeader{
			Name:     e.path,
			Method:   zip.Deflate,
			Modified: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		})
		if err != nil {
			return "", nil, err
		}
		if _, err := f.Write([]byte(e.body)); err != nil {
			return "", nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return "", nil, err
	}
	return fileName, buf.Bytes(), nil
}

// sdistBackend is the in-tree PEP 517 backend of BuildSdist: it writes the wheel itself, with
// nothing but the standard library, so building needs no index.
const sdistBackend = `import base64, hashlib, os, zipfile

MOD, VERSION = %q, %q
METADATA = %q
DIST_INFO = MOD + "-" + VERSION + ".dist-info"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(METADATA)
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open(os.path.join(MOD, "__init__.py"), "rb") as f:
        init = f.read()
    files = {
        MOD + "/__init__.py": init,
        DIST_INFO + "/METADATA": METADATA.encode(),
        DIST_INFO + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: envfabric-pyindex\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += "%%s,sha256=%%s,%%d\n" %% (path, digest, len(data))
    record += DIST_INFO + "/RECORD,,\n"
    name = MOD + "-" + VERSION + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(DIST_INFO + "/RECORD", record)
    return name
`

// BuildSdist returns the file name and bytes of p's source distribution: PKG-INFO, a
// pyproject.toml naming the in-tree backend (backend.py), and <pkg>/__init__.py.
func BuildSdist(p Package) (string, []byte, error) {
	if p.Name == "" || p.Version == "" {
		return "", nil, fmt.Errorf("package needs a name and a version")
	}
	mod := strings.ReplaceAll(pyproject.Normalize(p.Name), "-", "_")
	top := fmt.Sprintf("%s-%s", mod, p.Version)
	var deps []string
	for _, r := range p.Requires {
		deps = append(deps, fmt.Sprintf("%q", r))
	}
	pp := fmt.Sprintf("[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n\n"+
		"[project]\nname = %q\nversion = %q\ndependencies = [%s]\n", p.Name, p.Version, strings.Join(deps, ", "))
	entries := []struct{ path, body string }{
		{top + "/PKG-INFO", metadata(p)},
		{top + "/pyproject.toml", pp},
		{top + "/backend.py", fmt.Sprintf(sdistBackend, mod, p.Version, metadata(p))},
		{top + "/" + mod + "/__init__.py", fmt.Sprintf("__version__ = %q\nbuilt_from_sdist = True\n", p.Version)},
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.path, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", nil, err
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			return "", nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return "", nil, err
	}
	if err := gz.Close(); err != nil {
		return "", nil, err
	}
	return top + ".tar.gz", buf.Bytes(), nil
}
