// Package builds owns the builds on the shared storage: an installed environment materialised
// once per identity (lock content, interpreter, install settings) under
// ENVS_BASE_PATH/.builds/<id>, complete once its marker is written and never modified after that
// (docs/builds.md). Environments point at builds through their own small .venv (link.go); runs
// hold a build's lock shared, materialising and removing hold it exclusive.
package builds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envfabric/envfabric/agent/flock"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/shared/errcode"
)

// Names under ENVS_BASE_PATH. Ids never start with a dot, so none of them can be a workflow.
const (
	// DirName holds the builds.
	DirName = ".builds"
	// lockDirName (inside DirName) holds one lock file per build.
	lockDirName = ".locks"
	// MarkerFile is written last, by rename: a build directory without it is a half build.
	MarkerFile = "BUILD.json"
	// damagedPrefix names a damaged build set aside by a repair (inside DirName).
	damagedPrefix = ".damaged-"
	// trashPrefix names a build being removed (inside DirName).
	trashPrefix = ".trash-"
	// VenvDir is the build's virtual environment inside its directory.
	VenvDir = ".venv"

	pyprojectFile = "pyproject.toml"
	lockFile      = "uv.lock"
)

// Identity is what makes two builds the same: equal identities install the same files.
type Identity struct {
	Lock              string
	PythonPath        string
	PythonFullVersion string
	Settings          uv.InstallSettings
}

// ID is the build id: 32 hex digits of a SHA-256 over every field, each length-prefixed so no
// two identities hash the same bytes.
func (i Identity) ID() string {
	h := sha256.New()
	for _, f := range []string{
		"envfabric-build-v1",
		i.Lock,
		i.PythonPath,
		i.PythonFullVersion,
		"link-mode=" + i.Settings.LinkMode,
		"no-build=" + strconv.FormatBool(i.Settings.NoBuild),
		"compile-bytecode=" + i.Settings.CompileBytecode,
	} {
		fmt.Fprintf(h, "%d:%s\n", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// ValidID reports whether id can name a build: 32 lower-case hex digits.
func ValidID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// checkID refuses an id that cannot name a build (it would name a path).
func checkID(id string) error {
	if !ValidID(id) {
		return errcode.New(errcode.InvalidRequest, fmt.Sprintf("build id %q: want 32 lower-case hex digits", id))
	}
	return nil
}

// Package is one installed distribution.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Marker is BUILD.json: what the build is, written when it is complete.
type Marker struct {
	ID                string             `json:"id"`
	PythonPath        string             `json:"python_path"`
	PythonFullVersion string             `json:"python_full_version"`
	Settings          uv.InstallSettings `json:"settings"`
	LockSHA256        string             `json:"lock_sha256"`
	Packages          []Package          `json:"packages"`
	CompletedUnixMs   int64              `json:"completed_unix_ms"`
}

// Info describes one build directory.
type Info struct {
	ID   string
	Dir  string
	Venv string
	// Marker is nil for a half build.
	Marker         *Marker
	ExclusiveBytes int64
	// LastUsed is the last run through the API that held the build (zero: none seen).
	LastUsed time.Time
	// Created is set by Ensure when this call materialised the build.
	Created bool
}

// Complete reports whether the build's marker exists.
func (i Info) Complete() bool { return i.Marker != nil }

// Store is the builds under one ENVS_BASE_PATH.
type Store struct {
	base   string
	root   string
	uv     *uv.Executor
	logger *slog.Logger

	mu        sync.Mutex
	exclusive map[string]measured // build id → its last measured exclusive bytes
}

// measured is a walk's result. A complete build's files never change, but their link counts do
// (a cache prune leaves a build's file its only link), so a measure is reused for a while only:
// listing every build must not walk every file of every build each time.
type measured struct {
	bytes int64
	at    time.Time
}

// measureTTL bounds how long a build's exclusive bytes are reused.
const measureTTL = 10 * time.Minute

// New returns the store of the builds under envsBase.
func New(envsBase string, ex *uv.Executor, logger *slog.Logger) *Store {
	return &Store{base: envsBase, root: filepath.Join(envsBase, DirName), uv: ex, logger: logger}
}

// Dir is build id's directory.
func (s *Store) Dir(id string) string { return filepath.Join(s.root, id) }

// Venv is build id's virtual environment.
func (s *Store) Venv(id string) string { return filepath.Join(s.root, id, VenvDir) }

func (s *Store) lockPath(id string) string { return filepath.Join(s.root, lockDirName, id+".lock") }

// gatePath is build id's gate: closed (held exclusive) by a repair so that new runs wait for it.
func (s *Store) gatePath(id string) string { return filepath.Join(s.root, lockDirName, id+".gate") }

// Identity is the identity of a build of lock for the interpreter at python, with this agent's
// install settings.
func (s *Store) Identity(ctx context.Context, lock, python string) (Identity, error) {
	full, err := s.uv.PythonVersion(ctx, python)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Lock: lock, PythonPath: python, PythonFullVersion: full, Settings: s.uv.InstallSettings()}, nil
}

// Ensure makes sure the build of (pyproject, lock, python) exists complete, materialising it
// under the build's exclusive lock if not; several agents may call it at once, one
// materialises and the others wait (bounded by ctx) and answer the same build. A half build left
// by an interrupted materialisation is removed and materialised again. With replaceDamaged, a
// complete build whose files no longer match its packages' RECORD is set aside and materialised
// afresh at the same id (see repair). It returns the build and uv's output.
func (s *Store) Ensure(ctx context.Context, pyproject, lock, python string, replaceDamaged bool) (Info, string, error) {
	ident, err := s.Identity(ctx, lock, python)
	if err != nil {
		return Info{}, "", err
	}
	id := ident.ID()
	// A complete build is never modified, so finding it (and verifying it) needs no exclusive
	// lock; taking one would wait for every run holding the build shared.
	if m := s.marker(id); m != nil {
		if !replaceDamaged {
			return s.stat(id, false), "", nil
		}
		check, err := s.Verify(ctx, id)
		if err != nil {
			return Info{}, "", err
		}
		if check.Intact {
			return s.stat(id, false), "", nil
		}
		return s.repair(ctx, id, ident, pyproject)
	}
	l, err := flock.Wait(ctx, s.lockPath(id), flock.Exclusive)
	if err != nil {
		return Info{}, "", s.busy(err, id)
	}
	defer l.Release()
	if s.marker(id) != nil { // another agent materialised it while we waited
		return s.stat(id, false), "", nil
	}
	if _, err := os.Lstat(s.Dir(id)); err == nil {
		// Nobody materialises it (we hold the lock): an interrupted materialisation left it.
		s.logger.WarnContext(ctx, "removing a half build", "build", id)
		if err := s.setAside(id, trashPrefix, true); err != nil {
			return Info{}, "", err
		}
	}
	out, err := s.materialise(ctx, id, ident, pyproject)
	if err != nil {
		return Info{}, out, err
	}
	return s.stat(id, true), out, nil
}

// repair replaces damaged build id. It needs the exclusive lock, which the runs holding the
// build shared keep from it, and new runs keep coming: so it first closes the build's gate
// (an exclusive flock that Hold passes through shared before it takes the build's lock), which
// makes new runs wait, then waits for the runs under way to end, all bounded by ctx. A crashed
// repairer's flocks go with its process, so the gate never stays closed.
func (s *Store) repair(ctx context.Context, id string, ident Identity, pyproject string) (Info, string, error) {
	gate, err := flock.Wait(ctx, s.gatePath(id), flock.Exclusive)
	if err != nil {
		return Info{}, "", s.busy(err, id)
	}
	defer gate.Release()
	l, err := flock.Wait(ctx, s.lockPath(id), flock.Exclusive)
	if err != nil {
		return Info{}, "", s.busy(err, id)
	}
	defer l.Release()
	m := s.marker(id)
	if m != nil {
		check := s.verify(ctx, id, m)
		if check.Intact { // repaired by another agent while we waited
			return s.stat(id, false), "", nil
		}
		s.logger.WarnContext(ctx, "replacing a damaged build", "build", id, "damaged", check.DamagedNames())
	}
	out, err := s.replace(ctx, id, ident, pyproject)
	if err != nil {
		return Info{}, out, err
	}
	return s.stat(id, true), out, nil
}

// replace sets a damaged build aside and materialises it again. Damage done through a hardlink
// (a file truncated in place) is damage of the uv cache's copy too, which a plain
// materialisation would link again: when the fresh build is still damaged, the damaged
// packages' cache entries are cleaned and it is materialised once more.
func (s *Store) replace(ctx context.Context, id string, ident Identity, pyproject string) (string, error) {
	if _, err := os.Lstat(s.Dir(id)); err == nil {
		if err := s.setAside(id, damagedPrefix, true); err != nil {
			return "", err
		}
	}
	out, err := s.materialise(ctx, id, ident, pyproject)
	if err != nil {
		return out, err
	}
	again := s.verify(ctx, id, s.marker(id))
	if again.Intact {
		return out, nil
	}
	names := again.DamagedNames()
	s.logger.WarnContext(ctx, "the uv cache holds the damage too; cleaning its entries", "build", id, "packages", names)
	if cout, err := s.uv.CleanCache(ctx, names); err != nil {
		return out + cout, err
	}
	if err := s.setAside(id, damagedPrefix, true); err != nil {
		return out, err
	}
	return s.materialise(ctx, id, ident, pyproject)
}

// setAside renames build id's directory out of the way (an atomic step: a reader sees the build
// or nothing), then removes it when remove is set.
func (s *Store) setAside(id, prefix string, remove bool) error {
	s.forget(id)
	aside := filepath.Join(s.root, fmt.Sprintf("%s%s-%d", prefix, id, time.Now().UnixNano()))
	if err := os.Rename(s.Dir(id), aside); err != nil {
		return fmt.Errorf("setting build %s aside: %w", id, err)
	}
	if remove {
		if err := os.RemoveAll(aside); err != nil {
			s.logger.Warn("removing a build set aside", "path", aside, "err", err)
		}
	}
	return nil
}

// materialise installs the build in its directory: the project files, uv sync --frozen, then the
// marker by rename after everything is on disk. The caller holds the exclusive lock and made sure
// the directory does not exist.
func (s *Store) materialise(ctx context.Context, id string, ident Identity, pyproject string) (string, error) {
	dir := s.Dir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating build %s: %w", id, err)
	}
	fail := func(err error) error {
		// A half build is never used (no marker); removing it here only saves the next
		// materialisation the work. It runs even when ctx ended.
		if rerr := os.RemoveAll(dir); rerr != nil {
			s.logger.Warn("removing a failed build", "build", id, "err", rerr)
		}
		return err
	}
	for name, body := range map[string]string{pyprojectFile: pyproject, lockFile: ident.Lock} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return "", fail(fmt.Errorf("writing %s of build %s: %w", name, id, err))
		}
	}
	start := time.Now()
	out, err := s.uv.Sync(ctx, uv.Project{Dir: dir, Python: ident.PythonPath}, true)
	if err != nil {
		return out, fail(err)
	}
	sum := sha256.Sum256([]byte(ident.Lock))
	m := Marker{
		ID:                id,
		PythonPath:        ident.PythonPath,
		PythonFullVersion: ident.PythonFullVersion,
		Settings:          ident.Settings,
		LockSHA256:        hex.EncodeToString(sum[:]),
		Packages:          installed(filepath.Join(dir, VenvDir)),
		CompletedUnixMs:   time.Now().UnixMilli(),
	}
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return out, fail(err)
	}
	// What uv wrote must be on disk before the marker says it is: a crash after the rename
	// must not leave a "complete" build with files lost from the page cache.
	if f, err := os.Open(dir); err == nil {
		_ = unix.Syncfs(int(f.Fd()))
		f.Close()
	}
	if err := WriteAtomic(filepath.Join(dir, MarkerFile), append(body, '\n')); err != nil {
		return out, fail(err)
	}
	s.logger.InfoContext(ctx, "build materialised", "build", id, "packages", len(m.Packages), "duration", time.Since(start))
	return out, nil
}

// marker reads build id's marker; nil when the build is not complete.
func (s *Store) marker(id string) *Marker {
	b, err := os.ReadFile(filepath.Join(s.Dir(id), MarkerFile))
	if err != nil {
		return nil
	}
	var m Marker
	if json.Unmarshal(b, &m) != nil || m.ID != id {
		return nil
	}
	return &m
}

// stat describes build id as it is on disk.
func (s *Store) stat(id string, created bool) Info {
	info := Info{ID: id, Dir: s.Dir(id), Venv: s.Venv(id), Marker: s.marker(id), Created: created}
	info.ExclusiveBytes = s.exclusiveBytes(id, info.Marker != nil && !created)
	if info.Marker != nil {
		if fi, err := os.Stat(s.lockPath(id)); err == nil && fi.ModTime().UnixMilli() > info.Marker.CompletedUnixMs {
			info.LastUsed = fi.ModTime()
		}
	}
	return info
}

// exclusiveBytes measures build id, reusing a recent measure of a complete build when reuse is
// set.
func (s *Store) exclusiveBytes(id string, reuse bool) int64 {
	s.mu.Lock()
	m, ok := s.exclusive[id]
	s.mu.Unlock()
	if reuse && ok && time.Since(m.at) < measureTTL {
		return m.bytes
	}
	n := ExclusiveBytes(s.Dir(id))
	s.mu.Lock()
	if s.exclusive == nil {
		s.exclusive = map[string]measured{}
	}
	s.exclusive[id] = measured{bytes: n, at: time.Now()}
	s.mu.Unlock()
	return n
}

// forget drops what is remembered of build id (it was removed or set aside).
func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.exclusive, id)
	s.mu.Unlock()
}

// Stat describes build id; ok is false when it has no directory.
func (s *Store) Stat(id string) (Info, bool, error) {
	if err := checkID(id); err != nil {
		return Info{}, false, err
	}
	if _, err := os.Lstat(s.Dir(id)); err != nil {
		return Info{}, false, nil
	}
	return s.stat(id, false), true, nil
}

// Missing is the error of a build that does not exist complete.
func missing(id string) error {
	return errcode.New(errcode.BuildMissing, fmt.Sprintf("build %s does not exist complete on this storage (removed or hibernated); build it again", id))
}

// Hold takes build id's lock shared for a run, so that no removal or repair takes the build away
// meanwhile, and records the use (the lock file's modification time, on the shared storage, so
// every agent sees it). A build that is not complete fails with errcode.BuildMissing.
func (s *Store) Hold(ctx context.Context, id string) (release func(), err error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if s.marker(id) == nil {
		return nil, missing(id)
	}
	// Through the gate first: a repair under way makes new runs wait for the repaired build.
	gate, err := flock.Wait(ctx, s.gatePath(id), flock.Shared)
	if err != nil {
		return nil, s.busy(err, id)
	}
	gate.Release()
	l, err := flock.Wait(ctx, s.lockPath(id), flock.Shared)
	if err != nil {
		return nil, s.busy(err, id)
	}
	if s.marker(id) == nil { // removed while we waited
		l.Release()
		return nil, missing(id)
	}
	now := time.Now()
	if err := os.Chtimes(l.Path(), now, now); err != nil {
		s.logger.Warn("recording the use of a build", "build", id, "err", err)
	}
	return l.Release, nil
}

// RequireComplete fails with errcode.BuildMissing unless build id exists complete.
func (s *Store) RequireComplete(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if s.marker(id) == nil {
		return missing(id)
	}
	return nil
}

// busy turns a lock wait that ended into the error a caller sees.
func (s *Store) busy(err error, id string) error {
	if errors.Is(err, flock.ErrBusy) {
		return errcode.Wrap(errcode.EnvLocked, err, fmt.Sprintf("build %s is being materialised or removed elsewhere: %v", id, err))
	}
	return err
}

// Removed is the outcome of Remove.
type Removed struct {
	Existed    bool
	InUse      bool
	BytesFreed int64
}

// Remove deletes build id unless a run holds it (InUse, nothing removed). The lock is tried, not
// waited for: a run may last long, and the caller decides again later.
func (s *Store) Remove(ctx context.Context, id string) (Removed, error) {
	if err := checkID(id); err != nil {
		return Removed{}, err
	}
	l, err := flock.Try(s.lockPath(id), flock.Exclusive)
	if errors.Is(err, flock.ErrBusy) {
		return Removed{InUse: true, Existed: true}, nil
	}
	if err != nil {
		return Removed{}, err
	}
	defer l.ReleaseRemoving()
	defer os.Remove(s.gatePath(id))
	dir := s.Dir(id)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return Removed{}, nil
	}
	freed := ExclusiveBytes(dir)
	s.forget(id)
	aside := filepath.Join(s.root, fmt.Sprintf("%s%s-%d", trashPrefix, id, time.Now().UnixNano()))
	if err := os.Rename(dir, aside); err != nil {
		return Removed{}, fmt.Errorf("removing build %s: %w", id, err)
	}
	if err := os.RemoveAll(aside); err != nil {
		return Removed{}, fmt.Errorf("removing build %s: %w", id, err)
	}
	s.logger.InfoContext(ctx, "build removed", "build", id, "bytes_freed", freed)
	return Removed{Existed: true, BytesFreed: freed}, nil
}

// List describes every build directory, complete or not.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	entries, err := os.ReadDir(s.root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing builds: %w", err)
	}
	var out []Info
	for _, e := range entries {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if e.IsDir() && ValidID(e.Name()) {
			out = append(out, s.stat(e.Name(), false))
		}
	}
	return out, nil
}

// Sweep removes what interrupted repairs and removals left behind (.damaged-*, .trash-*) older
// than minAge, so that one under way on another host is not raced.
func (s *Store) Sweep(minAge time.Duration) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), damagedPrefix) && !strings.HasPrefix(e.Name(), trashPrefix) {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < minAge {
			continue
		}
		p := filepath.Join(s.root, e.Name())
		if err := os.RemoveAll(p); err != nil {
			s.logger.Warn("removing a build left aside", "path", p, "err", err)
			continue
		}
		s.logger.Info("removed a build left aside by an interrupted repair or removal", "path", p)
	}
}

// installed lists the distributions installed in venv, sorted by name.
func installed(venv string) []Package {
	sp := SitePackages(venv)
	if sp == "" {
		return nil
	}
	m, _ := filepath.Glob(filepath.Join(sp, "*.dist-info"))
	out := make([]Package, 0, len(m))
	for _, d := range m {
		out = append(out, distInfoPackage(filepath.Base(d)))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// distInfoPackage splits "<name>-<version>.dist-info"; the name part never holds a hyphen
// (installers escape it), so the last hyphen separates them.
func distInfoPackage(dir string) Package {
	base := strings.TrimSuffix(dir, ".dist-info")
	if i := strings.LastIndexByte(base, '-'); i > 0 {
		return Package{Name: base[:i], Version: base[i+1:]}
	}
	return Package{Name: base}
}

// SitePackages is venv's site-packages directory, or "" when there is none.
func SitePackages(venv string) string {
	m, _ := filepath.Glob(filepath.Join(venv, "lib", "python*", "site-packages"))
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// ExclusiveBytes sums the sizes of the regular files under dir with one link: what deleting dir
// really frees (files hardlinked from the uv cache stay in the cache). Symbolic links are not
// followed, so an environment's link to a build does not count the build.
func ExclusiveBytes(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 1 {
			total += fi.Size()
		}
		return nil
	})
	return total
}

// WriteAtomic replaces path with data through a temporary file in the same directory, mode
// 0644, synced before the rename: a reader sees the old file or the new one.
func WriteAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(0o644), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
