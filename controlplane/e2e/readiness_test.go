package e2e

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	_ "modernc.org/sqlite" // registers "sqlite", to reach the control plane's database from outside
)

// readyz asks /readyz and returns its status and each check's answer ("ok" or the failure).
func (f *fabric) readyz(t *testing.T) (int, map[string]string) {
	t.Helper()
	r := f.do(t, "GET", "/readyz", nil)
	checks := map[string]string{}
	m, _ := r.Body["checks"].(map[string]any)
	for k, v := range m {
		checks[k], _ = v.(string)
	}
	return r.Status, checks
}

// wantReady fails unless /readyz answers 200 with every check ok.
func (f *fabric) wantReady(t *testing.T, when string) {
	t.Helper()
	status, checks := f.readyz(t)
	for name, c := range checks {
		if c != "ok" {
			t.Errorf("%s: check %s = %q; want ok", when, name, c)
		}
	}
	if status != 200 {
		t.Fatalf("%s: /readyz answered %d %v; want 200", when, status, checks)
	}
}

// wantNotReady fails unless /readyz answers 503 with check failing with a message holding want.
func (f *fabric) wantNotReady(t *testing.T, when, check, want string) {
	t.Helper()
	status, checks := f.readyz(t)
	if status != 503 || !strings.Contains(checks[check], want) {
		t.Fatalf("%s: /readyz answered %d, checks %v; want 503 with %s saying %q", when, status, checks, check, want)
	}
}

// mountTmpfs mounts a tmpfs of size bytes for the test, unmounted when it ends (after the
// programs using it have stopped: cleanups run last-registered first).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("a full disk needs a small tmpfs, and mounting one is not permitted here (root and mount(8)): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes into path until the filesystem holding it is full, and returns how much it wrote.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var written int64
	// Large writes first, then page-sized ones for what is left between them.
	for _, chunk := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			n, err := f.Write(buf)
			written += int64(n)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatalf("filling the disk: %v", err)
			}
		}
	}
	return written
}

// TestReadyzDiskFull fills DATA_ROOT (a tmpfs) to the last byte. Deletes still go through,
// because the audit database falls back on its reserve; /readyz says why it is not ready; once a
// delete has freed the space, /readyz recovers and the reserve is back.
func TestReadyzDiskFull(t *testing.T) {
	t.Parallel()
	root := mountTmpfs(t, 96<<20)
	const floor, reserve = 24 << 20, 4 << 20
	f := newFabric(t, options{dataRoot: root, cpEnv: []string{
		fmt.Sprintf("DATA_ROOT_MIN_FREE_BYTES=%d", floor), fmt.Sprintf("DATA_ROOT_RESERVE_BYTES=%d", reserve)}})
	reservePath := filepath.Join(root, "controlplane", "reserve")
	if fi, err := os.Stat(reservePath); err != nil || fi.Size() != reserve {
		t.Fatalf("reserve at start: %v, %v; want %d bytes", fi, err, reserve)
	}
	f.wantReady(t, "at start")
	for _, node := range []string{"big", "small"} {
		expect(t, f.do(t, "POST", "/envs", map[string]any{"workflow_id": "full", "node_id": node, "packages": []string{"alpha==1.0.0"}}), 201, "")
	}

	// Empty the database's WAL, so that its next write needs new blocks.
	truncateWAL(t, filepath.Join(root, "controlplane", "fabric.db"))
	// The big environment takes the disk: a file in its directory, as a large package would.
	wrote := fill(t, filepath.Join(f.envDir("full", "big", "v1"), "data.bin"))
	t.Logf("filled DATA_ROOT with %d bytes", wrote)

	// Nothing has asked /readyz: the delete's first audit write fails for lack of space, the store
	// releases its reserve and writes again; the delete is recorded and done.
	r := f.do(t, "DELETE", "/envs/full/small", nil)
	expect(t, r, 200, "")
	if _, err := os.Stat(reservePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reserve after a write on the full disk: %v; want it released", err)
	}
	f.wantNotReady(t, "disk full", "disk_space", "below the floor")

	// The operator frees the space through the API.
	r = f.do(t, "DELETE", "/envs/full/big", nil)
	expect(t, r, 200, "")
	if r.str("status") != "deleted" {
		t.Errorf("delete answered %s; want status deleted", r.Raw)
	}
	f.wantReady(t, "after the delete")
	if fi, err := os.Stat(reservePath); err != nil || fi.Size() != reserve {
		t.Errorf("reserve after the delete: %v, %v; want it back, %d bytes", fi, err, reserve)
	}
	// Both deletes are in the audit, closed as succeeded.
	for _, node := range []string{"big", "small"} {
		ops := f.do(t, "GET", "/envs/full/"+node+"/operations", nil)
		list, _ := ops.Body["operations"].([]any)
		if len(list) == 0 {
			t.Fatalf("operations of %s: %s", node, ops.Raw)
		}
		last, _ := list[0].(map[string]any)
		if last["operation"] != "delete" || last["status"] != "succeeded" {
			t.Errorf("last operation of %s = %v; want a succeeded delete", node, last)
		}
	}
}

// truncateWAL checkpoints the SQLite database at path and truncates its write-ahead log, as
// another process may (SQLite's WAL mode is multi-process).
func truncateWAL(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var busy, pages, done int
	if err := db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &pages, &done); err != nil || busy != 0 {
		t.Fatalf("checkpoint: %v, busy %d", err, busy)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() != 0 {
		t.Fatalf("WAL after the checkpoint: %v, %v; want it empty", fi, err)
	}
}

// TestReadyzDatabaseFile removes, or replaces, the SQLite file under the running control plane:
// writes would "succeed" into the file it still holds open and be lost at restart, so /readyz
// must fail and say so.
func TestReadyzDatabaseFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
		want   string
	}{
		{"removed", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "was removed"},
		{"replaced", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path+".restored", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".restored", path); err != nil {
				t.Fatal(err)
			}
		}, "was replaced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFabric(t, options{})
			f.wantReady(t, "at start")
			tt.change(t, filepath.Join(f.DataRoot, "controlplane", "fabric.db"))
			f.wantNotReady(t, "file "+tt.name, "database_file", tt.want)
		})
	}
}
