package check

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

const env = "chaos/n1"

// row is an audit row of env that ran from start to end (seconds after t0).
func row(id int64, kind, status, req string, pkgs []string, rev int64, start, end float64) AuditRow {
	r := AuditRow{ID: id, Env: env, Operation: kind, Status: status, RequestID: req, StartedAt: at(start),
		Params: map[string]any{}}
	if status != AuditRunning {
		f := at(end)
		r.FinishedAt = &f
	}
	if pkgs != nil {
		list := make([]any, len(pkgs))
		for i, p := range pkgs {
			list[i] = p
		}
		r.Params["applied_packages"] = list
	}
	if rev > 0 && status == AuditSucceeded {
		r.Result = map[string]any{"revision": float64(rev)}
	}
	return r
}

// ack is a 2xx answer to a request of env.
func ack(idx int, kind, req string, opID, rev int64, deps []string, start, end float64) Op {
	o := Op{Index: idx, RequestID: req, CP: "cp1", Kind: kind, Env: env, Start: at(start), End: at(end),
		Status: 200, OperationID: opID, Revision: rev}
	if deps != nil {
		o.Deps, o.HasDeps = deps, true
	}
	if kind == KindCreate {
		o.Status = 201
	}
	return o
}

// failed is an error answer with the API's error body.
func failed(idx int, kind, req string, status int, code string, start, end float64) Op {
	return Op{Index: idx, RequestID: req, CP: "cp2", Kind: kind, Env: env, Start: at(start), End: at(end), Status: status, Code: code,
		Body: fmt.Sprintf(`{"error":{"code":%q}}`, code)}
}

func lock(pins map[string]string) string {
	var b strings.Builder
	b.WriteString("version = 1\nrequires-python = \">=3.11\"\n\n[[package]]\nname = \"chaos-n1-v1\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\n")
	for _, n := range slices.Sorted(maps.Keys(pins)) {
		fmt.Fprintf(&b, "\n[[package]]\nname = %q\nversion = %q\nsource = { registry = \"http://127.0.0.1/simple\" }\n", n, pins[n])
	}
	return b.String()
}

func pyprojectWith(deps ...string) string {
	q := make([]string, len(deps))
	for i, d := range deps {
		q[i] = fmt.Sprintf("%q", d)
	}
	return "[project]\nname = \"chaos-n1-v1\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [" + strings.Join(q, ", ") + "]\n"
}

func ptr[T any](v T) *T { return &v }

// healthy is a run the system survived: create cz01, add cz02, remove cz01, a read, a run, a
// refused add; everything on disk and in the database agrees.
func healthy() Input {
	pp, lk := pyprojectWith("cz02==1.0.0"), lock(map[string]string{"cz02": "1.0.0"})
	return Input{
		Now:      at(100),
		Universe: map[string]bool{"cz01": true, "cz02": true, "cz03": true},
		History: []Op{
			ack(0, KindCreate, "r0", 1, 1, nil, 0, 2),
			ack(1, KindAdd, "r1", 2, 2, []string{"cz01==1.0.0", "cz02==1.0.0"}, 3, 5),
			failed(2, KindAdd, "r2", 423, "ENV_LOCKED", 3.5, 3.6),
			ack(3, KindRemove, "r3", 4, 3, []string{"cz02==1.0.0"}, 6, 8),
			ack(4, KindDeps, "r4", 0, 3, []string{"cz02==1.0.0"}, 9, 9.1),
			{Index: 5, RequestID: "r5", Kind: KindRun, Env: env, Start: at(10), End: at(11), Status: 200, OperationID: 5,
				Revision: 3, Stdout: `{"cz02": "1.0.0"}` + "\n"},
			{Index: 6, RequestID: "r6", Kind: KindSync, Env: env, Start: at(12), End: at(13), Status: 503, Code: "AGENT_UNAVAILABLE",
				Body: `{"error":{"code":"AGENT_UNAVAILABLE"}}`},
		},
		Envs: []EnvFinal{{
			Env: env, DepsStatus: 200, Revision: 3, Dependencies: []string{"cz02==1.0.0"}, Locked: map[string]string{"cz02": "1.0.0"},
			ExportStatus: 200, ExportPyproject: pp, ExportLock: lk,
			StatusCode: 200, FilesMatch: ptr(true), VenvInSync: ptr(true),
			DirExists: true, DiskPyproject: ptr(pp), DiskLock: ptr(lk), Installed: map[string]string{"cz02": "1.0.0"},
			DBState: "ACTIVE",
			Audit: []AuditRow{
				row(1, KindCreate, AuditSucceeded, "r0", []string{"cz01==1.0.0"}, 1, 0, 2),
				row(2, KindAdd, AuditSucceeded, "r1", []string{"cz02==1.0.0"}, 2, 3, 5),
				row(3, KindAdd, AuditRejected, "r2", []string{"cz03==1.0.0"}, 0, 3.5, 3.6),
				row(4, KindRemove, AuditSucceeded, "r3", []string{"cz01"}, 3, 6, 8),
				row(5, KindRun, AuditSucceeded, "r5", nil, 3, 10, 11),
				row(6, KindSync, AuditFailed, "r6", nil, 0, 12, 13),
			},
		}},
	}
}

// addAt adds to in an acknowledged add of cz03==1.0.0 over healthy's revision 3 that committed
// rev from start to end, and makes the final state that revision's.
func addAt(in *Input, rev int64, start, end float64) {
	e := &in.Envs[0]
	e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz03==1.0.0"}, rev, start, end))
	in.History = append(in.History, ack(7, KindAdd, "r7", 7, rev, []string{"cz02==1.0.0", "cz03==1.0.0"}, start, end))
	pins := map[string]string{"cz02": "1.0.0", "cz03": "1.0.0"}
	pp, lk := pyprojectWith("cz02==1.0.0", "cz03==1.0.0"), lock(pins)
	e.Revision, e.Dependencies, e.Locked = rev, []string{"cz02==1.0.0", "cz03==1.0.0"}, pins
	e.ExportPyproject, e.ExportLock, e.DiskPyproject, e.DiskLock = pp, lk, ptr(pp), ptr(lk)
	e.Installed = maps.Clone(pins)
}

// rollbackTo adds to in an acknowledged rollback to revision target (answered with deps) that
// committed revision 4, and makes the final state cz01's (healthy's revision 1).
func rollbackTo(in *Input, target int64, deps []string) {
	e := &in.Envs[0]
	r := row(7, KindRollback, AuditSucceeded, "r7", nil, 4, 14, 15)
	r.Params["revision"] = float64(target)
	e.Audit = append(e.Audit, r)
	op := ack(7, KindRollback, "r7", 7, 4, deps, 14, 15)
	op.Target = target
	in.History = append(in.History, op)
	pins := map[string]string{"cz01": "1.0.0"}
	pp, lk := pyprojectWith("cz01==1.0.0"), lock(pins)
	e.Revision, e.Dependencies, e.Locked = 4, []string{"cz01==1.0.0"}, pins
	e.ExportPyproject, e.ExportLock, e.DiskPyproject, e.DiskLock = pp, lk, ptr(pp), ptr(lk)
	e.Installed = maps.Clone(pins)
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		change func(in *Input)
		want   []string // invariants violated, sorted, unique
	}{
		{name: "healthy", change: func(*Input) {}},
		{
			name:   "a rollback to revision 1 commits revision 1's dependencies as revision 4",
			change: func(in *Input) { rollbackTo(in, 1, []string{"cz01==1.0.0"}) },
		},
		{
			// Revision 3 is current: the rollback changes nothing and answers revision 3.
			name: "a rollback to the current revision",
			change: func(in *Input) {
				r := row(7, KindRollback, AuditSucceeded, "r7", nil, 3, 14, 15)
				r.Params["revision"] = float64(3)
				in.Envs[0].Audit = append(in.Envs[0].Audit, r)
				in.History = append(in.History, ack(7, KindRollback, "r7", 7, 3, []string{"cz02==1.0.0"}, 14, 15))
			},
		},
		{
			name:   "a rollback answered with other dependencies than its target revision's",
			change: func(in *Input) { rollbackTo(in, 1, []string{"cz02==1.0.0"}) },
			want:   []string{InvAcknowledged},
		},
		{
			// Revision 2 holds cz01 and cz02; the final state (cz01 alone) is not it.
			name:   "the state after a rollback is not its target revision's",
			change: func(in *Input) { rollbackTo(in, 2, []string{"cz01==1.0.0", "cz02==1.0.0"}) },
			want:   []string{InvAcknowledged},
		},
		{
			name:   "a rollback to a revision never committed",
			change: func(in *Input) { rollbackTo(in, 9, []string{"cz01==1.0.0"}) },
			want:   []string{InvAcknowledged},
		},
		{
			name: "two adds committed as one revision (lost update)",
			change: func(in *Input) {
				e := &in.Envs[0]
				// r7 added cz03 from base 1 and also answered revision 2; the final state lost it.
				e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz03==1.0.0"}, 2, 3.2, 5.5))
				in.History = append(in.History, ack(7, KindAdd, "r7", 7, 2, []string{"cz01==1.0.0", "cz03==1.0.0"}, 3.2, 5.5))
			},
			want: []string{InvAcknowledged},
		},
		{
			name: "a later writer wrote an older base over an acknowledged add",
			change: func(in *Input) {
				e := &in.Envs[0]
				// add cz03 read revision 1 (before the add of cz02), committed revision 4 from it.
				e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz03==1.0.0"}, 4, 3.2, 14))
				in.History = append(in.History, ack(7, KindAdd, "r7", 7, 4, []string{"cz01==1.0.0", "cz03==1.0.0"}, 3.2, 14))
				e.Revision, e.Dependencies = 4, []string{"cz01==1.0.0", "cz03==1.0.0"}
			},
			want: []string{InvAcknowledged, InvDisk},
		},
		{
			name: "an acknowledged add with no succeeded audit row",
			change: func(in *Input) {
				in.Envs[0].Audit[1].Status = AuditFailed
				in.Envs[0].Audit[1].Result = nil
			},
			// The run saw cz02, which by the audit was never committed.
			want: []string{InvAcknowledged, InvRunObserved},
		},
		{
			name:   "acknowledged revision differs from the audit's",
			change: func(in *Input) { in.History[1].Revision = 5 },
			want:   []string{InvAcknowledged},
		},
		{
			name: "an add answered 500 DB_AUDIT_ERROR that the audit records as succeeded",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz03==1.0.0"}, 4, 14, 15))
				in.History = append(in.History, failed(7, KindAdd, "r7", 500, "DB_AUDIT_ERROR", 14, 15))
				e.Revision, e.Dependencies = 4, []string{"cz02==1.0.0", "cz03==1.0.0"}
				pp, lk := pyprojectWith("cz02==1.0.0", "cz03==1.0.0"), lock(map[string]string{"cz02": "1.0.0", "cz03": "1.0.0"})
				e.ExportPyproject, e.ExportLock, e.DiskPyproject, e.DiskLock = pp, lk, ptr(pp), ptr(lk)
				e.Installed = map[string]string{"cz02": "1.0.0", "cz03": "1.0.0"}
				e.Locked = map[string]string{"cz02": "1.0.0", "cz03": "1.0.0"}
			},
			want: []string{InvAcknowledged},
		},
		{
			name: "an answer lost in a timeout may have succeeded",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz03==1.0.0"}, 4, 14, 15))
				in.History = append(in.History, Op{Index: 7, RequestID: "r7", Kind: KindAdd, Env: env, Start: at(14), End: at(20), TransportErr: "timeout"})
				e.Revision, e.Dependencies = 4, []string{"cz02==1.0.0", "cz03==1.0.0"}
				pp, lk := pyprojectWith("cz02==1.0.0", "cz03==1.0.0"), lock(map[string]string{"cz02": "1.0.0", "cz03": "1.0.0"})
				e.ExportPyproject, e.ExportLock, e.DiskPyproject, e.DiskLock = pp, lk, ptr(pp), ptr(lk)
				e.Installed = map[string]string{"cz02": "1.0.0", "cz03": "1.0.0"}
				e.Locked = map[string]string{"cz02": "1.0.0", "cz03": "1.0.0"}
			},
		},
		{
			name: "an add that changed nothing answers the current revision",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz02==1.0.0"}, 3, 14, 15))
				in.History = append(in.History, ack(7, KindAdd, "r7", 7, 3, []string{"cz02==1.0.0"}, 14, 15))
			},
		},
		{
			name: "two identical adds answered with the same revision: the second changed nothing",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz02==1.0.0"}, 2, 3.2, 5.5))
				in.History = append(in.History, ack(7, KindAdd, "r7", 7, 2, []string{"cz01==1.0.0", "cz02==1.0.0"}, 3.2, 5.5))
			},
		},
		{
			name: "an add that claims an earlier revision yet changes the set",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindAdd, AuditSucceeded, "r7", []string{"cz03==1.0.0"}, 3, 14, 15))
				in.History = append(in.History, ack(7, KindAdd, "r7", 7, 3, []string{"cz02==1.0.0", "cz03==1.0.0"}, 14, 15))
			},
			want: []string{InvAcknowledged},
		},
		{
			name:   "final dependencies miss an acknowledged package",
			change: func(in *Input) { in.Envs[0].Dependencies = []string{} },
			want:   []string{InvAcknowledged},
		},
		{
			name: "a revision the audit does not account for",
			change: func(in *Input) {
				in.Envs[0].Audit[3].Result["revision"] = float64(4)
				in.History[3].Revision = 4
				in.History[4].Revision = 4
				in.History[5].Revision = 4
				in.Envs[0].Audit[4].Result["revision"] = float64(4)
				in.Envs[0].Revision = 4
			},
			want: []string{InvAcknowledged},
		},
		{
			name: "a read shows a state no committed revision has",
			change: func(in *Input) {
				in.History[4].Deps = []string{"cz01==1.0.0", "cz02==1.0.0", "cz03==1.0.0"}
			},
			want: []string{InvAcknowledged},
		},
		{
			name: "pyproject.toml on disk is an older revision",
			change: func(in *Input) {
				in.Envs[0].DiskPyproject = ptr(pyprojectWith("cz01==1.0.0", "cz02==1.0.0"))
			},
			want: []string{InvDisk},
		},
		{
			name: "uv.lock missing on disk",
			change: func(in *Input) {
				in.Envs[0].DiskLock = nil
			},
			want: []string{InvDisk},
		},
		{
			name:   ".venv holds a package the lock does not",
			change: func(in *Input) { in.Envs[0].Installed["cz03"] = "1.0.0" },
			want:   []string{InvDisk},
		},
		{
			name:   "status says the venv is out of step",
			change: func(in *Input) { in.Envs[0].VenvInSync = ptr(false) },
			want:   []string{InvDisk},
		},
		{
			name:   "the database's lock disagrees with its pyproject.toml",
			change: func(in *Input) { in.Envs[0].Locked = map[string]string{"cz02": "2.0.0"} },
			want:   []string{InvDisk},
		},
		{
			name: "a live lease after quiet",
			change: func(in *Input) {
				in.Leases = []Lease{{ID: "l1", Env: env, Holder: "cp1", Operation: "add", OperationID: 9, ExpiresAt: at(105)}}
			},
			want: []string{InvLease},
		},
		{
			name: "an expired lease left behind is fine",
			change: func(in *Input) {
				in.Leases = []Lease{{ID: "l1", Env: env, Holder: "cp1", Operation: "add", OperationID: 9, ExpiresAt: at(95)}}
			},
		},
		{
			name: "an audit row still running",
			change: func(in *Input) {
				r := row(7, KindAdd, AuditRunning, "r7", []string{"cz03==1.0.0"}, 0, 14, 0)
				in.Envs[0].Audit = append(in.Envs[0].Audit, r)
				in.OpenRows = []AuditRow{r}
			},
			want: []string{InvAuditOpen},
		},
		{
			name:   "an environment stuck INSTALLING",
			change: func(in *Input) { in.Envs[0].DBState = "INSTALLING" },
			want:   []string{InvStuck},
		},
		{
			name: "a 500 without the error body",
			change: func(in *Input) {
				in.History = append(in.History, Op{Index: 7, RequestID: "r7", Kind: KindDeps, Env: env, Start: at(14), End: at(15), Status: 500, Body: "panic"})
			},
			want: []string{InvErrorBody},
		},
		{
			name: "a 500 with an undocumented code",
			change: func(in *Input) {
				in.History = append(in.History, failed(7, KindSync, "r7", 500, "WHOOPS", 14, 15))
			},
			want: []string{InvErrorBody},
		},
		{
			name: "a documented code with the wrong status",
			change: func(in *Input) {
				in.History = append(in.History, failed(7, KindSync, "r7", 500, "AGENT_UNAVAILABLE", 14, 15))
			},
			want: []string{InvErrorBody},
		},
		{
			name: "a run sees a package no revision committed",
			change: func(in *Input) {
				in.History[5].Stdout = `{"cz02": "1.0.0", "cz03": "1.0.0"}`
			},
			want: []string{InvRunObserved},
		},
		{
			name: "a run sees the packages of the revision it answered, though a change committed while it ran",
			change: func(in *Input) {
				// add cz03 made revision 4 between the run's start and end; the run answered 4.
				addAt(in, 4, 10.2, 10.8)
				in.History[5].Revision, in.History[5].Stdout = 4, `{"cz02": "1.0.0", "cz03": "1.0.0"}`
				in.Envs[0].Audit[4].Result["revision"] = float64(4)
			},
		},
		{
			// Runs are not excluded by changes: one that started before a change committed
			// revision 4 and ran revision 3's build answers revision 3, and is right.
			name: "a run answers the revision it started on while a change commits the next",
			change: func(in *Input) {
				addAt(in, 4, 10.2, 10.8)
			},
		},
		{
			// Revision 4 was committed (its add answered) before the run started: the run read a
			// revision that was no longer current, though it saw that revision's packages.
			name: "a run answered a revision replaced before it started",
			change: func(in *Input) {
				addAt(in, 4, 8.5, 9.5)
			},
			want: []string{InvRunObserved},
		},
		{
			// The run answered revision 4 and saw its packages, but the add that committed
			// revision 4 started after the run had ended.
			name: "a run answered a revision committed after it ended",
			change: func(in *Input) {
				addAt(in, 4, 12, 12.5)
				in.History[5].Revision, in.History[5].Stdout = 4, `{"cz02": "1.0.0", "cz03": "1.0.0"}`
				in.Envs[0].Audit[4].Result["revision"] = float64(4)
			},
			want: []string{InvRunObserved},
		},
		{
			// The window check took any revision current while the run ran: revision 3 was until
			// 10.8, so it accepted this run. The run answered revision 4, which holds cz03.
			name: "a run saw an older revision than the one it answered",
			change: func(in *Input) {
				addAt(in, 4, 10.2, 10.8)
				in.History[5].Revision = 4
				in.Envs[0].Audit[4].Result["revision"] = float64(4)
			},
			want: []string{InvRunObserved},
		},
		{
			// What it saw is revision 3's, current throughout the run, so the window check
			// accepted it; but no revision 7 was ever committed.
			name: "a run answered a revision the audit never committed",
			change: func(in *Input) {
				in.History[5].Revision = 7
				in.Envs[0].Audit[4].Result["revision"] = float64(7)
			},
			want: []string{InvRunObserved},
		},
		{
			name:   "a run's answer and its audit disagree on the revision",
			change: func(in *Input) { in.Envs[0].Audit[4].Result["revision"] = float64(2) },
			want:   []string{InvAcknowledged},
		},
		{
			name:   "a successful run that answered no revision",
			change: func(in *Input) { in.History[5].Revision = 0 },
			want:   []string{InvAcknowledged, InvRunObserved},
		},
		{
			name:   "a create's answer and its audit disagree on the revision",
			change: func(in *Input) { in.History[0].Revision = 2 },
			want:   []string{InvAcknowledged},
		},
		{
			// The window check replayed from revision 1 without asking; the create must say.
			name:   "a succeeded create whose audit records no revision",
			change: func(in *Input) { in.Envs[0].Audit[0].Result = nil },
			want:   []string{InvAcknowledged},
		},
		{
			name: "a delete reflected: gone from the database and the disk",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindDelete, AuditSucceeded, "r7", nil, 0, 14, 15))
				in.History = append(in.History, ack(7, KindDelete, "r7", 7, 0, nil, 14, 15))
				*e = EnvFinal{Env: env, DepsStatus: 404, DepsCode: "ENV_NOT_FOUND", Audit: e.Audit}
			},
		},
		{
			name: "a deleted environment's directory left on disk",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindDelete, AuditSucceeded, "r7", nil, 0, 14, 15))
				*e = EnvFinal{Env: env, DepsStatus: 404, DepsCode: "ENV_NOT_FOUND", Audit: e.Audit, DirExists: true}
			},
			want: []string{InvDisk},
		},
		{
			name: "an acknowledged delete but the environment is still there",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit, row(7, KindDelete, AuditSucceeded, "r7", nil, 0, 14, 15))
				in.History = append(in.History, ack(7, KindDelete, "r7", 7, 0, nil, 14, 15))
			},
			want: []string{InvAcknowledged},
		},
		{
			name: "delete then create again: the new incarnation starts from its create",
			change: func(in *Input) {
				e := &in.Envs[0]
				e.Audit = append(e.Audit,
					row(7, KindDelete, AuditSucceeded, "r7", nil, 0, 14, 15),
					row(8, KindCreate, AuditSucceeded, "r8", []string{"cz03==2.0.0"}, 1, 16, 17),
					row(9, KindAdd, AuditSucceeded, "r9", []string{"cz01==1.1.0"}, 2, 18, 19))
				in.History = append(in.History, ack(7, KindDelete, "r7", 7, 0, nil, 14, 15),
					ack(8, KindCreate, "r8", 8, 1, nil, 16, 17),
					ack(9, KindAdd, "r9", 9, 2, []string{"cz01==1.1.0", "cz03==2.0.0"}, 18, 19),
					// A read during the first incarnation's revision 2 and one of the second's.
					ack(10, KindDeps, "r10", 0, 2, []string{"cz01==1.1.0", "cz03==2.0.0"}, 19.5, 20),
					// A run at the second incarnation's revision 1, which is not the first's.
					Op{Index: 11, RequestID: "r11", Kind: KindRun, Env: env, Start: at(17.2), End: at(17.8), Status: 200, OperationID: 10,
						Revision: 1, Stdout: `{"cz03": "2.0.0"}`})
				e.Audit = append(e.Audit, row(10, KindRun, AuditSucceeded, "r11", nil, 1, 17.3, 17.7))
				pp, lk := pyprojectWith("cz01==1.1.0", "cz03==2.0.0"), lock(map[string]string{"cz01": "1.1.0", "cz03": "2.0.0"})
				e.Revision, e.Dependencies = 2, []string{"cz01==1.1.0", "cz03==2.0.0"}
				e.Locked = map[string]string{"cz01": "1.1.0", "cz03": "2.0.0"}
				e.ExportPyproject, e.ExportLock, e.DiskPyproject, e.DiskLock = pp, lk, ptr(pp), ptr(lk)
				e.Installed = map[string]string{"cz01": "1.1.0", "cz03": "2.0.0"}
			},
		},
		{
			name:   "a program that would not come back",
			change: func(in *Input) { in.HealErrors = []string{"agent2 did not start again: exit status 1"} },
			want:   []string{InvHeal},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := healthy()
			tt.change(&in)
			vs := Check(in)
			var got []string
			for _, v := range vs {
				if !slices.Contains(got, v.Invariant) {
					got = append(got, v.Invariant)
				}
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				var b strings.Builder
				for _, v := range vs {
					fmt.Fprintf(&b, "\n  %s %s: %s", v.Invariant, v.Env, v.Message)
					for _, e := range v.Evidence {
						fmt.Fprintf(&b, "\n      %s", e)
					}
				}
				t.Errorf("violated %v; want %v%s", got, want, b.String())
			}
		})
	}
}

func TestParseDep(t *testing.T) {
	tests := []struct{ in, name, spec string }{
		{"cz01==1.0.0", "cz01", "==1.0.0"},
		{"CZ_01 == 1.0.0", "cz-01", "==1.0.0"},
		{"cz01>=1.0,<2", "cz01", ">=1.0,<2"},
		{"cz01", "cz01", ""},
	}
	for _, tt := range tests {
		n, s := parseDep(tt.in)
		if n != tt.name || s != tt.spec {
			t.Errorf("parseDep(%q) = %q, %q; want %q, %q", tt.in, n, s, tt.name, tt.spec)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Op
	}{
		{name: "deps", body: `{"dependencies":["cz01==1.0.0"],"revision":3,"operation_id":9}`,
			want: Op{Revision: 3, OperationID: 9, Deps: []string{"cz01==1.0.0"}, HasDeps: true}},
		{name: "error", body: `{"error":{"code":"ENV_LOCKED","message":"busy"}}`, want: Op{Code: "ENV_LOCKED"}},
		{name: "run", body: `{"stdout":"{}\n","exit_code":1}`, want: Op{Stdout: "{}\n", ExitCode: 1}},
		{name: "not json", body: `oops`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Op{Body: tt.body}
			o.Decode()
			tt.want.Body = tt.body
			if fmt.Sprint(o) != fmt.Sprint(tt.want) {
				t.Errorf("got %+v; want %+v", o, tt.want)
			}
		})
	}
}

// Runs that saw the same uncommitted package are one violation naming them all and the failed
// add that handed uv the package.
func TestRunsThatSawOneWrongStateAreOneViolation(t *testing.T) {
	in := healthy()
	e := &in.Envs[0]
	e.Audit = append(e.Audit, row(7, KindAdd, AuditFailed, "r7", []string{"cz03==2.0.0"}, 0, 9.5, 9.8),
		// Refused before uv ran, or handing uv something else: not suspects.
		row(20, KindAdd, AuditRejected, "r20", []string{"cz03==2.0.0"}, 0, 9.5, 9.6),
		row(21, KindAdd, AuditFailed, "r21", []string{"cz02==1.0.0"}, 0, 9.5, 9.6))
	in.History = append(in.History, failed(7, KindAdd, "r7", 500, "DB_AUDIT_ERROR", 9.5, 9.8))
	for i, start := range []float64{10, 10.5, 11} {
		e.Audit = append(e.Audit, row(int64(8+i), KindRun, AuditSucceeded, fmt.Sprint("run", i), nil, 3, start, start+0.2))
		in.History = append(in.History, Op{Index: 8 + i, RequestID: fmt.Sprint("run", i), Kind: KindRun, Env: env,
			Start: at(start), End: at(start + 0.2), Status: 200, Revision: 3, Stdout: `{"cz02": "1.0.0", "cz03": "2.0.0"}`})
	}
	vs := Check(in)
	if len(vs) != 1 || vs[0].Invariant != InvRunObserved || !strings.HasPrefix(vs[0].Message, "3 runs answered revision 3 and saw") {
		t.Fatalf("got %+v; want one run violation for 3 runs", vs)
	}
	ev := strings.Join(vs[0].Evidence, "\n")
	if !strings.Contains(ev, "suspect: audit 7 add failed") {
		t.Errorf("evidence does not name the failed add:\n%s", ev)
	}
	if strings.Contains(ev, "audit 20") || strings.Contains(ev, "audit 21") {
		t.Errorf("evidence names an add that is no suspect:\n%s", ev)
	}
}
