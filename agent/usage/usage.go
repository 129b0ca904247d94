// Package usage tracks when each environment on this host was last used, including runs of an
// environment's interpreter that never went through the fabric (a workflow executor starting
// `.venv/bin/python` itself), and measures the uv cache for the metrics.
//
// Two signals are read, because neither is enough alone, and they cost differently:
//   - pyvenv.cfg's access time, on the shared storage. Python reads it at every start of the
//     environment's interpreter. Mounts are usually relatime, where an access updates atime only
//     while atime <= mtime or ctime, so after seeing a use the tracker "arms" the file again by
//     setting atime back to mtime; the next start then moves atime forward. noatime mounts give
//     nothing here. The file is the same for every host, so it is read only when the control
//     plane asks (CheckStorage), by one agent, for the environments a cleanup pass is about to
//     remove: metadata calls against the NAS grow with the candidates, not with the fleet.
//   - live processes whose argv[0] is inside an environment (a long job is in use the whole
//     time). These are per host (/proc, local), scanned every interval by every agent.
//
// Both are per environment although environments share builds (agent/builds): each environment's
// .venv holds its own copy of pyvenv.cfg, which CPython reads when started as
// <env_path>/.venv/bin/python, and that path is the process's argv[0]. Runs through the API start
// the build's interpreter instead and are recorded by the agent (Used, and the build's lock file).
package usage

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envfabric/envfabric/shared/envid"
)

// Sources of a use.
const (
	SourceAPI         = "api"
	SourceInterpreter = "interpreter"
	SourceProcess     = "process"
)

// Use is the last use seen of one environment.
type Use struct {
	Key    envid.Key
	At     time.Time
	Source string
}

// Tracker remembers the last use of every environment under one base path.
type Tracker struct {
	base string
	log  *slog.Logger
	proc string // /proc, replaceable in tests

	// storageCalls counts the metadata calls made against the shared storage (a stat or a
	// utimes of a pyvenv.cfg): what the NAS pays for the use signal.
	storageCalls atomic.Int64

	mu      sync.Mutex
	last    map[envid.Key]Use
	scanned time.Time
}

// StorageCalls is how many metadata calls (stat, utimes) the tracker has made against the shared
// storage since it was made.
func (t *Tracker) StorageCalls() int64 { return t.storageCalls.Load() }

// New returns a tracker of the environments under base.
func New(base string, log *slog.Logger) *Tracker {
	return &Tracker{base: base, log: log, proc: "/proc", last: map[envid.Key]Use{}}
}

// Used records a use seen directly (a run through this agent).
func (t *Tracker) Used(key envid.Key, at time.Time, source string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.last[key]; !ok || at.After(u.At) {
		t.last[key] = Use{Key: key, At: at, Source: source}
	}
}

// Operated tells the tracker that this agent just ran uv on key. uv reads pyvenv.cfg too, and
// that is not a use by a workflow: the file is armed again and interpreter uses seen so far are
// dropped. Uses through the API and live processes stay.
func (t *Tracker) Operated(key envid.Key) {
	p := t.marker(key)
	t.storageCalls.Add(1)
	if fi, err := os.Stat(p); err == nil {
		_ = t.arm(p, fi.ModTime())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.last[key]; ok && u.Source == SourceInterpreter {
		delete(t.last, key)
	}
}

// Since returns the uses after since (every known use when since is zero) and when the view of
// this host's processes was last refreshed by a scan.
func (t *Tracker) Since(since time.Time) ([]Use, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Use, 0, len(t.last))
	for _, u := range t.last {
		if u.At.After(since) {
			out = append(out, u)
		}
	}
	return out, t.scanned
}

// Last returns the last use of key, or the zero time.
func (t *Tracker) Last(key envid.Key) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last[key].At
}

// Run scans this host's processes every interval until ctx ends. It never walks the shared
// storage: that signal is read per candidate, on request (CheckStorage).
func (t *Tracker) Run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		t.Scan()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Scan reads this host's signal once: the live processes started from an environment.
func (t *Tracker) Scan() {
	now := time.Now()
	t.scanProcesses(now)
	t.mu.Lock()
	t.scanned = now
	t.mu.Unlock()
}

// CheckStorage reads the shared storage's use signal of keys only (two metadata calls for an
// environment that was used, one for the rest) and returns the uses it saw, which are also
// remembered. ctx ending stops it between environments.
func (t *Tracker) CheckStorage(ctx context.Context, keys []envid.Key) ([]Use, error) {
	var out []Use
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if at, ok := t.checkInterpreter(key); ok {
			t.Used(key, at, SourceInterpreter)
			out = append(out, Use{Key: key, At: at, Source: SourceInterpreter})
		}
	}
	return out, nil
}

// checkInterpreter reports a start of key's interpreter since the file was last armed, and arms it
// again.
func (t *Tracker) checkInterpreter(key envid.Key) (time.Time, bool) {
	p := t.marker(key)
	t.storageCalls.Add(1)
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return time.Time{}, false
	}
	atime := time.Unix(st.Atim.Sec, st.Atim.Nsec)
	mtime := fi.ModTime()
	if !atime.After(mtime) {
		return time.Time{}, false
	}
	// Arm: atime back to mtime, so that relatime records the next start. A start between the
	// Stat and this Chtimes is lost, at worst one use between two cleanup passes' looks.
	if err := t.arm(p, mtime); err != nil {
		t.log.Debug("arming pyvenv.cfg", "path", p, "err", err)
	}
	return atime, true
}

// marker is the file whose access time says that key's interpreter started.
func (t *Tracker) marker(key envid.Key) string {
	return filepath.Join(key.Dir(t.base), ".venv", "pyvenv.cfg")
}

// arm sets p's access time back to mtime, so that relatime records the next start; one call
// against the shared storage.
func (t *Tracker) arm(p string, mtime time.Time) error {
	t.storageCalls.Add(1)
	return os.Chtimes(p, mtime, mtime)
}

// scanProcesses finds live processes started from an environment's interpreter.
func (t *Tracker) scanProcesses(now time.Time) {
	entries, err := os.ReadDir(t.proc)
	if err != nil {
		return
	}
	prefix := t.base + string(filepath.Separator)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(t.proc, e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		// argv[0], or argv[1] for a script of the environment's bin/ started through its
		// shebang: that names the build's interpreter (<build>/.venv/bin/python), and the kernel
		// passes the script's path, the environment's, as the first argument.
		argv0, rest, _ := bytes.Cut(cmdline, []byte{0})
		argv1, _, _ := bytes.Cut(rest, []byte{0})
		for _, arg := range [][]byte{argv0, argv1} {
			if key, ok := t.keyOf(string(arg), prefix); ok {
				t.Used(key, now, SourceProcess)
				break
			}
		}
	}
}

// keyOf maps base/<wf>/<node>/<version>/.venv/bin/... to its environment.
func (t *Tracker) keyOf(path, prefix string) (envid.Key, bool) {
	rest, ok := strings.CutPrefix(filepath.Clean(path), prefix)
	if !ok {
		return envid.Key{}, false
	}
	parts := strings.Split(rest, string(filepath.Separator))
	if len(parts) < 5 || parts[3] != ".venv" || parts[4] != "bin" {
		return envid.Key{}, false
	}
	key := envid.Key{WorkflowID: parts[0], NodeID: parts[1], VersionID: parts[2]}
	if key.Validate() != nil {
		return envid.Key{}, false
	}
	return key, true
}

// CacheStats is the uv cache's size on disk.
type CacheStats struct {
	// Bytes is the disk the cache's files take.
	Bytes int64
	// SharedBytes is the size of cache files that are also linked into environments (more than
	// one link): what the environments use without paying for it.
	SharedBytes int64
	// SavedBytes is what copies instead of hardlinks would have cost on top: size × extra links.
	SavedBytes int64
	Files      int64
}

// MeasureCache walks the uv cache once, counting each inode once.
func MeasureCache(ctx context.Context, dir string) (CacheStats, error) {
	var s CacheStats
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		s.Files++
		s.Bytes += st.Blocks * 512
		if st.Nlink > 1 {
			s.SharedBytes += fi.Size()
			s.SavedBytes += fi.Size() * int64(st.Nlink-1)
		}
		return nil
	})
	return s, err
}
