package flock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locks", "x.lock")
	a, err := Try(path, Shared)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Try(path, Shared)
	if err != nil {
		t.Fatalf("a second shared lock: %v", err)
	}
	if _, err := Try(path, Exclusive); !errors.Is(err, ErrBusy) {
		t.Fatalf("exclusive while shared are held: %v; want ErrBusy", err)
	}
	a.Release()
	b.Release()
	x, err := Try(path, Exclusive)
	if err != nil {
		t.Fatalf("exclusive once the shared ones are gone: %v", err)
	}
	if _, err := Try(path, Shared); !errors.Is(err, ErrBusy) {
		t.Fatalf("shared while exclusive is held: %v; want ErrBusy", err)
	}
	// Wait gives up with its context.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := Wait(ctx, path, Shared); !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on a held lock: %v; want ErrBusy and the deadline", err)
	}
	// A holder that removes the file lets a waiter lock the path's new file.
	got := make(chan error, 1)
	go func() {
		l, err := Wait(t.Context(), path, Exclusive)
		if err == nil {
			l.Release()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the waiter open the old file
	x.ReleaseRemoving()
	if err := <-got; err != nil {
		t.Fatalf("waiter after the file was removed: %v", err)
	}
}
