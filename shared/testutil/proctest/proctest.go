// Package proctest finds processes by their command line in /proc, for tests that check what a
// run left running.
package proctest

import (
	"os"
	"strconv"
	"strings"
)

// With lists the live pids whose NUL-separated command line contains s.
func With(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Alive reports whether pid is a process that exists and is not a zombie.
func Alive(pid int) bool {
	f := stat(pid)
	return f != nil && (len(f) == 0 || f[0] != "Z")
}

// Parent is pid's parent (0 when unknown).
func Parent(pid int) int {
	f := stat(pid)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// stat is /proc/<pid>/stat after the command (state first); nil when the process is gone.
func stat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return []string{}
	}
	return strings.Fields(s[i+1:])
}
