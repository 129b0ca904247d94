package sdnotify

import (
	"net"
	"path/filepath"
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
