package builds

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// An environment's .venv (docs/builds.md):
//
//	<env_path>/.venv/pyvenv.cfg   a copy of the build's
//	<env_path>/.venv/build        -> ../../../../.builds/<id>/.venv  (the one pointer)
//	<env_path>/.venv/bin          -> build/bin
//	<env_path>/.venv/lib          -> build/lib
//	<env_path>/.venv/lib64        -> build/lib   (when the build has lib64)
//
// CPython finds pyvenv.cfg beside the unresolved bin/ of the interpreter it was started as, so
// <env_path>/.venv/bin/python has sys.prefix <env_path>/.venv and its site-packages through
// lib -> build/lib; the access time of the environment's own pyvenv.cfg tells its use by
// executors outside the API, per environment (agent/usage). Switching replaces the build link by
// one rename(2): a process that starts later sees the new build, one that started earlier keeps
// the files it already opened (a run through the API runs the build's own .venv instead and
// keeps its whole build to its end).

const (
	envVenvDir    = ".venv"
	buildLinkName = "build"
	pyvenvCfg     = "pyvenv.cfg"
)

// LinkedBuild is the build id an environment's .venv points at; ok is false for a .venv of the
// layout before builds (a full virtual environment of its own) or none.
func LinkedBuild(envDir string) (id string, ok bool) {
	target, err := os.Readlink(filepath.Join(envDir, envVenvDir, buildLinkName))
	if err != nil {
		return "", false
	}
	id = filepath.Base(filepath.Dir(target))
	return id, ValidID(id) && filepath.Base(target) == VenvDir
}

// Link points envDir's .venv at build id, which must be complete, and reports whether anything
// changed. The build link is replaced by a rename; when the build's pyvenv.cfg differs from the
// environment's copy (another interpreter, another uv) the whole small .venv is built beside and
// exchanged with the old one in one renameat2(RENAME_EXCHANGE). A .venv of the layout before
// builds is exchanged the same way and then removed.
func (s *Store) Link(envDir, id string) (bool, error) {
	if err := s.RequireComplete(id); err != nil {
		return false, err
	}
	venv := filepath.Join(envDir, envVenvDir)
	cfg, err := os.ReadFile(filepath.Join(s.Venv(id), pyvenvCfg))
	if err != nil {
		return false, fmt.Errorf("reading build %s's pyvenv.cfg: %w", id, err)
	}
	target, err := filepath.Rel(venv, s.Venv(id))
	if err != nil {
		return false, err
	}
	_, hasLib64 := os.Lstat(filepath.Join(s.Venv(id), "lib64"))
	links := map[string]string{buildLinkName: target, "bin": buildLinkName + "/bin", "lib": buildLinkName + "/lib"}
	if hasLib64 == nil {
		links["lib64"] = buildLinkName + "/lib"
	}

	if cur, ok := LinkedBuild(envDir); ok {
		have, _ := os.ReadFile(filepath.Join(venv, pyvenvCfg))
		if bytes.Equal(have, cfg) && linksMatch(venv, links) {
			if cur == id {
				return false, nil
			}
			if err := replaceSymlink(filepath.Join(venv, buildLinkName), target); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	// Build the whole .venv beside and put it in place. Leftovers of an interrupted switch go.
	if old, _ := filepath.Glob(filepath.Join(envDir, ".venv.tmp-*")); len(old) > 0 {
		for _, o := range old {
			_ = os.RemoveAll(o)
		}
	}
	tmp, err := os.MkdirTemp(envDir, ".venv.tmp-")
	if err != nil {
		return false, fmt.Errorf("preparing the .venv of %s: %w", envDir, err)
	}
	defer os.RemoveAll(tmp) // after an exchange, the old .venv
	if err := os.Chmod(tmp, 0o755); err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, pyvenvCfg), cfg, 0o644); err != nil {
		return false, fmt.Errorf("writing pyvenv.cfg: %w", err)
	}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(tmp, name)); err != nil {
			return false, fmt.Errorf("linking %s: %w", name, err)
		}
	}
	if err := exchange(tmp, venv); err != nil {
		return false, fmt.Errorf("switching the .venv of %s: %w", envDir, err)
	}
	return true, nil
}

// linksMatch reports whether venv's links besides the build link are the ones wanted.
func linksMatch(venv string, want map[string]string) bool {
	for name, to := range want {
		if name == buildLinkName {
			continue
		}
		if got, err := os.Readlink(filepath.Join(venv, name)); err != nil || got != to {
			return false
		}
	}
	_, err := os.Lstat(filepath.Join(venv, "lib64"))
	_, wanted := want["lib64"]
	return (err == nil) == wanted
}

// replaceSymlink points the symbolic link at path to target by creating it beside and renaming
// it over the old one.
func replaceSymlink(path, target string) error {
	tmp := fmt.Sprintf("%s.tmp-%d", path, time.Now().UnixNano())
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("switching %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switching %s: %w", path, err)
	}
	return nil
}

// exchange puts directory src at dst. When dst exists the two are exchanged atomically
// (renameat2 RENAME_EXCHANGE; src then holds the old dst); where the filesystem cannot exchange,
// the old dst is renamed aside into src first, leaving an instant without a .venv.
func exchange(src, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		if _, serr := os.Lstat(dst); errors.Is(serr, os.ErrNotExist) {
			return os.Rename(src, dst)
		}
		return err
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		old := src + ".old"
		if err := os.Rename(dst, old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
		if err := os.Rename(old, src); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return err
}
