package sqlite_test

import (
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/controlplane/store/storetest"
	"github.com/envfabric/envfabric/shared/envid"
)

func open(t *testing.T) store.Store {
	path := filepath.Join(t.TempDir(), "state", "envfabric.db")
	s, err := sqlite.Open(t.Context(), path, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, open)
}

func TestSchema(t *testing.T) {
	storetest.RunSchema(t, func(t *testing.T) storetest.Schema {
		path := filepath.Join(t.TempDir(), "envfabric.db")
		db, err := sql.Open("sqlite", path+"?_txlock=immediate&_busy_timeout=10000&_journal_mode=WAL&_foreign_keys=1")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return storetest.Schema{DB: db, Dialect: sqlite.Dialect{}, Migrations: sqlite.Migrations,
			Open: func(t *testing.T) store.Store {
				s, err := sqlite.Open(t.Context(), path, slog.New(slog.NewTextHandler(t.Output(), nil)))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}}
	})
}

// TestReopen checks that opening an existing database applies no migration twice and keeps the data.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envfabric.db")
	for i := range 2 {
		s, err := sqlite.Open(t.Context(), path, slog.New(slog.NewTextHandler(t.Output(), nil)))
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		if i == 0 {
			_, err = s.BeginOperation(t.Context(), store.Operation{Kind: "create"})
		} else {
			_, err = s.GetOperation(t.Context(), 1)
		}
		s.Close()
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
	}
}

// TestCheckFile checks that the store stops calling its file good once the path names another
// file or none.
func TestCheckFile(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
		want   string // in the error; "" for none
	}{
		{"untouched", func(*testing.T, string) {}, ""},
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
			if err := os.WriteFile(path+".new", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
		}, "was replaced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fabric.db")
			s, err := sqlite.Open(t.Context(), path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.CheckFile(t.Context()); err != nil {
				t.Fatalf("right after open: %v", err)
			}
			tt.change(t, path)
			err = s.CheckFile(t.Context())
			if got := fmt.Sprint(err); (tt.want == "") != (err == nil) || !strings.Contains(got, tt.want) {
				t.Errorf("got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestIndexBackfill: locks committed before the package index existed (here: their index rows
// removed behind the store's back) are indexed when the store opens.
func TestIndexBackfill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envfabric.db")
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	s, err := sqlite.Open(t.Context(), path, log)
	if err != nil {
		t.Fatal(err)
	}
	key := envid.Key{WorkflowID: "wf", NodeID: "n", VersionID: "v1"}
	if err := s.CreateEnv(t.Context(), store.Env{Key: key, State: store.StateCreating}, time.Now()); err != nil {
		t.Fatal(err)
	}
	l, err := s.AcquireLease(t.Context(), store.LeaseRequest{Key: key, Mode: store.LeaseChange, Holder: "t", TTL: time.Minute, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	lock := storetest.LockOf([]string{"idna==3.6"}, "six==1.17.0")
	if _, err := s.CommitRevision(t.Context(), store.Commit{Key: key, LeaseID: l.ID, Now: time.Now(), PyprojectTOML: "p", UvLock: lock, State: store.StateActive}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM lock_packages; DELETE FROM locks_indexed`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = sqlite.Open(t.Context(), path, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pk, err := s.EnvPackages(t.Context(), key)
	if err != nil || len(pk) != 2 || pk[0].Name != "idna" || !pk[0].Direct || pk[1].Name != "six" || pk[1].Direct {
		t.Errorf("packages after the backfill = %+v, %v; want idna (direct) and six", pk, err)
	}
}

func TestPlans(t *testing.T) {
	storetest.RunPlans(t, func(t *testing.T) storetest.Planner { return open(t).(*sqlite.Store) })
}
