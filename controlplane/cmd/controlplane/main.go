// Command controlplane serves Environment Fabric's REST API: it records every operation in the
// audit database, leases environments, and delegates uv and code execution to an agent.
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
