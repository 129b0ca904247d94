package pgtest_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/envfabric/envfabric/shared/testutil/pgtest"
)

func TestServer(t *testing.T) {
	srv := pgtest.StartT(t)
	ctx := t.Context()
	url := srv.NewDatabase(t)
	if other := srv.NewDatabase(t); other == url {
		t.Fatalf("NewDatabase returned %s twice", url)
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("ping succeeded with the server stopped")
	}
	if _, err := pgx.Connect(ctx, url); err == nil {
		t.Fatal("connected with the server stopped")
	}

	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: got %d, %v; want 42", v, err)
	}
}
