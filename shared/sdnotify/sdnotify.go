// Package sdnotify tells systemd about a service's state (sd_notify(3)) for units with
// Type=notify: READY=1 once the service serves, STOPPING=1 when it begins to stop. Outside systemd
// (no NOTIFY_SOCKET) every call does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Ready says the service is serving.
func Ready() error { return send("READY=1") }

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
