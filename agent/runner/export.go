package runner

import (
	"path/filepath"

	"github.com/envfabric/envfabric/agent/sandbox"
)

// What a warm run (agent/warm) shares with a cold one, so that both answer identically.

// Env is the whole environment of a run of venv's interpreter in work: nothing of the agent's.
func Env(venv, work string) []string {
	return []string{
		"PATH=" + filepath.Join(venv, "bin") + ":/usr/local/bin:/usr/bin:/bin",
		"VIRTUAL_ENV=" + venv,
		"HOME=" + work,
		"TMPDIR=" + work,
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"PYTHONNOUSERSITE=1",
	}
}

// ReadOnlyDirs is what the namespace tier mounts back read-only for a run of venv.
func ReadOnlyDirs(venv string, sb sandbox.Config) []string { return readOnlyDirs(venv, sb) }

// Capped keeps the first max bytes written to it and discards, but accepts, the rest.
type Capped = capped

// NewCapped is a Capped of max bytes.
func NewCapped(max int64) *Capped { return &capped{max: max} }

// Bytes is what was kept.
func (c *capped) Bytes() []byte { return c.buf }

// Truncated reports whether anything was discarded.
func (c *capped) Truncated() bool { return c.truncated }
