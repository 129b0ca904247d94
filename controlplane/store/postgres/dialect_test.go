package postgres_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store/postgres"
	"github.com/envfabric/envfabric/shared/testutil/pgtest"
)

// openDB is a bare connection to a fresh database through the store's driver ("pgx", registered
// by the stdlib adapter the store imports).
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	if srv == nil {
		pgtest.Unavailable(t, startErr)
	}
	db, err := sql.Open("pgx", srv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestTimeCodec(t *testing.T) {
	db := openDB(t)
	d := postgres.Dialect{}
	want := time.Date(2025, 3, 4, 5, 6, 7, 8009e3, time.FixedZone("x", 3600))
	var src any
	if err := db.QueryRow(`SELECT CAST($1 AS timestamptz)`, d.EncodeTime(want)).Scan(&src); err != nil {
		t.Fatal(err)
	}
	if got, err := d.DecodeTime(src); err != nil || !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("round trip of %v = %v, %v; want it back in UTC", want, got, err)
	}
	if _, err := d.DecodeTime(int64(5)); err == nil {
		t.Error("DecodeTime accepted an integer")
	}
}

func TestMillisBetween(t *testing.T) {
	db := openDB(t)
	d := postgres.Dialect{}
	base := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		start, end time.Time
		want       int64
	}{
		{base, base.Add(2500 * time.Millisecond), 2500},
		{base, base.Add(2500*time.Millisecond + 900*time.Microsecond), 2500},
		{base.Add(time.Second), base, 0},
	}
	for _, tt := range tests {
		var got int64
		q := `SELECT ` + d.MillisBetween("CAST($1 AS timestamptz)", "$2")
		if err := db.QueryRow(q, d.EncodeTime(tt.start), d.EncodeTime(tt.end)).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("MillisBetween(%v, %v) = %d; want %d", tt.start, tt.end, got, tt.want)
		}
	}
}

func TestErrorClasses(t *testing.T) {
	db := openDB(t)
	d := postgres.Dialect{}
	if _, err := db.Exec(`CREATE TABLE t (k text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	_, err := db.Exec(`INSERT INTO t VALUES ('a'), ('a')`)
	if !d.IsUniqueViolation(err) || d.IsLocalDiskFull(err) {
		t.Errorf("duplicate key: %v; want a unique violation only", err)
	}
	_, err = db.Exec(`INSERT INTO t VALUES (NULL)`)
	if d.IsUniqueViolation(err) {
		t.Errorf("not-null violation %v classified as a unique violation", err)
	}
}
