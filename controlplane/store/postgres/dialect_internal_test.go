package postgres

import "testing"

// TestLockKey pins the advisory-lock keys: control planes of two versions sharing a database during
// a rolling upgrade must take the same locks.
func TestLockKey(t *testing.T) {
	tests := []struct {
		parts []string
		want  int64
	}{
		{[]string{"migrate"}, -833098002494294020},
		{[]string{"env", "wf1", "node1", "v1"}, -6099995675586615478},
		// The separator keeps ids that join to the same string apart.
		{[]string{"env", "a_b", "c", "v1"}, 4140079338455324950},
		{[]string{"env", "a", "b_c", "v1"}, 6947742490896870074},
	}
	for _, tt := range tests {
		if got := lockKey(tt.parts...); got != tt.want {
			t.Errorf("lockKey(%q) = %d; want %d", tt.parts, got, tt.want)
		}
	}
}
