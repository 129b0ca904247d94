package sandbox

import (
	"os"
	"path/filepath"
	"syscall"
)

// Hidden reports whether p lies in one of the directories the namespace tier hides.
func (c Config) Hidden(p string) bool {
	p = filepath.Clean(p)
	for _, h := range c.Hide {
		if within(p, filepath.Clean(h)) {
			return true
		}
	}
	return false
}

// Searchable reports whether a process with uid and gid (and no supplementary groups) can walk
// into dir: every directory from / down to dir, after resolving symlinks, grants it search
// permission. ACLs are not consulted.
func Searchable(dir string, uid, gid int) bool {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil || !filepath.IsAbs(real) {
		return false
	}
	p := real
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return false
		}
		mode := st.Mode & 0o777
		var ok bool
		switch {
		case int(st.Uid) == uid:
			ok = mode&0o100 != 0
		case int(st.Gid) == gid:
			ok = mode&0o010 != 0
		default:
			ok = mode&0o001 != 0
		}
		if !ok {
			return false
		}
		if p == "/" {
			return true
		}
		p = filepath.Dir(p)
	}
}

// SearchablePath splits a PATH list into the directories uid/gid can search and the others. The
// agent hands uv only the first: an interpreter uv finds elsewhere (a pyenv under /root, mode
// 0700) would make environments whose python the run user cannot start.
func SearchablePath(path string, uid, gid int) (kept string, dropped []string) {
	var keep []string
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			continue
		}
		if Searchable(d, uid, gid) {
			keep = append(keep, d)
		} else {
			dropped = append(dropped, d)
		}
	}
	return joinList(keep), dropped
}

func joinList(dirs []string) string {
	s := ""
	for i, d := range dirs {
		if i > 0 {
			s += string(os.PathListSeparator)
		}
		s += d
	}
	return s
}
