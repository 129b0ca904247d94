// Command envfabric is Environment Fabric's command-line client: one subcommand per endpoint of
// the REST API, through the typed client in package client.
//
// Exit statuses: 0 success; 1 the API answered an error (its code and message are on stderr) or a
// local file could not be written; 2 a usage error (unknown command or flag, missing arguments,
// an input file that cannot be read); 3 the control plane could not be reached or did not answer
// as the API does. `run` exits with the code's own exit status, 124 when the run passed its
// timeout, and 137 when a signal or the run's memory bound killed it.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// The exit statuses (the package comment says when).
const (
	exitOK          = 0
	exitAPI         = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitTimeout     = 124 // as timeout(1)
	exitKilled      = 137 // 128 + SIGKILL, what a shell reports for a killed process
)

// run is the whole program, with its environment passed in so tests can call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, stderrTTY: isTerminal(stderr)}
	inv, err := parse(args, getenv)
	if err != nil {
		return c.usageFailure(err)
	}
	if inv.help {
		c.printHelp(inv.cmd)
		return exitOK
	}
	return c.execute(ctx, inv)
}

// isTerminal reports whether w is a character device (a terminal), not a file or a pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
