package postgres_test

import (
	"context"
	"log"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/controlplane/store/storetest"
	"github.com/envfabric/envfabric/shared/testutil/pgtest"
)

// One server for the package; each test gets its own database.
var (
	srv      *pgtest.Server
	startErr error
)

func TestMain(m *testing.M) {
	srv, startErr = pgtest.Start(context.Background(), log.Printf)
	code := m.Run()
	if srv != nil {
		srv.Close()
	}
	os.Exit(code)
}

func open(t *testing.T) *postgres.Store {
	if srv == nil {
		pgtest.Unavailable(t, startErr)
	}
	s, err := postgres.Open(t.Context(), srv.NewDatabase(t), slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

// TestConcurrentOpen checks that control planes starting together on one database migrate it once.
func TestConcurrentOpen(t *testing.T) {
	if srv == nil {
		pgtest.Unavailable(t, startErr)
	}
	url := srv.NewDatabase(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), url, nil)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
}

// TestServerRestart checks that the store fails while the database is away and recovers, without
// reopening, when it comes back.
func TestServerRestart(t *testing.T) {
	own := pgtest.StartT(t)
	ctx := t.Context()
	s, err := postgres.Open(ctx, own.NewDatabase(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	own.Stop()
	if _, err := s.BeginOperation(ctx, store.Operation{Kind: "create"}); err == nil {
		t.Fatal("BeginOperation succeeded with the database stopped")
	}
	if err := own.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginOperation(ctx, store.Operation{Kind: "create"}); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
