// Package sdnotify tells systemd about a service's state (sd_notify(3)) for units with
// Type=notify: READY=1 once the service serves, STOPPING=1 when it begins to stop. Outside systemd
// (no NOTIFY_SOCKET) every call does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Variables a service adds to READY=1 (sd_notify(3) asks that extra variables start with X_).
// They say where the service bound, which matters when it was told to take any free port
// (port 0): a supervisor — or a test starting the programs — learns the address from the
// readiness message instead of guessing a free port beforehand and racing for it.
const (
	AddrVar       = "X_ENVFABRIC_ADDR"        // host:port of the HTTP listener
	GossipAddrVar = "X_ENVFABRIC_GOSSIP_ADDR" // host:port of the gossip member, when gossiping
)

// Ready says the service is serving; vars ("NAME=value") ride along in the same message.
func Ready(vars ...string) error {
	return send(strings.Join(append([]string{"READY=1"}, vars...), "\n"))
}

// Stopping says the service is shutting down.
func Stopping() error { return send("STOPPING=1") }

// Status sets the free-form status line systemctl shows.
func Status(s string) error { return send("STATUS=" + s) }

func send(state string) error {
	socket := os.Getenv("NOTIFY_SOCKET")
	if socket == "" {
		return nil
	}
	if socket[0] == '@' {
		socket = "\x00" + socket[1:] // abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}

// Listener is the supervisor's side of the protocol: the NOTIFY_SOCKET a program it starts
// reports to. systemd is one such supervisor; the end-to-end tests and the chaos harness are
// others, learning from READY=1 which addresses a program bound.
type Listener struct {
	conn *net.UnixConn
	path string
}

// Listen makes the socket at path (at most 107 bytes, the limit of a socket path), replacing a
// stale one.
func Listen(path string) (*Listener, error) {
	if len(path) >= 108 {
		return nil, fmt.Errorf("sd_notify socket %s: longer than a socket path may be (107 bytes)", path)
	}
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("sd_notify socket: %w", err)
	}
	return &Listener{conn: conn, path: path}, nil
}

// Path is what the program's NOTIFY_SOCKET must say.
func (l *Listener) Path() string { return l.path }

// Ready blocks until a READY=1 message arrives and returns its variables ("READY" among them),
// or until the listener is closed.
func (l *Listener) Ready() (map[string]string, error) {
	buf := make([]byte, 4096)
	for {
		n, err := l.conn.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("waiting for READY=1: %w", err)
		}
		if vars := Parse(buf[:n]); vars["READY"] == "1" {
			return vars, nil
		}
	}
}

// Close removes the socket; a Ready waiting on it returns.
func (l *Listener) Close() error {
	err := l.conn.Close()
	_ = os.Remove(l.path)
	return err
}

// Parse reads one sd_notify message: newline-separated NAME=value assignments.
func Parse(msg []byte) map[string]string {
	vars := map[string]string{}
	for _, line := range strings.Split(string(msg), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	return vars
}
