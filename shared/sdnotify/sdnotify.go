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
