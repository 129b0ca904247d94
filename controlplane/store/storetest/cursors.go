package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// testIdleEnvsAfter: pages of IdleEnvsAfter, each after the last one's end, give every idle
// environment once in (last use, key) order, however the batch size cuts them.
func testIdleEnvsAfter(t *testing.T, s store.Store) {
	var want []envid.Key
	for i := range 7 {
		k := envid.Key{WorkflowID: "wf", NodeID: fmt.Sprintf("n%d", i), VersionID: "v1"}
		// n0..n6 used at 3, 3, 2, 2, 1, 1, 0 seconds: ties are ordered by key.
		createEnv(t, s, k, at(time.Duration(3-i/2)*time.Second))
	}
	for _, n := range []string{"n6", "n4", "n5", "n2", "n3", "n0", "n1"} {
		want = append(want, envid.Key{WorkflowID: "wf", NodeID: n, VersionID: "v1"})
	}
	createEnv(t, s, envid.Key{WorkflowID: "wf", NodeID: "recent", VersionID: "v1"}, at(time.Hour))
	for _, batch := range []int{1, 2, 3, 7, 100} {
		t.Run(fmt.Sprint("batch ", batch), func(t *testing.T) {
			var got []envid.Key
			var after store.CleanupCursor
			for range 20 {
				page := must(s.IdleEnvsAfter(t.Context(), at(time.Minute), after, batch))(t)
				if len(page) > batch {
					t.Fatalf("a page of %d; want at most %d", len(page), batch)
				}
				if len(page) == 0 {
					break
				}
				for _, e := range page {
					got = append(got, e.Key)
				}
				last := page[len(page)-1]
				after = store.CleanupCursor{LastUsedAt: last.LastUsedAt, Key: last.Key}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("pages gave %v; want %v", got, want)
			}
		})
	}
}

// testCleanupCursor: a saved cursor is read back as saved, a later save replaces it, the zero
// cursor clears it, and the two passes' cursors are apart.
func testCleanupCursor(t *testing.T, s store.Store) {
	if c := must(s.CleanupCursor(t.Context(), store.CursorEnvs))(t); !c.IsZero() {
		t.Fatalf("a fresh store's cursor %+v; want none", c)
	}
	first := store.CleanupCursor{LastUsedAt: at(time.Second), Key: keyA}
	second := store.CleanupCursor{LastUsedAt: at(2 * time.Second), Key: keyB}
	builds := store.CleanupCursor{LastUsedAt: at(3 * time.Second), BuildID: "b1"}
	for _, step := range []struct {
		name         string
		pass         string
		save         store.CleanupCursor
		envs, builds store.CleanupCursor
	}{
		{"save", store.CursorEnvs, first, first, store.CleanupCursor{}},
		{"replace", store.CursorEnvs, second, second, store.CleanupCursor{}},
		{"the builds pass", store.CursorBuilds, builds, second, builds},
		{"clear", store.CursorEnvs, store.CleanupCursor{}, store.CleanupCursor{}, builds},
	} {
		if err := s.SaveCleanupCursor(t.Context(), step.pass, step.save, at(0)); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		e := must(s.CleanupCursor(t.Context(), store.CursorEnvs))(t)
		b := must(s.CleanupCursor(t.Context(), store.CursorBuilds))(t)
		if !e.LastUsedAt.Equal(step.envs.LastUsedAt) || e.Key != step.envs.Key || !b.LastUsedAt.Equal(step.builds.LastUsedAt) || b.BuildID != step.builds.BuildID {
			t.Errorf("after %s: envs %+v, builds %+v; want %+v, %+v", step.name, e, b, step.envs, step.builds)
		}
	}
}
