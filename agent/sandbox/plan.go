package sandbox

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The plan is what the stage program is told, on planFD: a sequence of records, each a tag byte,
// a little-endian 32-bit length and the value. planHead comes first; strings are raw bytes (no
// NUL); a denied network is its IPv4 address and prefix length (5 bytes); the filter is the
// assembled seccomp program, struct sock_filter after struct sock_filter. The C side
// (stage/envfabric-sandbox.c) decodes exactly this.
const (
	tagHead byte = iota + 1
	tagPath
	tagArg
	tagEnv
	tagDir
	tagHide
	tagReadOnly
	tagWritable
	tagDeny
	tagFilter
)

// planHead flags.
const (
	flagNamespace uint64 = 1 << iota // mounts, host name, loopback
	flagPIDNamespace
	flagDrop
	flagSlirp
	flagFilter
	flagUserNamespace
	flagFallbacks // tests: the stage takes the ways of kernels without close_range and mount_setattr
)

// planFD is the stage's descriptor of the plan (after stdio and the status pipe).
const planFD = 4

// defaultTmpfsSize bounds each private writable place of the namespace tier.
const defaultTmpfsSize = 256 << 20

// plan is what one run's stage program is told.
type plan struct {
	Namespace    bool // mounts and network set-up
	PIDNamespace bool
	// UserNamespace: the stage makes a user namespace mapping only the agent's ids, for the PID
	// namespace of an unprivileged agent.
	UserNamespace bool
	AllowNetwork  bool
	Drop          bool
	Filter        bool // the system-call filter (filter.go)
	// Slirp: the stage waits for the agent's user-mode network on goFD, then prohibits Deny.
	Slirp    bool
	Deny     []string
	UID, GID int
	Limits   Limits
	Hide     []string
	ReadOnly []string
	Writable []string
	Path     string
	Args     []string
	Env      []string
	Dir      string
	// fallbacks makes the stage take the ways of older kernels (tests).
	fallbacks bool
}

// encode is the plan in the stage program's format.
func (pl plan) encode() ([]byte, error) {
	var b []byte
	rec := func(tag byte, v []byte) {
		b = append(b, tag)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	var flags uint64
	for _, f := range []struct {
		on   bool
		flag uint64
	}{{pl.Namespace, flagNamespace}, {pl.PIDNamespace, flagPIDNamespace}, {pl.Drop, flagDrop}, {pl.Slirp, flagSlirp}, {pl.Filter, flagFilter}, {pl.UserNamespace, flagUserNamespace}, {pl.fallbacks, flagFallbacks}} {
		if f.on {
			flags |= f.flag
		}
	}
	// The private writable places live in memory (charged to the run's memory cgroup): each no
	// bigger than one file may be, and never large.
	tmpfs := uint64(defaultTmpfsSize)
	if pl.Limits.FileBytes > 0 && pl.Limits.FileBytes < tmpfs {
		tmpfs = pl.Limits.FileBytes
	}
	var head []byte
	for _, v := range []uint64{flags, uint64(pl.UID), uint64(pl.GID), pl.Limits.CPUSeconds, pl.Limits.MemoryBytes,
		pl.Limits.FileBytes, pl.Limits.OpenFiles, pl.Limits.Processes, tmpfs} {
		head = binary.LittleEndian.AppendUint64(head, v)
	}
	rec(tagHead, head)
	strs := []struct {
		tag byte
		vs  []string
	}{
		{tagPath, []string{pl.Path}}, {tagDir, []string{pl.Dir}}, {tagArg, pl.Args}, {tagEnv, pl.Env},
		{tagHide, outermost(pl.Hide)}, {tagReadOnly, pl.ReadOnly}, {tagWritable, pl.Writable},
	}
	for _, s := range strs {
		for _, v := range s.vs {
			if strings.IndexByte(v, 0) >= 0 {
				return nil, fmt.Errorf("sandbox plan: %q contains a NUL byte", v)
			}
			rec(s.tag, []byte(v))
		}
	}
	for _, c := range pl.Deny {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("denied network %q: %w", c, err)
		}
		ip4 := n.IP.To4()
		if ip4 == nil {
			continue // the run has no IPv6 route at all
		}
		ones, _ := n.Mask.Size()
		rec(tagDeny, append(append([]byte{}, ip4...), byte(ones)))
	}
	if pl.Filter {
		prog, err := filterProgram()
		if err != nil {
			return nil, err
		}
		rec(tagFilter, rawFilter(prog))
	}
	return b, nil
}

// rawFilter lays prog out as the kernel's struct sock_filter array (host byte order).
func rawFilter(prog []bpf.RawInstruction) []byte {
	var b []byte
	for _, ins := range prog {
		b = binary.NativeEndian.AppendUint16(b, ins.Op)
		b = append(b, ins.Jt, ins.Jf)
		b = binary.NativeEndian.AppendUint32(b, ins.K)
	}
	return b
}

// planFile is the encoded plan in a memory file, for the stage's planFD: no pipe to
// fill, no size limit of an environment variable.
func planFile(pl plan) (*os.File, error) {
	b, err := pl.encode()
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("envfabric-sandbox-plan", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("sandbox plan: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "plan")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox plan: %w", err)
	}
	return f, nil
}

// outermost drops the directories that lie inside another of dirs: one hidden directory covers
// those below it.
func outermost(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		d = filepath.Clean(d)
		inside := false
		for _, o := range dirs {
			o = filepath.Clean(o)
			if o != d && within(d, o) {
				inside = true
				break
			}
		}
		if !inside && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// within reports whether p is dir or lies below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}
