// Command agent runs uv and user code for Environment Fabric on one execution host.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/envfabric/envfabric/agent/app"
	"github.com/envfabric/envfabric/agent/config"

	// The run sandbox re-executes this binary as its init and exec stages; the package's init
	// function takes those over before main runs (and before any configuration is read).
	_ "github.com/envfabric/envfabric/agent/sandbox"
	sharedconfig "github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(sharedconfig.Env())
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent: configuration:\n%v\n", err)
		os.Exit(1)
	}
	log := logging.New(os.Stderr, cfg.Log, "agent")
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("agent stopped", "err", err)
		os.Exit(1)
	}
}
