package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	for _, tt := range []struct {
		send func() error
		want string
	}{
		{func() error { return Ready() }, "READY=1"},
		{func() error { return Ready(AddrVar + "=127.0.0.1:4567") }, "READY=1\nX_ENVFABRIC_ADDR=127.0.0.1:4567"},
		{Stopping, "STOPPING=1"},
		{func() error { return Status("serving") }, "STATUS=serving"},
	} {
		if err := tt.send(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != tt.want {
			t.Errorf("got %q; want %q", got, tt.want)
		}
	}
}

func TestNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Ready(); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v; want nil", err)
	}
}

// A supervisor learns from READY=1 what the program bound; other messages before it are skipped.
func TestListenerReady(t *testing.T) {
	l, err := Listen(filepath.Join(t.TempDir(), "n"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", l.Path())
	if err := Status("starting"); err != nil {
		t.Fatal(err)
	}
	if err := Ready(AddrVar+"=127.0.0.1:4567", GossipAddrVar+"=127.0.0.1:7946"); err != nil {
		t.Fatal(err)
	}
	vars, err := l.Ready()
	if err != nil {
		t.Fatal(err)
	}
	if vars[AddrVar] != "127.0.0.1:4567" || vars[GossipAddrVar] != "127.0.0.1:7946" || vars["STATUS"] != "" {
		t.Errorf("got %v; want READY=1 with both addresses, not the status message before it", vars)
	}
	l.Close()
	if _, err := l.Ready(); err == nil {
		t.Error("Ready on a closed listener: no error")
	}
}

func TestListenRefusesLongPaths(t *testing.T) {
	if _, err := Listen("/tmp/" + strings.Repeat("x", 120)); err == nil {
		t.Error("a 125-byte socket path was accepted")
	}
}
