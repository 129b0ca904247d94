package sqlite_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
	"github.com/envfabric/envfabric/controlplane/store/storetest"
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
