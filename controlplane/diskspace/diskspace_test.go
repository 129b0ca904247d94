package diskspace

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestBallast(t *testing.T) {
	b := &Ballast{Path: filepath.Join(t.TempDir(), "controlplane", "reserve"), Size: 3<<20 + 5}
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(b.Path)
	if err != nil || fi.Size() != b.Size || b.Released() {
		t.Fatalf("after Ensure: %v, %v, released %v; want a file of %d bytes", fi, err, b.Released(), b.Size)
	}
	if !b.Release() {
		t.Error("first Release freed nothing")
	}
	if b.Release() {
		t.Error("second Release freed something")
	}
	if _, err := os.Stat(b.Path); !errors.Is(err, os.ErrNotExist) || !b.Released() {
		t.Errorf("after Release: %v, released %v; want the file gone", err, b.Released())
	}
	// A ballast left by a previous run is kept as it is.
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	again := &Ballast{Path: b.Path, Size: b.Size}
	if err := again.Ensure(); err != nil || again.Released() {
		t.Errorf("Ensure over an existing ballast: %v, released %v", err, again.Released())
	}
}

func TestGuard(t *testing.T) {
	const floor, size = 100 << 20, 10 << 20
	b := &Ballast{Path: filepath.Join(t.TempDir(), "reserve"), Size: size}
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	var free uint64
	g := &Guard{Root: "/data", Min: floor, Ballast: b, free: func(string) (uint64, error) { return free, nil }}
	// One disk filling up and draining again, checked at each step.
	steps := []struct {
		name         string
		free         uint64
		wantLow      bool
		wantReleased bool
	}{
		{"plenty", 1 << 30, false, false},
		{"at the floor", floor, false, false},
		{"below the floor: released", floor - 1, true, true},
		{"full", 0, true, true},
		{"back above the floor, not by the reserve's size", floor + size - 1, false, true},
		{"above the floor by the reserve's size: restored", floor + size, false, false},
	}
	for _, st := range steps {
		free = st.free
		err := g.Check(t.Context())
		var low *LowSpaceError
		if errors.As(err, &low) != st.wantLow || (err != nil && !st.wantLow) {
			t.Errorf("%s: Check = %v; want low space %v", st.name, err, st.wantLow)
		}
		if low != nil && (low.Free != st.free || low.Min != floor || !low.ReserveOut) {
			t.Errorf("%s: %+v", st.name, low)
		}
		_, statErr := os.Stat(b.Path)
		if b.Released() != st.wantReleased || errors.Is(statErr, os.ErrNotExist) != st.wantReleased {
			t.Errorf("%s: released %v (stat: %v); want %v", st.name, b.Released(), statErr, st.wantReleased)
		}
	}
}

func TestFree(t *testing.T) {
	if n, err := Free(t.TempDir()); err != nil || n == 0 {
		t.Errorf("Free = %d, %v; want some space", n, err)
	}
	if _, err := Free(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Free of a missing path succeeded")
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {64 << 20, "64.0 MiB"}, {3 << 29, "1.5 GiB"},
	}
	for _, tt := range tests {
		if got := human(tt.n); got != tt.want {
			t.Errorf("human(%d) = %q; want %q", tt.n, got, tt.want)
		}
	}
}
