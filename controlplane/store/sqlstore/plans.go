package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// QueryLog collects the read queries a store runs (Store.LogQueries), so that a test can ask the
// database how it plans each one (Store.Explain) with the arguments it was run with.
type QueryLog struct {
	mu      sync.Mutex
	queries []Query
}

// Query is one logged query: its shared $N text and its arguments.
type Query struct {
	SQL  string
	Args []any
}

func (l *QueryLog) add(query string, args []any) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queries = append(l.queries, Query{SQL: query, Args: slices.Clone(args)})
}

// Take returns the queries logged since the last Take, and forgets them.
func (l *QueryLog) Take() []Query {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queries
	l.queries = nil
	return q
}

// LogQueries sends every later read query to l (nil stops). Call it before the store is shared.
func (s *Store) LogQueries(l *QueryLog) { s.queries = l }

// Explain returns the database's plan of q, one line a step (Dialect.Explain).
func (s *Store) Explain(ctx context.Context, q Query) ([]string, error) {
	plan, err := s.d.Explain(ctx, s.db, q.SQL, q.Args)
	if err != nil {
		return nil, fmt.Errorf("explain %q: %w", q.SQL, err)
	}
	return plan, nil
}
