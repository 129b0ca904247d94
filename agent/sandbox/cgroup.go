package sandbox

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunLimits bound a run as a whole (every process it starts, and the private tmpfs its memory
// cgroup is charged for), through a cgroup made for the run and removed after it. Zero leaves a
// resource unbounded.
type RunLimits struct {
	MemoryBytes uint64 // memory.max / memory.limit_in_bytes, swap included
	Processes   uint64 // pids.max: processes and threads
}

func (l RunLimits) any() bool { return l.MemoryBytes > 0 || l.Processes > 0 }

// Cgroups is where this agent makes its runs' cgroups: on cgroup v2 one directory (the agent's
// own cgroup, with the memory and pids controllers enabled for its children), on v1 the agent's
// cgroup in the memory and in the pids hierarchy.
type Cgroups struct {
	Version int
	memory  string
	pids    string
	// pool holds run cgroups made ahead of their runs and those left to remove (ready.go).
	pool pool
}

// runPrefix names the run cgroups; FindCgroups removes empty leftovers of an agent that died.
const runPrefix = "envfabric-run-"

// FindCgroups finds where runs' cgroups can be made with the controllers limits need, proves it
// by making and removing one, and removes leftovers of earlier runs. It fails when the host cannot
// enforce them: the agent then refuses to start.
func FindCgroups(limits RunLimits) (*Cgroups, error) {
	g, err := findCgroups()
	if err != nil {
		return nil, err
	}
	g.sweep()
	rc, err := g.create(limits)
	if err != nil {
		return nil, err
	}
	rc.remove()
	// The first runs find their cgroups made already (ready.go).
	if stage, err := (Config{}).stageProgram(); err == nil {
		g.prepare(limits, stage)
	}
	return g, nil
}

func findCgroups() (*Cgroups, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	if m, ok := mounts["cgroup2"]; ok {
		if dir, ok := m.dir(own[""]); ok {
			if g, err := delegateV2(dir); err == nil {
				return g, nil
			} else if _, v1 := mounts["memory"]; !v1 {
				return nil, err
			}
		}
	}
	g := &Cgroups{Version: 1}
	for _, c := range []struct {
		name string
		dir  *string
	}{{"memory", &g.memory}, {"pids", &g.pids}} {
		m, ok := mounts[c.name]
		if !ok {
			return nil, fmt.Errorf("no cgroup v2 with the memory and pids controllers, and no v1 %s controller mounted", c.name)
		}
		dir, ok := m.dir(own[c.name])
		if !ok {
			return nil, fmt.Errorf("cgroup v1 %s: this process's cgroup %q is not under the mount at %s", c.name, own[c.name], m.point)
		}
		*c.dir = dir
	}
	return g, nil
}

// delegateV2 makes dir (the agent's own cgroup) able to hold run cgroups with the memory and pids
// controllers. A v2 cgroup with processes cannot enable controllers for its children, so the
// agent first moves itself into a leaf of its own, "agent" (as systemd's Delegate=yes expects).
func delegateV2(dir string) (*Cgroups, error) {
	have, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup v2 at %s: %w", dir, err)
	}
	for _, c := range []string{"memory", "pids"} {
		if !strings.Contains(" "+strings.TrimSpace(string(have))+" ", " "+c+" ") {
			return nil, fmt.Errorf("cgroup v2 at %s lacks the %s controller (has %q)", dir, c, strings.TrimSpace(string(have)))
		}
	}
	enabled, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if !strings.Contains(string(enabled), "memory") || !strings.Contains(string(enabled), "pids") {
		leaf := filepath.Join(dir, "agent")
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("cgroup v2: make %s: %w", leaf, err)
		}
		if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return nil, fmt.Errorf("cgroup v2: move the agent into %s: %w", leaf, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory +pids"), 0); err != nil {
			return nil, fmt.Errorf("cgroup v2: enable memory and pids for the children of %s (other processes in it?): %w", dir, err)
		}
	}
	return &Cgroups{Version: 2, memory: dir, pids: dir}, nil
}

// Describe is the one-line summary for logs and /readyz.
func (g *Cgroups) Describe() string {
	if g == nil {
		return "none"
	}
	return "v" + strconv.Itoa(g.Version)
}

// ownCgroups reads /proc/self/cgroup: controller → path ("" for v2).
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	own := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			own[c] = f[2]
		}
	}
	return own, nil
}

type cgroupMount struct{ root, point string }

// dir is where the cgroup at path (relative to the hierarchy's root) lives under this mount.
func (m cgroupMount) dir(path string) (string, bool) {
	if path == "" || !within(path, m.root) {
		return "", false
	}
	return filepath.Join(m.point, strings.TrimPrefix(path, m.root)), true
}

// cgroupMounts finds the cgroup file systems in /proc/self/mountinfo: "cgroup2", and each v1
// controller by name.
func cgroupMounts() (map[string]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	defer f.Close()
	mounts := map[string]cgroupMount{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 3 {
			continue
		}
		m := cgroupMount{root: unescapeMountinfo(fields[3]), point: unescapeMountinfo(fields[4])}
		switch tail[0] {
		case "cgroup2":
			if _, seen := mounts["cgroup2"]; !seen {
				mounts["cgroup2"] = m
			}
		case "cgroup":
			for _, opt := range strings.Split(tail[2], ",") {
				if _, seen := mounts[opt]; !seen && (opt == "memory" || opt == "pids") {
					mounts[opt] = m
				}
			}
		}
	}
	return mounts, sc.Err()
}

// runCgroup is one run's cgroup: one directory on v2, two on v1.
type runCgroup struct {
	g    *Cgroups
	dirs []string
}

// create makes a run's cgroup with limits in force.
func (g *Cgroups) create(limits RunLimits) (*runCgroup, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	name := runPrefix + hex.EncodeToString(id[:])
	rc := &runCgroup{g: g}
	parents := []string{g.memory}
	if g.pids != g.memory {
		parents = append(parents, g.pids)
	}
	for _, p := range parents {
		d := filepath.Join(p, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			rc.remove()
			return nil, fmt.Errorf("make run cgroup: %w", err)
		}
		rc.dirs = append(rc.dirs, d)
	}
	if err := rc.limit(limits); err != nil {
		rc.remove()
		return nil, err
	}
	return rc, nil
}

func (rc *runCgroup) memoryDir() string { return rc.dirs[0] }
func (rc *runCgroup) pidsDir() string   { return rc.dirs[len(rc.dirs)-1] }

func (rc *runCgroup) limit(l RunLimits) error {
	type setting struct{ dir, file, value string }
	var set []setting
	if l.MemoryBytes > 0 {
		v := strconv.FormatUint(l.MemoryBytes, 10)
		if rc.g.Version == 2 {
			// No swap: memory.max would otherwise only bound what stays resident.
			set = append(set, setting{rc.memoryDir(), "memory.max", v}, setting{rc.memoryDir(), "memory.swap.max", "0"})
		} else {
			set = append(set, setting{rc.memoryDir(), "memory.limit_in_bytes", v}, setting{rc.memoryDir(), "memory.memsw.limit_in_bytes", v})
		}
	}
	if l.Processes > 0 {
		set = append(set, setting{rc.pidsDir(), "pids.max", strconv.FormatUint(l.Processes, 10)})
	}
	for _, s := range set {
		p := filepath.Join(s.dir, s.file)
		if err := os.WriteFile(p, []byte(s.value), 0); err != nil {
			if errors.Is(err, os.ErrNotExist) && strings.Contains(s.file, "sw") {
				continue // no swap accounting on this kernel: there is no swap to bound
			}
			return fmt.Errorf("set %s=%s: %w", p, s.value, err)
		}
	}
	return nil
}

// procsFiles are the cgroup.procs files a process writes itself into to join the run.
func (rc *runCgroup) procsFiles() []string {
	var fs []string
	for _, d := range rc.dirs {
		fs = append(fs, filepath.Join(d, "cgroup.procs"))
	}
	return fs
}

// oomKills is how many processes of the run the kernel killed for want of memory.
func (rc *runCgroup) oomKills() uint64 {
	file := "memory.oom_control"
	if rc.g.Version == 2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(rc.memoryDir(), file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// remove kills whatever of the run is still alive (processes that left its process group, where
// there is no PID namespace) and removes the cgroup. The kernel needs a moment to reap killed
// processes before the directory can go.
func (rc *runCgroup) remove() {
	deadline := time.Now().Add(5 * time.Second)
	for _, d := range rc.dirs {
		for {
			killAll(d)
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func killAll(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// sweep removes the empty run cgroups an agent that died left behind. Young ones may belong to
// a run that another agent in the same cgroup is starting (tests do that): they are left alone.
func (g *Cgroups) sweep() {
	for _, p := range []string{g.memory, g.pids} {
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && e.IsDir() && strings.HasPrefix(e.Name(), runPrefix) && time.Since(fi.ModTime()) > time.Hour {
				_ = os.Remove(filepath.Join(p, e.Name()))
			}
		}
	}
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
