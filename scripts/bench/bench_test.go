package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSummarize(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	tests := []struct {
		name        string
		in          []float64
		median, p99 float64
	}{
		{"one", []float64{7}, 7, 7},
		{"odd count, unsorted", []float64{5, 1, 3}, 3, 5},
		{"even count: mean of the middle two", []float64{4, 1, 3, 2}, 2.5, 4},
		{"p99 of 100 is the 99th", hundred, 50.5, 99},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarize(tt.in)
			if s.Median != tt.median || s.P99 != tt.p99 || s.N != len(tt.in) {
				t.Errorf("got median %v p99 %v n %d; want %v %v %d", s.Median, s.P99, s.N, tt.median, tt.p99, len(tt.in))
			}
		})
	}
	if s := summarize(nil); s.N != 0 {
		t.Errorf("empty: got %+v", s)
	}
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// A file hardlinked into two trees counts once, under whichever root is walked first.
func TestUsageCountsHardlinksOnce(t *testing.T) {
	root := t.TempDir()
	cache, env := filepath.Join(root, "cache"), filepath.Join(root, "env")
	for _, d := range []string{cache, env} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(cache, "lib.so")
	if err := os.WriteFile(file, make([]byte, 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(file, filepath.Join(env, "lib.so")); err != nil {
		t.Fatal(err)
	}
	seen := map[[2]uint64]bool{}
	c, err := usage(seen, cache)
	if err != nil {
		t.Fatal(err)
	}
	e, err := usage(seen, env)
	if err != nil {
		t.Fatal(err)
	}
	if want := blocks(t, cache) + blocks(t, file); c.Bytes != want {
		t.Errorf("cache: got %d bytes; want %d", c.Bytes, want)
	}
	if want := blocks(t, env); e.Bytes != want || e.Dirs != 1 || e.DirBytes != want {
		t.Errorf("env: got %+v; want only its directory, %d bytes", e, want)
	}
}

func TestScrubRemovesTheIndexAddress(t *testing.T) {
	cfg := config{Index: index{URL: "https://mirror.example.test/simple/", Source: "PIP_INDEX_URL"}}
	in := `uv failed: GET https://mirror.example.test/simple/numpy/ and mirror.example.test:443 refused`
	out := scrub(cfg, in)
	if strings.Contains(out, "mirror.example.test") {
		t.Errorf("got %q; the index host is still there", out)
	}
}
