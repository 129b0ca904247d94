package postgres_test

import (
	"context"
	"database/sql"
	"log"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

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

func TestSchema(t *testing.T) {
	storetest.RunSchema(t, func(t *testing.T) storetest.Schema {
		if srv == nil {
			pgtest.Unavailable(t, startErr)
		}
		url := srv.NewDatabase(t)
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return storetest.Schema{DB: db, Dialect: postgres.Dialect{}, Migrations: postgres.Migrations,
			Open: func(t *testing.T) store.Store {
				s, err := postgres.Open(t.Context(), url, slog.New(slog.NewTextHandler(t.Output(), nil)))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}}
	})
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

// TestProbeReadOnly checks that the write probe fails on a database that answers SELECT 1 but
// takes no write (a standby, or a database set read-only), where Ping alone would say ready.
func TestProbeReadOnly(t *testing.T) {
	if srv == nil {
		pgtest.Unavailable(t, startErr)
	}
	ctx := t.Context()
	u, err := url.Parse(srv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	s, err := postgres.Open(ctx, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ProbeWrite(ctx, "readyz", "cp1", time.Now()); err != nil {
		t.Fatalf("probe on a writable database: %v", err)
	}
	admin, err := sql.Open("pgx", srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// New sessions of the database are read-only; ending the store's sessions makes it open new ones.
	for _, q := range []string{
		`ALTER DATABASE "` + db + `" SET default_transaction_read_only = on`,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + db + `'`,
	} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Each terminated session fails its next statement once, then the pool replaces it.
	for i := 0; s.Ping(ctx) != nil; i++ {
		if i == 10 {
			t.Fatalf("Ping on a read-only database: %v", s.Ping(ctx))
		}
	}
	err = s.ProbeWrite(ctx, "readyz", "cp1", time.Now())
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("probe on a read-only database: %v; want a read-only error", err)
	}
}

func TestPlans(t *testing.T) {
	storetest.RunPlans(t, func(t *testing.T) storetest.Planner { return open(t) })
}
