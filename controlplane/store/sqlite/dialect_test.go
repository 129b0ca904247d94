package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
	"github.com/envfabric/envfabric/shared/envid"
)

func TestRebind(t *testing.T) {
	tests := []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"WHERE a = $1 AND b = $2", "WHERE a = ?1 AND b = ?2"},
		{"VALUES ($9, $10, $11)", "VALUES (?9, ?10, ?11)"},
		{"WHERE x = $4 OR y < $4", "WHERE x = ?4 OR y < ?4"},
		{"max(0, $4 - started_at)", "max(0, ?4 - started_at)"},
		{"SELECT '$' || $1, $a, $", "SELECT '$' || ?1, $a, $"},
	}
	for _, tt := range tests {
		if got := (Dialect{}).Rebind(tt.in); got != tt.want {
			t.Errorf("Rebind(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// openDB opens a bare database with the store's settings plus extra DSN parameters.
func openDB(t *testing.T, extra string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "d.db")+"?_txlock=immediate&_journal_mode=WAL"+extra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestPlaceholders checks that ?N binds argument N wherever and however often the query names it.
func TestPlaceholders(t *testing.T) {
	db := openDB(t, "")
	var a, b, c string
	q := (Dialect{}).Rebind(`SELECT $2, $1 || $2, $1`)
	if err := db.QueryRow(q, "x", "y").Scan(&a, &b, &c); err != nil {
		t.Fatal(err)
	}
	if a != "y" || b != "xy" || c != "x" {
		t.Errorf("got %q %q %q; want y xy x", a, b, c)
	}
}

func TestTimeCodec(t *testing.T) {
	d := Dialect{}
	tests := []time.Time{
		time.Date(2025, 3, 4, 5, 6, 7, 8e6, time.UTC),
		time.UnixMilli(0).UTC(),
		time.Date(1969, 12, 31, 23, 59, 59, 999e6, time.UTC),
	}
	for _, want := range tests {
		got, err := d.DecodeTime(d.EncodeTime(want))
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("round trip of %v = %v, %v; want it back in UTC", want, got, err)
		}
	}
	if _, err := d.DecodeTime("2025-03-04"); err == nil {
		t.Error("DecodeTime accepted a string")
	}
}

func TestMillisBetween(t *testing.T) {
	db := openDB(t, "")
	d := Dialect{}
	tests := []struct {
		start, end time.Time
		want       int64
	}{
		{time.UnixMilli(1000), time.UnixMilli(3500), 2500},
		{time.UnixMilli(3500), time.UnixMilli(1000), 0},
	}
	for _, tt := range tests {
		var got int64
		if err := db.QueryRow(d.Rebind("SELECT "+d.MillisBetween("$1", "$2")), d.EncodeTime(tt.start), d.EncodeTime(tt.end)).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("MillisBetween(%v, %v) = %d; want %d", tt.start, tt.end, got, tt.want)
		}
	}
}

func TestErrorClasses(t *testing.T) {
	db := openDB(t, "&_pragma=max_page_count(8)")
	if _, err := db.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	_, err := db.Exec(`INSERT INTO t VALUES ('a', ''), ('a', '')`)
	if d := (Dialect{}); !d.IsUniqueViolation(err) || d.IsLocalDiskFull(err) {
		t.Errorf("duplicate key: %v; want a unique violation only", err)
	}
	big := make([]byte, 64<<10)
	for i := range 100 {
		if _, err = db.Exec(`INSERT INTO t VALUES (?, ?)`, fmt.Sprint(i), string(big)); err != nil {
			break
		}
	}
	if d := (Dialect{}); !d.IsLocalDiskFull(err) || d.IsUniqueViolation(err) {
		t.Errorf("database full: %v; want SQLITE_FULL", err)
	}
	if d := (Dialect{}); d.IsLocalDiskFull(sql.ErrNoRows) || d.IsUniqueViolation(sql.ErrNoRows) {
		t.Error("sql.ErrNoRows classified as a database error")
	}
}

// pageReserve is a Reserve that lifts the database's page limit: released, the database has room
// again, as when a ballast file is deleted.
type pageReserve struct {
	db       *sql.DB
	released int
}

func (r *pageReserve) Release() bool {
	if r.released > 0 {
		return false
	}
	r.released++
	_, err := r.db.Exec(`PRAGMA max_page_count = 100000`)
	return err == nil
}

// TestReserve fills the database to its page limit: a write then fails with SQLITE_FULL, the store
// releases its reserve once and the same write goes through; without a reserve it fails.
func TestReserve(t *testing.T) {
	for _, withReserve := range []bool{true, false} {
		t.Run(fmt.Sprint("reserve ", withReserve), func(t *testing.T) {
			ctx := t.Context()
			// The schema takes about 40 pages; the limit leaves room for a few more tables (migrations).
			db := openDB(t, "&_pragma=max_page_count(60)")
			db.SetMaxOpenConns(1) // the page limit is per connection
			s, err := sqlstore.Open(ctx, db, Dialect{}, migrations, nil)
			if err != nil {
				t.Fatal(err)
			}
			fill(t, ctx, s)
			r := &pageReserve{db: db}
			if withReserve {
				s.SetReserve(r)
			}
			_, err = s.BeginOperation(ctx, store.Operation{Key: envid.Key{WorkflowID: "w", NodeID: "n", VersionID: "v1"},
				Kind: "delete", Params: []byte(fmt.Sprintf(`{"pad": %q}`, strings.Repeat("x", 8<<10)))})
			switch {
			case withReserve && (err != nil || r.released != 1):
				t.Errorf("with a reserve: %v, released %d times; want the write through after one release", err, r.released)
			case !withReserve && !(Dialect{}).IsLocalDiskFull(err):
				t.Errorf("without a reserve: %v; want SQLITE_FULL", err)
			}
		})
	}
}

// fill writes operations until the database is full.
func fill(t *testing.T, ctx context.Context, s *sqlstore.Store) {
	t.Helper()
	pad := fmt.Sprintf(`{"pad": %q}`, strings.Repeat("x", 4<<10))
	for range 1000 {
		_, err := s.BeginOperation(ctx, store.Operation{Kind: "fill", Params: []byte(pad)})
		if (Dialect{}).IsLocalDiskFull(err) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("the database never filled up")
}
