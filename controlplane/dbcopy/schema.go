package dbcopy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// table is one table to copy, as PostgreSQL's catalog describes it.
type table struct {
	name    string
	columns []column
	key     []string // primary-key columns in key order; empty: every column orders the rows
	refs    []string // tables this one references (foreign keys), copied first
}

type column struct {
	name string
	kind kind
}

// tables lists the tables to copy in an order that satisfies their foreign keys, and checks that
// the SQLite database has the same tables with the same columns.
func (c *copier) tables(ctx context.Context) ([]table, error) {
	rows, err := c.dst.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("list the PostgreSQL tables: %w", err)
	}
	pgNames, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the PostgreSQL tables: %w", err)
	}
	srows, err := c.src.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list the SQLite tables: %w", err)
	}
	var sqNames []string
	for srows.Next() {
		var n string
		if err := srows.Scan(&n); err != nil {
			srows.Close()
			return nil, err
		}
		sqNames = append(sqNames, n)
	}
	srows.Close()
	if err := srows.Err(); err != nil {
		return nil, fmt.Errorf("list the SQLite tables: %w", err)
	}
	keep := func(ns []string) []string {
		return slices.DeleteFunc(slices.Clone(ns), func(n string) bool { return skipped[n] })
	}
	if a, b := keep(sqNames), keep(pgNames); !slices.Equal(a, b) {
		return nil, &SchemaError{Problem: fmt.Sprintf("SQLite has tables %v, PostgreSQL %v", a, b)}
	}

	byName := map[string]*table{}
	var all []*table
	for _, n := range keep(pgNames) {
		t := &table{name: n}
		if err := c.describe(ctx, t); err != nil {
			return nil, err
		}
		byName[n] = t
		all = append(all, t)
	}
	return order(all, byName)
}

// describe reads t's columns, key and references from PostgreSQL and checks SQLite's columns.
func (c *copier) describe(ctx context.Context, t *table) error {
	rows, err := c.dst.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, t.name)
	if err != nil {
		return fmt.Errorf("list the columns of %s: %w", t.name, err)
	}
	type nameType struct{ Name, Type string }
	cols, err := pgx.CollectRows(rows, pgx.RowToStructByPos[nameType])
	if err != nil {
		return fmt.Errorf("list the columns of %s: %w", t.name, err)
	}
	var pgCols []string
	for _, col := range cols {
		k, ok := kinds[col.Type]
		if !ok {
			return &SchemaError{Problem: fmt.Sprintf("column %s.%s has type %s, which the copier does not know how to carry", t.name, col.Name, col.Type)}
		}
		t.columns = append(t.columns, column{name: col.Name, kind: k})
		pgCols = append(pgCols, col.Name)
	}
	srows, err := c.src.QueryContext(ctx, `SELECT name FROM pragma_table_info(?) ORDER BY name`, t.name)
	if err != nil {
		return fmt.Errorf("list the SQLite columns of %s: %w", t.name, err)
	}
	var sqCols []string
	for srows.Next() {
		var n string
		if err := srows.Scan(&n); err != nil {
			srows.Close()
			return err
		}
		sqCols = append(sqCols, n)
	}
	srows.Close()
	if err := srows.Err(); err != nil {
		return err
	}
	slices.Sort(pgCols)
	if !slices.Equal(pgCols, sqCols) {
		return &SchemaError{Problem: fmt.Sprintf("table %s has columns %v in SQLite, %v in PostgreSQL", t.name, sqCols, pgCols)}
	}

	krows, err := c.dst.Query(ctx, `SELECT a.attname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1::regclass AND i.indisprimary
		ORDER BY array_position(i.indkey::int2[], a.attnum)`, pgx.Identifier{t.name}.Sanitize())
	if err != nil {
		return fmt.Errorf("read the primary key of %s: %w", t.name, err)
	}
	if t.key, err = pgx.CollectRows(krows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("read the primary key of %s: %w", t.name, err)
	}
	frows, err := c.dst.Query(ctx, `SELECT DISTINCT r.relname FROM pg_constraint k
		JOIN pg_class r ON r.oid = k.confrelid
		WHERE k.contype = 'f' AND k.conrelid = $1::regclass AND k.confrelid <> k.conrelid`, pgx.Identifier{t.name}.Sanitize())
	if err != nil {
		return fmt.Errorf("read the foreign keys of %s: %w", t.name, err)
	}
	if t.refs, err = pgx.CollectRows(frows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("read the foreign keys of %s: %w", t.name, err)
	}
	return nil
}

// order sorts tables so that each comes after the tables it references.
func order(all []*table, byName map[string]*table) ([]table, error) {
	var out []table
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(t *table, path []string) error
	visit = func(t *table, path []string) error {
		switch state[t.name] {
		case 2:
			return nil
		case 1:
			return &SchemaError{Problem: "foreign keys form a cycle: " + strings.Join(append(path, t.name), " → ")}
		}
		state[t.name] = 1
		for _, r := range t.refs {
			ref, ok := byName[r]
			if !ok {
				return &SchemaError{Problem: fmt.Sprintf("table %s references %s, which is not copied", t.name, r)}
			}
			if err := visit(ref, append(path, t.name)); err != nil {
				return err
			}
		}
		state[t.name] = 2
		out = append(out, *t)
		return nil
	}
	for _, t := range all {
		if err := visit(t, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// orderBy is the ORDER BY clause both databases sort t's rows by: the primary key, or every
// column. Text sorts in byte order in both (SQLite's BINARY, PostgreSQL's "C").
func (t table) orderBy(postgres bool) string {
	keys := t.key
	if len(keys) == 0 {
		for _, c := range t.columns {
			keys = append(keys, c.name)
		}
	}
	kind := map[string]kind{}
	for _, c := range t.columns {
		kind[c.name] = c.kind
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = pgx.Identifier{k}.Sanitize()
		if postgres && kind[k] == kindText {
			parts[i] += ` COLLATE "C"`
		}
	}
	return " ORDER BY " + strings.Join(parts, ", ")
}

func (t table) columnList() string {
	parts := make([]string, len(t.columns))
	for i, c := range t.columns {
		parts[i] = pgx.Identifier{c.name}.Sanitize()
	}
	return strings.Join(parts, ", ")
}

func (t table) columnNames() []string {
	out := make([]string, len(t.columns))
	for i, c := range t.columns {
		out[i] = c.name
	}
	return out
}
