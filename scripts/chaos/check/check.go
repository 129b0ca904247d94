package check

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/envfabric/envfabric/shared/errcode"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// Check judges in and returns every violation found, each with its evidence.
func Check(in Input) []Violation {
	c := &checker{in: in, rowsByRequest: map[string][]AuditRow{}, lineages: map[string]*lineage{}, audit: map[string][]AuditRow{}}
	for _, e := range in.Envs {
		c.audit[e.Env] = e.Audit
		for _, r := range e.Audit {
			if r.RequestID != "" {
				c.rowsByRequest[r.RequestID] = append(c.rowsByRequest[r.RequestID], r)
			}
		}
		c.lineages[e.Env] = c.rebuild(e)
	}
	c.checkAnswers()
	c.flushRuns()
	for _, e := range in.Envs {
		c.checkFinal(e)
		c.checkDisk(e)
		if transitional(e.DBState) {
			c.add(InvStuck, e.Env, fmt.Sprintf("environment is still %s after the system went quiet", e.DBState))
		}
	}
	c.checkLeases()
	c.checkOpenRows()
	for _, h := range in.HealErrors {
		c.add(InvHeal, "", h)
	}
	return c.out
}

type checker struct {
	in            Input
	rowsByRequest map[string][]AuditRow
	lineages      map[string]*lineage
	audit         map[string][]AuditRow // env → its rows
	out           []Violation
	// Runs that saw the same wrong state make one violation: the state is the finding, each run
	// one more piece of evidence.
	badRuns     map[string]*badRun
	badRunOrder []string
}

type badRun struct {
	env, seen string
	rev       int64
	want      string // what the revision holds; "" when the audit never committed it
	runs      []string
	evidence  []string
}

// addBadRun records that run, answered at revision rev, saw seen instead of want.
func (c *checker) addBadRun(env string, rev int64, seen, want, run string, evidence []string) {
	key := fmt.Sprintf("%s %d %s", env, rev, seen)
	b := c.badRuns[key]
	if b == nil {
		if c.badRuns == nil {
			c.badRuns = map[string]*badRun{}
		}
		b = &badRun{env: env, seen: seen, rev: rev, want: want}
		c.badRuns[key] = b
		c.badRunOrder = append(c.badRunOrder, key)
	}
	b.runs = append(b.runs, run)
	for _, ev := range evidence {
		if !slices.Contains(b.evidence, ev) {
			b.evidence = append(b.evidence, ev)
		}
	}
}

func (c *checker) flushRuns() {
	const shown = 3
	for _, key := range c.badRunOrder {
		b := c.badRuns[key]
		who := fmt.Sprintf("%d runs", len(b.runs))
		if len(b.runs) == 1 {
			who = "a run"
		}
		msg := fmt.Sprintf("%s answered revision %d and saw %s, but revision %d holds %s", who, b.rev, b.seen, b.rev, b.want)
		if b.want == "" {
			msg = fmt.Sprintf("%s answered revision %d and saw %s, but the audit never committed a revision %d of the environment it ran in", who, b.rev, b.seen, b.rev)
		}
		ev := b.runs
		if len(ev) > shown {
			ev = append(slices.Clone(ev[:shown]), fmt.Sprintf("… and %d more runs", len(b.runs)-shown))
		}
		c.add(InvRunObserved, b.env, msg, append(slices.Clone(ev), b.evidence...)...)
	}
}

func (c *checker) add(inv, env, msg string, evidence ...string) {
	c.out = append(c.out, Violation{Invariant: inv, Env: env, Message: msg, Evidence: evidence})
}

// lineage is one environment's history rebuilt from its audit trail: a sequence of incarnations,
// each from a succeeded create to the succeeded delete that ended it.
type lineage struct {
	incs    []*incarnation
	byAudit map[int64]*incarnation // audit row id → the incarnation it belongs to
}

// incarnation is one life of an environment: its committed revisions and their dependency sets.
type incarnation struct {
	create   AuditRow
	end      *time.Time // the ending delete's finish; nil while it lives
	states   map[int64]depSet
	producer map[int64]AuditRow
	revs     []int64 // committed revisions, ascending
	pending  map[int64][]AuditRow
	// committed are its succeeded rows other than runs that record a revision: each finished
	// after that revision was committed.
	committed []AuditRow
}

func (i *incarnation) last() int64 { return i.revs[len(i.revs)-1] }

// effect is what one succeeded mutation does to d: a rollback makes its target revision's set
// current (d itself when the target is the revision being replayed, which a rollback to the
// current revision records, or unknown, which replay reports), the others apply.
func (i *incarnation) effect(d depSet, row AuditRow) depSet {
	if row.Operation != KindRollback {
		return apply(d, row)
	}
	if t, ok := row.rollbackTarget(); ok && i.states[t] != nil {
		return maps.Clone(i.states[t])
	}
	return d
}

// clockSlack covers the audit's millisecond times against the client's finer ones.
const clockSlack = time.Millisecond

// current says why revision r of the incarnation cannot have been its current revision at any
// point of [from, to], or "" when it can: r was committed before to (a row that could have made
// it started by then) and not yet replaced at from (no row recording a later revision finished
// before it; a row records its revision after the commit, so it finished after that commit).
func (i *incarnation) current(r int64, from, to time.Time) string {
	makers := append([]AuditRow{i.create}, i.pending[r]...)
	if r != i.revs[0] {
		makers = i.pending[r]
	}
	if len(makers) > 0 {
		first := slices.MinFunc(makers, func(a, b AuditRow) int { return a.StartedAt.Compare(b.StartedAt) })
		if first.StartedAt.After(to.Add(clockSlack)) {
			return fmt.Sprintf("the run ended at %s, before any operation that could commit revision %d started (%s)",
				clock(to), r, describeRow(first))
		}
	}
	for _, later := range i.committed {
		if rev, _ := later.revision(); rev > r && finished(later).Add(clockSlack).Before(from) {
			return fmt.Sprintf("revision %d was committed before the run started at %s (%s)", rev, clock(from), describeRow(later))
		}
	}
	return ""
}

// overlaps reports whether the incarnation lived at some point in [from, to].
func (i *incarnation) overlaps(from, to time.Time) bool {
	return !i.create.StartedAt.After(to) && (i.end == nil || !i.end.Before(from))
}

// sequence lists the committed revisions, for evidence.
func (i *incarnation) sequence() []string {
	out := make([]string, 0, len(i.revs))
	for _, r := range i.revs {
		out = append(out, fmt.Sprintf("revision %d = %s by %s", r, i.states[r], describeRow(i.producer[r])))
	}
	return out
}

// rebuild orders the succeeded operations of e's audit into incarnations and, inside each, the
// committed mutations by revision, applying them from the create on.
func (c *checker) rebuild(e EnvFinal) *lineage {
	rows := slices.Clone(e.Audit)
	slices.SortFunc(rows, func(a, b AuditRow) int { return int(a.ID - b.ID) })
	l := &lineage{byAudit: map[int64]*incarnation{}}
	var cur *incarnation
	for _, row := range rows {
		if row.Status != AuditSucceeded {
			continue
		}
		switch row.Operation {
		case KindCreate:
			if cur != nil && cur.end == nil {
				c.add(InvAcknowledged, e.Env, fmt.Sprintf("create %d succeeded while the environment of create %d was never deleted", row.ID, cur.create.ID),
					describeRow(cur.create), describeRow(row))
				t := row.StartedAt
				cur.end = &t
			}
			cur = &incarnation{create: row, states: map[int64]depSet{}, producer: map[int64]AuditRow{}, pending: map[int64][]AuditRow{}}
			l.incs = append(l.incs, cur)
			l.byAudit[row.ID] = cur
		case KindDelete:
			if cur != nil && cur.end == nil {
				cur.end = row.FinishedAt
				if cur.end == nil {
					t := row.StartedAt
					cur.end = &t
				}
				l.byAudit[row.ID] = cur
			}
		case KindAdd, KindRemove, KindUpdate, KindRollback:
			if cur == nil || cur.end != nil {
				c.add(InvAcknowledged, e.Env, fmt.Sprintf("%s %d succeeded while no environment existed", row.Operation, row.ID), describeRow(row))
				continue
			}
			rev, ok := row.revision()
			if !ok {
				c.add(InvAcknowledged, e.Env, fmt.Sprintf("succeeded %s %d records no revision in its result", row.Operation, row.ID), describeRow(row))
				continue
			}
			cur.pending[rev] = append(cur.pending[rev], row)
			l.byAudit[row.ID] = cur
		default:
			if cur != nil && cur.end == nil {
				l.byAudit[row.ID] = cur
			}
		}
	}
	for _, row := range rows {
		if _, ok := row.revision(); ok && row.Status == AuditSucceeded && row.Operation != KindRun && l.byAudit[row.ID] != nil {
			inc := l.byAudit[row.ID]
			inc.committed = append(inc.committed, row)
		}
	}
	for _, inc := range l.incs {
		c.replay(e.Env, inc)
	}
	return l
}

// replay computes an incarnation's dependency set at each committed revision. At every revision
// exactly one mutation may change the set (the one that made the revision); any other mutation
// answered with the same revision must have changed nothing.
func (c *checker) replay(env string, inc *incarnation) {
	base, ok := inc.create.revision()
	if !ok {
		// Replayed from 1, what a create commits, so the rest of the lineage is still checked.
		c.add(InvAcknowledged, env, fmt.Sprintf("succeeded create %d records no revision in its result", inc.create.ID), describeRow(inc.create))
		base = 1
	}
	cur := apply(nil, inc.create)
	inc.states[base], inc.producer[base], inc.revs = cur, inc.create, []int64{base}
	prev := base
	for _, r := range slices.Sorted(maps.Keys(inc.pending)) {
		cands := inc.pending[r]
		for _, row := range cands {
			if row.Operation != KindRollback {
				continue
			}
			// A rollback to the current revision changes nothing and records that revision.
			if t, ok := row.rollbackTarget(); !ok || t > r || (t < r && inc.states[t] == nil) {
				c.add(InvAcknowledged, env, fmt.Sprintf("rollback %d to revision %d recorded revision %d, but revision %d had not been committed before it",
					row.ID, t, r, t), append([]string{describeRow(row)}, inc.sequence()...)...)
			}
		}
		apply := func(d depSet, row AuditRow) depSet { return inc.effect(d, row) }
		if r < base {
			for _, row := range cands {
				c.add(InvAcknowledged, env, fmt.Sprintf("%s %d records revision %d, before the create's revision %d", row.Operation, row.ID, r, base), describeRow(row))
			}
			continue
		}
		if r == base {
			for _, row := range cands {
				if !apply(cur, row).equal(cur) {
					c.add(InvAcknowledged, env, fmt.Sprintf("%s %d changes the dependencies but records the create's revision %d", row.Operation, row.ID, r),
						describeRow(inc.create), describeRow(row))
				}
			}
			continue
		}
		if r > prev+1 {
			c.add(InvAcknowledged, env, fmt.Sprintf("revisions %d..%d have no succeeded operation in the audit (the database committed what the audit does not record, or the audit records a wrong revision)", prev+1, r-1),
				inc.sequence()...)
		}
		// The mutation that made revision r is one that changes the set; when several do, the
		// first to finish is the likeliest. Every other mutation answered with r must then be a
		// no-op on r (it found the set already so): one that is not was committed over, or
		// answered with a revision it did not make — an acknowledged change lost.
		prod := cands[0]
		var changers []AuditRow
		for _, row := range cands {
			if !apply(cur, row).equal(cur) {
				changers = append(changers, row)
			}
		}
		if len(changers) > 0 {
			prod = slices.MinFunc(changers, func(a, b AuditRow) int { return finished(a).Compare(finished(b)) })
		}
		next := apply(cur, prod)
		var lost []AuditRow
		for _, row := range cands {
			if row.ID != prod.ID && !apply(next, row).equal(next) {
				lost = append(lost, row)
			}
		}
		if len(lost) > 0 {
			ev := []string{fmt.Sprintf("revision %d = %s", prev, cur), describeRow(prod) + " → " + next.String()}
			for _, row := range lost {
				ev = append(ev, describeRow(row)+" → "+apply(cur, row).String())
			}
			c.add(InvAcknowledged, env, fmt.Sprintf("%d mutations committed as revision %d, and %d of them would change it again: all but one were lost",
				len(lost)+1, r, len(lost)), ev...)
		}
		inc.states[r], inc.producer[r] = next, prod
		inc.revs = append(inc.revs, r)
		prev, cur = r, next
	}
}

// checkAnswers compares every answer with the audit and the committed sequence.
func (c *checker) checkAnswers() {
	for _, op := range c.in.History {
		c.checkErrorBody(op)
		switch {
		case Audited(op.Kind):
			c.checkAudited(op)
		case op.Kind == KindDeps && op.Outcome() == OK:
			c.checkRead(op)
		}
		if op.Kind == KindRun && op.Outcome() == OK {
			c.checkRun(op)
		}
	}
}

// checkErrorBody: every error answer carries the API's error body with a documented code, sent
// with that code's status.
func (c *checker) checkErrorBody(op Op) {
	if op.Status < 400 {
		return
	}
	code := errcode.Code(op.Code)
	switch {
	case op.Code == "":
		c.add(InvErrorBody, op.Env, fmt.Sprintf("%d without the API's error body", op.Status), describeOp(op))
	case !code.Known():
		c.add(InvErrorBody, op.Env, fmt.Sprintf("%d with the undocumented code %s", op.Status, op.Code), describeOp(op))
	case code.HTTPStatus() != op.Status:
		c.add(InvErrorBody, op.Env, fmt.Sprintf("%s answered with %d; it is documented as %d", op.Code, op.Status, code.HTTPStatus()), describeOp(op))
	}
}

func (c *checker) checkAudited(op Op) {
	rows := c.rowsByRequest[op.RequestID]
	var succeeded []AuditRow
	for _, r := range rows {
		if r.Status == AuditSucceeded {
			succeeded = append(succeeded, r)
		}
	}
	evidence := func() []string {
		ev := []string{describeOp(op)}
		for _, r := range rows {
			ev = append(ev, describeRow(r))
		}
		return append(ev, c.faultsDuring(op.Start, op.End)...)
	}
	switch op.Outcome() {
	case Fail:
		if len(succeeded) > 0 {
			c.add(InvAcknowledged, op.Env, fmt.Sprintf("%s answered %d %s, but the audit records it succeeded", op.Kind, op.Status, op.Code), evidence()...)
		}
	case OK:
		if len(succeeded) == 0 {
			c.add(InvAcknowledged, op.Env, fmt.Sprintf("acknowledged %s has no succeeded audit row", op.Kind), evidence()...)
			return
		}
		row := succeeded[0]
		if op.OperationID != 0 && op.OperationID != row.ID {
			c.add(InvAcknowledged, op.Env, fmt.Sprintf("acknowledged %s names operation %d, the audit row of its request is %d", op.Kind, op.OperationID, row.ID), evidence()...)
		}
		if op.Kind == KindSync || op.Kind == KindDelete {
			return
		}
		// Create, run and the mutations answer a revision; their audit result records it too.
		rev, ok := row.revision()
		switch {
		case !ok:
			c.add(InvAcknowledged, op.Env, fmt.Sprintf("acknowledged %s answered revision %d; its audit result records none", op.Kind, op.Revision), evidence()...)
		case rev != op.Revision:
			c.add(InvAcknowledged, op.Env, fmt.Sprintf("acknowledged %s answered revision %d, the audit records %d", op.Kind, op.Revision, rev), evidence()...)
		}
		if op.Kind == KindCreate || op.Kind == KindRun {
			return
		}
		l := c.lineages[op.Env]
		if l == nil || l.byAudit[row.ID] == nil || !op.HasDeps {
			return
		}
		inc := l.byAudit[row.ID]
		if want, ok := inc.states[op.Revision]; ok {
			if got := depsFrom(op.Deps); !got.equal(want) {
				c.add(InvAcknowledged, op.Env, fmt.Sprintf("acknowledged %s answered revision %d with %s; the committed mutations give %s at that revision (%s)",
					op.Kind, op.Revision, got, want, diff(got, want)), append(evidence(), inc.sequence()...)...)
			}
		}
	}
}

// checkRead: a GET deps answered revision r must show the committed dependency set of r in an
// incarnation that lived while the read ran.
func (c *checker) checkRead(op Op) {
	l := c.lineages[op.Env]
	if l == nil {
		return
	}
	got := depsFrom(op.Deps)
	var seen []string
	for _, inc := range l.incs {
		if !inc.overlaps(op.Start, op.End) {
			continue
		}
		want, ok := inc.states[op.Revision]
		if ok && got.equal(want) {
			return
		}
		if ok {
			seen = append(seen, fmt.Sprintf("committed revision %d of create %d: %s (%s)", op.Revision, inc.create.ID, want, diff(got, want)))
		} else {
			seen = append(seen, fmt.Sprintf("create %d committed no revision %d", inc.create.ID, op.Revision))
		}
	}
	if len(seen) == 0 {
		c.add(InvAcknowledged, op.Env, "GET deps answered while, by the audit, no environment existed", describeOp(op))
		return
	}
	c.add(InvAcknowledged, op.Env, fmt.Sprintf("GET deps answered revision %d with %s, which no committed revision %d has", op.Revision, got, op.Revision),
		append([]string{describeOp(op)}, seen...)...)
}

// checkRun: a successful run sees exactly the packages of the revision it answered. Runs are
// not excluded by changes (docs/builds.md): a run reads the environment's current revision and
// build once, under a lease only a delete excludes, and runs that build, which no change
// modifies; a change committing meanwhile is seen by the next run. So a run is a read,
// linearized at that moment: the revision it names must have been current at some point while
// it ran (see current), and what it saw must be that revision's packages. The harness's run code
// prints {name: version} of the installed distributions. The revision is looked up in the
// incarnation that lived while the run's audit row was open (a run's read comes after its row is
// written and before it is closed); if a delete and a create both fell inside, either will do.
func (c *checker) checkRun(op Op) {
	if op.ExitCode != 0 {
		return
	}
	var printed map[string]string
	if err := json.Unmarshal([]byte(strings.TrimSpace(op.Stdout)), &printed); err != nil {
		return
	}
	seen := map[string]string{}
	for n, v := range printed {
		if n = pyproject.Normalize(n); c.in.Universe[n] {
			seen[n] = v
		}
	}
	l := c.lineages[op.Env]
	if l == nil {
		return
	}
	if op.Revision == 0 {
		c.add(InvRunObserved, op.Env, "a successful run answered no revision", describeOp(op))
		return
	}
	from, to := op.Start, op.End
	for _, r := range c.rowsByRequest[op.RequestID] {
		if r.Status == AuditSucceeded {
			from, to = r.StartedAt, finished(r)
		}
	}
	var wants []map[string]string
	var ev []string
	for _, inc := range l.incs {
		if !inc.overlaps(from, to) {
			continue
		}
		state, ok := inc.states[op.Revision]
		if !ok {
			ev = append(ev, fmt.Sprintf("create %d committed revisions %v only", inc.create.ID, inc.revs))
			continue
		}
		want := state.pins()
		if maps.Equal(seen, want) {
			if why := inc.current(op.Revision, op.Start, op.End); why != "" {
				c.add(InvRunObserved, op.Env, fmt.Sprintf("a run answered revision %d, which was not current at any point while it ran: %s", op.Revision, why),
					append(append([]string{describeOp(op)}, inc.sequence()...), c.faultsDuring(op.Start, op.End)...)...)
			}
			return
		}
		wants = append(wants, want)
		ev = append(ev, fmt.Sprintf("revision %d of create %d: %v by %s", op.Revision, inc.create.ID, want, describeRow(inc.producer[op.Revision])))
	}
	parts := make([]string, len(wants))
	for i, w := range wants {
		parts[i] = fmt.Sprint(w)
	}
	want := strings.Join(parts, " or ")
	ev = append(ev, c.suspects(op, seen, wants)...)
	c.addBadRun(op.Env, op.Revision, fmt.Sprint(seen), want, describeOp(op), append(ev, c.faultsDuring(op.Start, op.End)...))
}

// suspects are the audit rows that never succeeded (failed, or still running) yet handed uv what
// a run saw and no current revision had — a pin it should not have seen, or the removal of a
// package it should have: the likely source of the wrong state.
func (c *checker) suspects(op Op, seen map[string]string, current []map[string]string) []string {
	unexpected, missing := map[string]bool{}, map[string]bool{}
	for n, v := range seen {
		found := false
		for _, cur := range current {
			found = found || cur[n] == v
		}
		if !found {
			unexpected[n+"=="+v] = true
		}
	}
	for _, cur := range current {
		for n := range cur {
			if _, ok := seen[n]; !ok {
				missing[n] = true
			}
		}
	}
	rows := slices.Clone(c.audit[op.Env])
	slices.SortFunc(rows, func(a, b AuditRow) int { return int(a.ID - b.ID) })
	var out []string
	for _, r := range rows {
		if (r.Status != AuditFailed && r.Status != AuditRunning) || r.StartedAt.After(op.End) {
			continue
		}
		for _, p := range r.appliedPackages() {
			n, spec := parseDep(p)
			if (r.Operation == KindRemove && missing[n]) || (r.Operation != KindRemove && unexpected[n+spec]) {
				out = append(out, "suspect: "+describeRow(r))
				break
			}
		}
	}
	return out
}

// checkFinal: the final GET deps equals the committed mutations applied from the last create, or
// the environment is gone if the audit's last word is a delete.
func (c *checker) checkFinal(e EnvFinal) {
	l := c.lineages[e.Env]
	var last *incarnation
	if len(l.incs) > 0 {
		last = l.incs[len(l.incs)-1]
	}
	if last == nil || last.end != nil {
		if e.DepsStatus != 404 {
			why := "no create of it succeeded"
			if last != nil {
				why = "its last succeeded operation is a delete"
			}
			c.add(InvAcknowledged, e.Env, fmt.Sprintf("by the audit %s, but GET deps answered %d %s at revision %d with %s", why, e.DepsStatus, e.DepsCode, e.Revision, depsFrom(e.Dependencies)))
		}
		return
	}
	if e.DepsStatus != 200 {
		c.add(InvAcknowledged, e.Env, fmt.Sprintf("by the audit the environment exists at revision %d, but GET deps answered %d %s", last.last(), e.DepsStatus, e.DepsCode),
			last.sequence()...)
		return
	}
	want, got := last.states[last.last()], depsFrom(e.Dependencies)
	if e.Revision != last.last() {
		c.add(InvAcknowledged, e.Env, fmt.Sprintf("GET deps is at revision %d; the committed mutations end at revision %d", e.Revision, last.last()), last.sequence()...)
	}
	if !got.equal(want) {
		c.add(InvAcknowledged, e.Env, fmt.Sprintf("final dependencies %s differ from the committed mutations applied from create: %s (%s)", got, want, diff(got, want)),
			last.sequence()...)
	}
	for n, v := range got.pins() {
		if e.Locked[n] != v {
			c.add(InvDisk, e.Env, fmt.Sprintf("the database's uv.lock locks %s at %q; pyproject.toml pins %s", n, e.Locked[n], v))
		}
	}
}

// checkDisk: the database's files are the files on the shared storage, and .venv holds what
// uv.lock locks.
func (c *checker) checkDisk(e EnvFinal) {
	if e.DepsStatus != 200 {
		if e.DepsStatus == 404 && e.DirExists {
			c.add(InvDisk, e.Env, "the environment does not exist, but its directory is still on the shared storage")
		}
		return
	}
	if e.ExportStatus == 200 {
		switch {
		case e.DiskPyproject == nil:
			c.add(InvDisk, e.Env, "pyproject.toml is missing on the shared storage")
		case *e.DiskPyproject != e.ExportPyproject:
			c.add(InvDisk, e.Env, fmt.Sprintf("pyproject.toml on disk differs from the database's revision %d: disk %s, database %s",
				e.Revision, pyprojectDeps(*e.DiskPyproject), pyprojectDeps(e.ExportPyproject)))
		}
		switch {
		case e.DiskLock == nil:
			c.add(InvDisk, e.Env, "uv.lock is missing on the shared storage")
		case *e.DiskLock != e.ExportLock:
			c.add(InvDisk, e.Env, fmt.Sprintf("uv.lock on disk differs from the database's revision %d: disk locks %v, database %v",
				e.Revision, c.lockedUniverse(*e.DiskLock), c.lockedUniverse(e.ExportLock)))
		}
		if want := c.lockedUniverse(e.ExportLock); !maps.Equal(e.Installed, want) {
			c.add(InvDisk, e.Env, fmt.Sprintf(".venv holds %v; the database's uv.lock (revision %d) locks %v", e.Installed, e.Revision, want))
		}
	} else {
		c.add(InvDisk, e.Env, fmt.Sprintf("GET export answered %d while GET deps answered 200", e.ExportStatus))
	}
	switch {
	case e.StatusCode != 200:
		c.add(InvDisk, e.Env, fmt.Sprintf("GET status answered %d", e.StatusCode))
	case e.DiskError != "":
		c.add(InvDisk, e.Env, "status could not inspect the disk: "+e.DiskError)
	default:
		if e.FilesMatch == nil || !*e.FilesMatch {
			c.add(InvDisk, e.Env, "status: files_match_revision is not true")
		}
		if e.VenvInSync == nil || !*e.VenvInSync {
			c.add(InvDisk, e.Env, "status: venv_in_sync is not true")
		}
	}
}

func (c *checker) lockedUniverse(lock string) map[string]string {
	out := map[string]string{}
	all, err := pyproject.LockedVersions(lock)
	if err != nil {
		return map[string]string{"<unreadable uv.lock>": err.Error()}
	}
	for n, v := range all {
		if n = pyproject.Normalize(n); c.in.Universe[n] {
			out[n] = v
		}
	}
	return out
}

func pyprojectDeps(content string) string {
	p, err := pyproject.Parse(content)
	if err != nil {
		return "<unreadable pyproject.toml: " + err.Error() + ">"
	}
	return depsFrom(p.Dependencies).String()
}

func (c *checker) checkLeases() {
	for _, l := range c.in.Leases {
		if l.ExpiresAt.After(c.in.Now) {
			c.add(InvLease, l.Env, fmt.Sprintf("lease %s held by %s for %s (operation %d) is live until %s, after the system went quiet",
				l.ID, l.Holder, l.Operation, l.OperationID, l.ExpiresAt.Format(time.RFC3339Nano)))
		}
	}
}

func (c *checker) checkOpenRows() {
	byRequest := map[string]Op{}
	for _, op := range c.in.History {
		byRequest[op.RequestID] = op
	}
	for _, r := range c.in.OpenRows {
		ev := []string{describeRow(r)}
		if op, ok := byRequest[r.RequestID]; ok {
			ev = append(ev, "its request: "+describeOp(op))
		}
		c.add(InvAuditOpen, r.Env, fmt.Sprintf("audit row %d (%s) is still running after the system went quiet", r.ID, r.Operation), ev...)
	}
}

func finished(r AuditRow) time.Time {
	if r.FinishedAt == nil {
		return r.StartedAt
	}
	return *r.FinishedAt
}

func transitional(state string) bool {
	switch state {
	case "CREATING", "INSTALLING", "SYNCING", "DELETING":
		return true
	}
	return false
}

// faultsDuring lists the faults under way at some point in [from, to].
func (c *checker) faultsDuring(from, to time.Time) []string {
	var out []string
	for _, f := range c.in.Faults {
		if !f.Start.After(to) && !f.End.Before(from) {
			out = append(out, fmt.Sprintf("fault under way: %s %s [%s → %s]", f.Kind, f.Target, clock(f.Start), clock(f.End)))
		}
	}
	return out
}

func describeOp(op Op) string {
	ans := fmt.Sprintf("%d %s", op.Status, op.Code)
	if op.Status == 0 {
		ans = "no answer: " + op.TransportErr
	} else if op.Status < 300 {
		ans = fmt.Sprintf("%d revision=%d operation=%d", op.Status, op.Revision, op.OperationID)
		if op.HasDeps {
			ans += " deps=" + depsFrom(op.Deps).String()
		}
	}
	body := op.Body
	if op.Status >= 300 && len(body) > 300 {
		body = body[:300] + "…"
	}
	s := fmt.Sprintf("history #%d client %d %s %s %v via %s [%s → %s] request %s → %s",
		op.Index, op.Client, op.Kind, op.Env, op.Packages, op.CP, clock(op.Start), clock(op.End), op.RequestID, ans)
	if op.Status >= 300 && body != "" {
		s += " body " + strings.Join(strings.Fields(body), " ")
	}
	return s
}

func describeRow(r AuditRow) string {
	rev := "-"
	if v, ok := r.revision(); ok {
		rev = fmt.Sprint(v)
	}
	fin := "…"
	if r.FinishedAt != nil {
		fin = clock(*r.FinishedAt)
	}
	s := fmt.Sprintf("audit %d %s %s%s revision=%s packages=%v [%s → %s] agent=%s request %s",
		r.ID, r.Operation, r.Status, codeSuffix(r.ErrorCode), rev, r.appliedPackages(), clock(r.StartedAt), fin, r.Agent, r.RequestID)
	if r.ErrorMessage != "" {
		msg := strings.Join(strings.Fields(r.ErrorMessage), " ")
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		s += ": " + msg
	}
	return s
}

func codeSuffix(code string) string {
	if code == "" {
		return ""
	}
	return " " + code
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	return t.Local().Format("15:04:05.000")
}
