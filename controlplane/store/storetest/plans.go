package storetest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlstore"
	"github.com/envfabric/envfabric/shared/envid"
)

// Planner is a store that logs its read queries and explains them (sqlstore.Store).
type Planner interface {
	store.Store
	LogQueries(l *sqlstore.QueryLog)
	Explain(ctx context.Context, q sqlstore.Query) ([]string, error)
}

// scanned are the tables that grow with the environments: a query of a request's path that reads
// one of them whole costs what the fleet holds, not what the request asks for.
var scanned = []string{"envs", "env_revisions", "env_operations"}

// aliasOf finds the alias a query gives each of the scanned tables.
var aliasOf = func() map[string]*regexp.Regexp {
	m := map[string]*regexp.Regexp{}
	for _, tbl := range scanned {
		m[tbl] = regexp.MustCompile(`\b` + tbl + `\s+(?:AS\s+)?([a-z]\w*)`)
	}
	return m
}()

// RunPlans checks, for every query of the paths a request or a cleanup batch takes (status,
// list of one workflow and of all, deps, history, the fleet's cleanup views, the cleanup pass's
// pages), that the database plans it without reading envs, env_revisions or env_operations
// whole: no sequential scan, no index read from end to end. open returns a fresh, empty store.
func RunPlans(t *testing.T, open func(t *testing.T) Planner) {
	s := open(t)
	ctx := t.Context()
	// A few workflows of a few nodes, two revisions each, a cleanup operation, a build.
	if err := s.RecordBuild(ctx, store.Build{ID: "b1", State: store.BuildReady, LockDigest: store.Digest("lock-0")}, at(0)); err != nil {
		t.Fatal(err)
	}
	var keys []envid.Key
	for w := range 3 {
		for n := range 4 {
			k := envid.Key{WorkflowID: fmt.Sprintf("wf%d", w), NodeID: fmt.Sprintf("node%d", n), VersionID: "v1"}
			keys = append(keys, k)
			createEnv(t, s, k, at(0))
			l := lease(t, s, k, store.LeaseChange, at(0))
			for r := range 2 {
				op := must(s.BeginOperation(ctx, store.Operation{Key: k, Kind: "add", StartedAt: at(time.Duration(r) * time.Second)}))(t)
				if _, err := s.CommitRevision(ctx, store.Commit{Key: k, LeaseID: l.ID, Now: at(time.Duration(r+1) * time.Second), Base: int64(r),
					PyprojectTOML: "p", UvLock: LockOf([]string{fmt.Sprintf("alpha==1.0.%d", r)}), OperationID: op, State: store.StateActive, BuildID: "b1"}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	must(s.BeginOperation(ctx, store.Operation{Key: keys[0], Kind: "cleanup", StartedAt: at(time.Minute)}))(t)
	k := keys[5]
	after := store.CleanupCursor{LastUsedAt: at(0), Key: k}

	log := &sqlstore.QueryLog{}
	s.LogQueries(log)
	defer s.LogQueries(nil)
	oneWorkflow := regexp.MustCompile(`workflow_id ?= ?(\?|'wf)`) // SQLite's, PostgreSQL's
	paths := []struct {
		name string
		call func() error
		// bound, when set, must be in the plan: the condition that keeps the read to the answer.
		bound *regexp.Regexp
	}{
		{"status", func() error {
			if _, err := s.GetEnv(ctx, k); err != nil {
				return err
			}
			if _, err := s.ListLeases(ctx, k, at(0)); err != nil {
				return err
			}
			_, err := s.GetBuild(ctx, "b1")
			return err
		}, nil},
		{"list of one workflow, first page", func() error {
			_, err := s.ListEnvs(ctx, store.ListFilter{WorkflowID: "wf2", Limit: 51})
			return err
		}, oneWorkflow},
		{"list of one workflow, a later page", func() error {
			_, err := s.ListEnvs(ctx, store.ListFilter{WorkflowID: "wf1", After: k, Limit: 51})
			return err
		}, oneWorkflow},
		{"list of all, a later page", func() error {
			_, err := s.ListEnvs(ctx, store.ListFilter{After: k, Limit: 51})
			return err
		}, nil},
		{"deps (the current revision)", func() error { _, err := s.GetRevision(ctx, k, 0); return err }, nil},
		{"an older revision", func() error { _, err := s.GetRevision(ctx, k, 1); return err }, nil},
		{"history, first page", func() error { _, err := s.ListOperations(ctx, k, 0, 51); return err }, nil},
		{"history, a later page", func() error { _, err := s.ListOperations(ctx, k, 3, 51); return err }, nil},
		{"one operation", func() error { _, err := s.GetOperation(ctx, 1); return err }, nil},
		{"recent cleanups", func() error { _, err := s.ListOperationsOfKind(ctx, "cleanup", 0, 50); return err }, nil},
		{"cleanup, first batch", func() error {
			_, err := s.IdleEnvsAfter(ctx, at(time.Hour), store.CleanupCursor{}, 500)
			return err
		}, nil},
		{"cleanup, a later batch", func() error { _, err := s.IdleEnvsAfter(ctx, at(time.Hour), after, 500); return err }, nil},
		{"cleanup cursor", func() error { _, err := s.CleanupCursor(ctx, store.CursorEnvs); return err }, nil},
		{"unreferenced builds, a later batch", func() error {
			_, err := s.ListBuilds(ctx, store.BuildFilter{OnDisk: true, Unreferenced: true, UnusedBefore: at(time.Hour),
				After: store.CleanupCursor{LastUsedAt: at(0), BuildID: "a"}, Limit: 500})
			return err
		}, nil},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			if err := p.call(); err != nil {
				t.Fatal(err)
			}
			queries := log.Take()
			if len(queries) == 0 {
				t.Fatal("the path ran no query")
			}
			for _, q := range queries {
				plan, err := s.Explain(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if full := FullScans(q.SQL, plan); len(full) > 0 {
					t.Errorf("reads %s whole:\n%s\nplan:\n  %s", strings.Join(full, ", "), q.SQL, strings.Join(plan, "\n  "))
				}
				if p.bound != nil && !p.bound.MatchString(strings.Join(plan, "\n")) {
					t.Errorf("the plan does not bound the read by %s:\n%s\nplan:\n  %s", p.bound, q.SQL, strings.Join(plan, "\n  "))
				}
			}
		})
	}
}

var (
	// PostgreSQL: "Seq Scan on envs e", "Index Scan using envs_pkey on envs", "Index Only Scan ...".
	pgNode = regexp.MustCompile(`(Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan)(?: Backward)?(?: using \S+)? on (\w+)`)
	// SQLite: "SCAN e", "SCAN envs USING INDEX envs_lock", "SEARCH r USING ...".
	liteScan = regexp.MustCompile(`^SCAN (\w+)`)
)

// FullScans names the growing tables (envs, env_revisions, env_operations) that plan reads
// whole: PostgreSQL's sequential scans and index scans without an index condition, SQLite's SCAN
// steps (of the table or of a whole index); SQLite's aliases are resolved through query.
func FullScans(query string, plan []string) []string {
	aliases := map[string]string{}
	for _, tbl := range scanned {
		aliases[tbl] = tbl
		for _, m := range aliasOf[tbl].FindAllStringSubmatch(query, -1) {
			switch strings.ToUpper(m[1]) {
			case "WHERE", "ON", "SET", "ORDER", "GROUP", "LIMIT", "JOIN", "LEFT", "INNER", "USING", "VALUES":
			default:
				aliases[m[1]] = tbl
			}
		}
	}
	var full []string
	for i, line := range plan {
		if m := liteScan.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			if tbl, ok := aliases[m[1]]; ok {
				full = append(full, tbl)
			}
			continue
		}
		m := pgNode.FindStringSubmatch(line)
		if m == nil || !isScanned(m[2]) {
			continue
		}
		switch m[1] {
		case "Seq Scan":
			full = append(full, m[2])
		case "Index Scan", "Index Only Scan":
			// Its attributes are the lines below it up to the next node ("->").
			cond := false
			for _, attr := range plan[i+1:] {
				if strings.Contains(attr, "->") {
					break
				}
				cond = cond || strings.Contains(attr, "Index Cond:")
			}
			if !cond {
				full = append(full, m[2])
			}
		}
	}
	return full
}

func isScanned(table string) bool { return slices.Contains(scanned, table) }
