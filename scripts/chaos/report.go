package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/envfabric/envfabric/scripts/chaos/check"
)

// summary is the report's figures.
type summary struct {
	Seed          uint64                    `json:"seed"`
	Seconds       float64                   `json:"seconds"`
	Clients       int                       `json:"clients"`
	Envs          int                       `json:"envs"`
	LeaseTTL      string                    `json:"lease_ttl"`
	WallSeconds   float64                   `json:"wall_seconds"`
	Operations    int                       `json:"operations"`
	OpsByKind     map[string]map[string]int `json:"ops_by_kind_and_outcome"` // kind → ok/fail/unknown → n
	Answers       map[string]int            `json:"answers"`                 // "423 ENV_LOCKED" → n
	Faults        int                       `json:"faults"`
	FaultsByKind  map[string]int            `json:"faults_by_kind"`
	FaultErrors   []string                  `json:"fault_errors,omitempty"`
	Quiet         bool                      `json:"quiet"`
	StillMoving   string                    `json:"still_moving,omitempty"`
	Violations    int                       `json:"violations"`
	ByInvariant   map[string]int            `json:"violations_by_invariant"`
	ViolationList []check.Violation         `json:"violation_list"`
}

func (r *result) summary() summary {
	s := summary{Seed: r.Config.Seed, Seconds: r.Config.Seconds.Seconds(), Clients: r.Config.Clients, Envs: r.Config.Envs,
		LeaseTTL: r.Config.LeaseTTL.String(), WallSeconds: r.Took.Seconds(), Operations: len(r.History),
		OpsByKind: map[string]map[string]int{}, Answers: map[string]int{}, Faults: len(r.Faults),
		FaultsByKind: countByKind(r.Faults), Quiet: r.WasQuiet, Violations: len(r.Violations),
		ByInvariant: map[string]int{}, ViolationList: r.Violations}
	for _, op := range r.History {
		if s.OpsByKind[op.Kind] == nil {
			s.OpsByKind[op.Kind] = map[string]int{}
		}
		s.OpsByKind[op.Kind][string(op.Outcome())]++
		ans := fmt.Sprint(op.Status)
		switch {
		case op.Status == 0:
			ans = "no answer"
		case op.Code != "":
			ans += " " + op.Code
		}
		s.Answers[ans]++
	}
	for _, f := range r.Faults {
		if f.Err != "" {
			s.FaultErrors = append(s.FaultErrors, f.String())
		}
	}
	if !r.WasQuiet {
		s.StillMoving = r.Quiet.String()
	}
	for _, v := range r.Violations {
		s.ByInvariant[v.Invariant]++
	}
	if s.ViolationList == nil {
		s.ViolationList = []check.Violation{}
	}
	return s
}

// write puts the history (one JSON object a line), the faults, the observations and the report
// (JSON and text) in dir.
func (r *result) write(dir string) error {
	if err := writeLines(filepath.Join(dir, "history.jsonl"), r.History); err != nil {
		return err
	}
	if err := writeLines(filepath.Join(dir, "faults.jsonl"), r.Faults); err != nil {
		return err
	}
	obs := struct {
		Now      time.Time        `json:"db_now"`
		Envs     []check.EnvFinal `json:"envs"`
		Leases   []check.Lease    `json:"leases"`
		OpenRows []check.AuditRow `json:"open_audit_rows"`
		Heal     []string         `json:"heal_errors"`
		Quiet    quietState       `json:"quiet_state"`
	}{r.Observed.Now, r.Observed.Envs, r.Observed.Leases, r.Observed.OpenRows, r.Observed.HealErrors, r.Quiet}
	if err := writeJSON(filepath.Join(dir, "observations.json"), obs); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "report.json"), r.summary()); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.txt"))
	if err != nil {
		return err
	}
	defer f.Close()
	r.text(f, -1)
	return f.Close()
}

func writeLines[T any](path string, items []T) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// text writes the human report: figures, then each violation with at most maxEvidence lines of
// evidence (-1: all).
func (r *result) text(w io.Writer, maxEvidence int) {
	s := r.summary()
	fmt.Fprintf(w, "seed %d, %ds of workload, %d clients on %d environments, lease TTL %s, %.0fs wall\n",
		s.Seed, int(s.Seconds), s.Clients, s.Envs, s.LeaseTTL, s.WallSeconds)
	fmt.Fprintf(w, "\noperations by kind (ok / fail / unknown):\n")
	for _, k := range slices.Sorted(maps.Keys(s.OpsByKind)) {
		m := s.OpsByKind[k]
		fmt.Fprintf(w, "  %-8s %4d / %4d / %4d\n", k, m["ok"], m["fail"], m["unknown"])
	}
	fmt.Fprintf(w, "answers:\n")
	for _, a := range slices.Sorted(maps.Keys(s.Answers)) {
		fmt.Fprintf(w, "  %-32s %4d\n", a, s.Answers[a])
	}
	fmt.Fprintf(w, "faults by kind:\n")
	for _, k := range faultKinds {
		fmt.Fprintf(w, "  %-20s %3d\n", k, s.FaultsByKind[k])
	}
	for _, e := range s.FaultErrors {
		fmt.Fprintf(w, "  fault error: %s\n", e)
	}
	if !s.Quiet {
		fmt.Fprintf(w, "not quiet after the bounded wait: %s\n", s.StillMoving)
	}
	if len(r.Violations) > 0 {
		fmt.Fprintf(w, "\nviolations by invariant:\n")
		for _, k := range slices.Sorted(maps.Keys(s.ByInvariant)) {
			fmt.Fprintf(w, "  %-14s %3d\n", k, s.ByInvariant[k])
		}
		fmt.Fprintln(w)
	}
	for i, v := range r.Violations {
		env := ""
		if v.Env != "" {
			env = " " + v.Env
		}
		fmt.Fprintf(w, "VIOLATION %d [%s]%s: %s\n", i+1, v.Invariant, env, v.Message)
		for j, e := range v.Evidence {
			if maxEvidence >= 0 && j >= maxEvidence {
				fmt.Fprintf(w, "    … %d more in report.txt\n", len(v.Evidence)-j)
				break
			}
			fmt.Fprintf(w, "    %s\n", e)
		}
	}
}

// print is what a run shows on stdout; its last line is the verdict.
func (r *result) print(w io.Writer, cfg config) {
	r.text(w, 8)
	fmt.Fprintf(w, "\nhistory, report and logs: %s\n", cfg.Out)
	fmt.Fprintln(w, r.verdict())
}

func (r *result) verdict() string {
	return fmt.Sprintf("chaos: %d operations, %d faults, %d invariant violations", len(r.History), len(r.Faults), len(r.Violations))
}
