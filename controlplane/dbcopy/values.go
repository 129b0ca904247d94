package dbcopy

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// kind is how a column's values are carried from SQLite to PostgreSQL and put in canonical form
// for the digest. The canonical form of a value is computed independently on each side, from
// what SQLite holds and from what PostgreSQL gives back, so a conversion that changed a value
// (a time unit, a time zone, a JSON document) shows as a digest mismatch.
type kind int

const (
	kindText  kind = iota // TEXT ↔ text
	kindInt               // INTEGER ↔ bigint, integer, smallint
	kindBool              // INTEGER 0/1 ↔ boolean
	kindTime              // INTEGER unix milliseconds ↔ timestamptz (the stores' codecs)
	kindJSON              // TEXT ↔ jsonb, compared as parsed documents (jsonb reorders keys)
	kindBytes             // BLOB ↔ bytea
	kindFloat             // REAL ↔ double precision, real
)

// kinds maps PostgreSQL's information_schema data_type to a kind. A column of another type is
// refused (SchemaError) rather than guessed at.
var kinds = map[string]kind{
	"text": kindText, "character varying": kindText, "character": kindText,
	"bigint": kindInt, "integer": kindInt, "smallint": kindInt,
	"boolean":                  kindBool,
	"timestamp with time zone": kindTime,
	"jsonb":                    kindJSON, "json": kindJSON,
	"bytea":            kindBytes,
	"double precision": kindFloat, "real": kindFloat,
}

// canon is a value in canonical form.
type canon struct {
	s    string
	null bool
}

// fromSQLite converts an SQLite value of a column of kind k to the value sent to PostgreSQL, and
// its canonical form.
func fromSQLite(k kind, v any) (any, canon, error) {
	if v == nil {
		return nil, canon{null: true}, nil
	}
	switch k {
	case kindText:
		switch x := v.(type) {
		case string:
			return x, canon{s: x}, nil
		case []byte:
			return string(x), canon{s: string(x)}, nil
		}
	case kindInt:
		if x, ok := v.(int64); ok {
			return x, canon{s: strconv.FormatInt(x, 10)}, nil
		}
	case kindBool:
		if x, ok := v.(int64); ok && (x == 0 || x == 1) {
			return x == 1, canon{s: strconv.FormatBool(x == 1)}, nil
		}
	case kindTime:
		if x, ok := v.(int64); ok {
			return time.UnixMilli(x).UTC(), canon{s: strconv.FormatInt(x*1000, 10)}, nil
		}
	case kindJSON:
		var raw []byte
		switch x := v.(type) {
		case string:
			raw = []byte(x)
		case []byte:
			raw = x
		}
		if raw != nil {
			c, err := canonicalJSON(raw)
			if err != nil {
				return nil, canon{}, err
			}
			return string(raw), canon{s: c}, nil
		}
	case kindBytes:
		switch x := v.(type) {
		case []byte:
			return x, canon{s: string(x)}, nil
		case string:
			return []byte(x), canon{s: x}, nil
		}
	case kindFloat:
		switch x := v.(type) {
		case float64:
			return x, canon{s: strconv.FormatFloat(x, 'g', -1, 64)}, nil
		case int64:
			return float64(x), canon{s: strconv.FormatFloat(float64(x), 'g', -1, 64)}, nil
		}
	}
	return nil, canon{}, fmt.Errorf("SQLite holds %T %v where a %s was expected", v, v, k)
}

// fromPostgres is the canonical form of a value PostgreSQL gives back for a column of kind k
// (JSON columns are selected as text).
func fromPostgres(k kind, v any) (canon, error) {
	if v == nil {
		return canon{null: true}, nil
	}
	switch k {
	case kindText:
		if x, ok := v.(string); ok {
			return canon{s: x}, nil
		}
	case kindInt:
		switch x := v.(type) {
		case int64:
			return canon{s: strconv.FormatInt(x, 10)}, nil
		case int32:
			return canon{s: strconv.FormatInt(int64(x), 10)}, nil
		case int16:
			return canon{s: strconv.FormatInt(int64(x), 10)}, nil
		}
	case kindBool:
		if x, ok := v.(bool); ok {
			return canon{s: strconv.FormatBool(x)}, nil
		}
	case kindTime:
		if x, ok := v.(time.Time); ok {
			return canon{s: strconv.FormatInt(x.UnixMicro(), 10)}, nil
		}
	case kindJSON:
		if x, ok := v.(string); ok {
			c, err := canonicalJSON([]byte(x))
			return canon{s: c}, err
		}
	case kindBytes:
		if x, ok := v.([]byte); ok {
			return canon{s: string(x)}, nil
		}
	case kindFloat:
		switch x := v.(type) {
		case float64:
			return canon{s: strconv.FormatFloat(x, 'g', -1, 64)}, nil
		case float32:
			return canon{s: strconv.FormatFloat(float64(x), 'g', -1, 64)}, nil
		}
	}
	return canon{}, fmt.Errorf("PostgreSQL gave back %T where a %s was expected", v, k)
}

func (k kind) String() string {
	return [...]string{"text", "integer", "boolean", "time", "JSON document", "byte string", "float"}[k]
}

// canonicalJSON is a JSON document parsed and written again: keys sorted, no spaces, numbers
// kept exactly as written.
func canonicalJSON(raw []byte) (string, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return "", fmt.Errorf("not a JSON document: %w", err)
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// copyTable streams t's rows from SQLite into PostgreSQL with COPY, returning the source's row
// count and digest.
func (c *copier) copyTable(ctx context.Context, t table) (int64, string, error) {
	rows, err := c.src.QueryContext(ctx, "SELECT "+t.columnList()+" FROM "+pgx.Identifier{t.name}.Sanitize()+t.orderBy(false))
	if err != nil {
		return 0, "", fmt.Errorf("read from SQLite: %w", err)
	}
	defer rows.Close()
	d := newDigest()
	raw := make([]any, len(t.columns))
	ptrs := make([]any, len(t.columns))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	var convErr error
	next := func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out := make([]any, len(raw))
		cs := make([]canon, len(raw))
		for i, v := range raw {
			var err error
			if out[i], cs[i], err = fromSQLite(t.columns[i].kind, v); err != nil {
				convErr = fmt.Errorf("column %s: %w", t.columns[i].name, err)
				return nil, convErr
			}
		}
		d.row(cs)
		return out, nil
	}
	n, err := c.dst.CopyFrom(ctx, pgx.Identifier{t.name}, t.columnNames(), &funcSource{next: next})
	if convErr != nil {
		return 0, "", convErr
	}
	if err != nil {
		return 0, "", fmt.Errorf("write to PostgreSQL: %w", err)
	}
	if n != d.rows {
		return 0, "", fmt.Errorf("PostgreSQL took %d rows of %d", n, d.rows)
	}
	return d.rows, d.hex(), nil
}

// funcSource is a pgx.CopyFromSource over a function returning the next row (nil at the end).
type funcSource struct {
	next func() ([]any, error)
	row  []any
	err  error
}

func (s *funcSource) Next() bool {
	s.row, s.err = s.next()
	return s.row != nil && s.err == nil
}
func (s *funcSource) Values() ([]any, error) { return s.row, nil }
func (s *funcSource) Err() error             { return s.err }

// digestTarget reads t back from PostgreSQL in the same order and digests it the same way.
func (c *copier) digestTarget(ctx context.Context, t table) (int64, string, error) {
	sel := make([]string, len(t.columns))
	for i, col := range t.columns {
		sel[i] = pgx.Identifier{col.name}.Sanitize()
		if col.kind == kindJSON {
			sel[i] += "::text"
		}
	}
	rows, err := c.dst.Query(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+pgx.Identifier{t.name}.Sanitize()+t.orderBy(true))
	if err != nil {
		return 0, "", err
	}
	defer rows.Close()
	d := newDigest()
	cs := make([]canon, len(t.columns))
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return 0, "", err
		}
		for i, v := range vals {
			if cs[i], err = fromPostgres(t.columns[i].kind, v); err != nil {
				return 0, "", fmt.Errorf("column %s: %w", t.columns[i].name, err)
			}
		}
		d.row(cs)
	}
	if err := rows.Err(); err != nil {
		return 0, "", err
	}
	return d.rows, d.hex(), nil
}

// advanceSequences sets each sequence that feeds a column of t (bigserial, identity) past every
// id the table holds and every id SQLite ever handed out for it (sqlite_sequence, AUTOINCREMENT),
// so that the fleet's next operation id follows the last one copied.
func (c *copier) advanceSequences(ctx context.Context, t table) error {
	for _, col := range t.columns {
		if col.kind != kindInt {
			continue
		}
		var seq *string
		if err := c.dst.QueryRow(ctx, "SELECT pg_get_serial_sequence($1, $2)", pgx.Identifier{t.name}.Sanitize(), col.name).Scan(&seq); err != nil {
			return err
		}
		if seq == nil {
			continue
		}
		var high int64
		if err := c.dst.QueryRow(ctx, "SELECT COALESCE(max("+pgx.Identifier{col.name}.Sanitize()+"), 0) FROM "+pgx.Identifier{t.name}.Sanitize()).Scan(&high); err != nil {
			return err
		}
		used, err := c.sqliteSequence(ctx, t.name)
		if err != nil {
			return fmt.Errorf("read SQLite's sequence of %s: %w", t.name, err)
		}
		high = max(high, used)
		if high == 0 {
			continue
		}
		if _, err := c.dst.Exec(ctx, "SELECT setval($1, $2, true)", *seq, high); err != nil {
			return err
		}
		c.log.Info("sequence advanced", "sequence", *seq, "last_value", high)
	}
	return nil
}

// sqliteSequence is the last id SQLite handed out for an AUTOINCREMENT table (0 if none).
func (c *copier) sqliteSequence(ctx context.Context, name string) (int64, error) {
	var exists bool
	if err := c.src.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence')").Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var used int64
	err := c.src.QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = ?", name).Scan(&used)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return used, err
}
