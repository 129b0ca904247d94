package dbcopy

import (
	"testing"
	"time"
)

// TestCanonicalForms: a value read from SQLite and the value PostgreSQL gives back after the
// copy have the same canonical form exactly when they say the same thing, so the digest catches a
// conversion that changed a value.
func TestCanonicalForms(t *testing.T) {
	at := time.UnixMilli(1772600767891).UTC()
	tests := []struct {
		name   string
		kind   kind
		sqlite any
		pg     any
		same   bool
	}{
		{"text", kindText, "wf/a", "wf/a", true},
		{"text as blob", kindText, []byte("wf/a"), "wf/a", true},
		{"text changed", kindText, "wf/a", "wf/A", false},
		{"integer", kindInt, int64(42), int64(42), true},
		{"integer in an int4 column", kindInt, int64(42), int32(42), true},
		{"boolean", kindBool, int64(1), true, true},
		{"boolean flipped", kindBool, int64(0), true, false},
		{"time", kindTime, int64(1772600767891), at, true},
		{"time in another zone", kindTime, int64(1772600767891), at.In(time.FixedZone("X", 3600)), true},
		{"time read as seconds", kindTime, int64(1772600767891), time.Unix(1772600767891, 0), false},
		{"time off by a millisecond", kindTime, int64(1772600767891), at.Add(time.Millisecond), false},
		{"JSON reordered by jsonb", kindJSON, `{"b": 2, "a": [1, 2.50]}`, `{"a": [1, 2.50], "b": 2}`, true},
		{"JSON number changed", kindJSON, `{"a": 2.50}`, `{"a": 2.5}`, false},
		{"JSON value changed", kindJSON, `{"a": "x"}`, `{"a": "y"}`, false},
		{"bytes", kindBytes, []byte{0, 255}, []byte{0, 255}, true},
		{"float", kindFloat, 1.5, 1.5, true},
		{"NULL", kindText, nil, nil, true},
		{"NULL against empty", kindText, nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, src, err := fromSQLite(tt.kind, tt.sqlite)
			if err != nil {
				t.Fatal(err)
			}
			dst, err := fromPostgres(tt.kind, tt.pg)
			if err != nil {
				t.Fatal(err)
			}
			if same := src == dst; same != tt.same {
				t.Errorf("SQLite %v → %+v, PostgreSQL %v → %+v: same = %v; want %v", tt.sqlite, src, tt.pg, dst, same, tt.same)
			}
		})
	}
}

// TestFromSQLiteRefuses: a value of the wrong type is an error, not a guess.
func TestFromSQLiteRefuses(t *testing.T) {
	tests := []struct {
		name string
		kind kind
		v    any
	}{
		{"text in a time column", kindTime, "2026-03-04"},
		{"2 in a boolean column", kindBool, int64(2)},
		{"not JSON", kindJSON, "{"},
		{"float in an integer column", kindInt, 1.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := fromSQLite(tt.kind, tt.v); err == nil {
				t.Errorf("fromSQLite(%v, %v) took it", tt.kind, tt.v)
			}
		})
	}
}
