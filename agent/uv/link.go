package uv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNoHardlink says that uv could not hardlink from the cache into the environments, so every
// environment would be a full copy of its packages.
var ErrNoHardlink = errors.New("UV_CACHE_DIR and ENVS_BASE_PATH must be on one filesystem (one mount), " +
	"siblings under DATA_ROOT, so that uv can hardlink packages from the cache into environments; " +
	"fix the paths or set UV_LINK_MODE=copy to accept full copies")

// CheckHardlink proves that a file created in cacheDir can be hardlinked into envsDir, as uv will
// do for every installed file. Both directories must exist. The error wraps ErrNoHardlink.
func CheckHardlink(cacheDir, envsDir string) error {
	f, err := os.CreateTemp(cacheDir, ".envfabric-linkcheck-*")
	if err != nil {
		return fmt.Errorf("%w: create a file in %s: %v", ErrNoHardlink, cacheDir, err)
	}
	src := f.Name()
	defer os.Remove(src)
	if err := f.Close(); err != nil {
		return fmt.Errorf("%w: %v", ErrNoHardlink, err)
	}
	dst := filepath.Join(envsDir, filepath.Base(src))
	if err := os.Link(src, dst); err != nil {
		return fmt.Errorf("%w: %v", ErrNoHardlink, err)
	}
	defer os.Remove(dst)
	a, errA := os.Stat(src)
	b, errB := os.Stat(dst)
	if err := errors.Join(errA, errB); err != nil {
		return fmt.Errorf("%w: %v", ErrNoHardlink, err)
	}
	if !os.SameFile(a, b) {
		return fmt.Errorf("%w: %s and %s are not the same file after linking", ErrNoHardlink, src, dst)
	}
	return nil
}

// Siblings reports whether cacheDir and envsDir share a parent directory, the layout the design
// asks for (DATA_ROOT/uv_cache beside DATA_ROOT/envs).
func Siblings(cacheDir, envsDir string) bool {
	return filepath.Dir(filepath.Clean(cacheDir)) == filepath.Dir(filepath.Clean(envsDir))
}
