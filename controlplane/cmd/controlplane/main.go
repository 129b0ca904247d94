// Command controlplane serves Environment Fabric's REST API: it records every operation in the
// audit database, leases environments, and delegates uv and code execution to an agent.
//
//	controlplane              serve (configuration from the environment)
//	controlplane migrate ...  copy a single host's SQLite database into PostgreSQL (migrate -h)
package main

import (
	"context"
	"fmt"
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
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		code := migrate(ctx, os.Args[2:], os.Stdout, os.Stderr)
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
