// Command controlplane serves Environment Fabric's REST API: it records every operation in the
// audit database, leases environments, and delegates uv and code execution to an agent.
//
//	controlplane              serve (configuration from the environment)
//	controlplane migrate ...  copy a single host's SQLite database into PostgreSQL (migrate -h)
//	controlplane backup ...   back up a single host's SQLite database while it serves (backup -h)
//	controlplane restore ...  put such a backup in place, the control plane stopped (restore -h)
//	controlplane advance-ids  move the id sequences of a restored database forward (advance-ids -h)
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/envfabric/envfabric/controlplane/app"
	"github.com/envfabric/envfabric/controlplane/config"
	sharedconfig "github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 {
		sub := map[string]func(context.Context, []string, io.Writer, io.Writer) int{
			"migrate": migrate, "backup": backup, "restore": restore, "advance-ids": advanceIDs,
		}[os.Args[1]]
		if sub == nil {
			fmt.Fprintf(os.Stderr, "controlplane: unknown command %q (commands: migrate, backup, restore, advance-ids; none: serve)\n", os.Args[1])
			os.Exit(2)
		}
		code := sub(ctx, os.Args[2:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	cfg, err := config.Load(sharedconfig.Env())
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: configuration:\n%v\n", err)
		os.Exit(2)
	}
	log := logging.New(os.Stderr, cfg.Log, "controlplane")
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("controlplane stopped", "err", err)
		os.Exit(1)
	}
}
