// Command agent runs uv and user code for Environment Fabric on one execution host.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/envfabric/envfabric/agent/app"
	"github.com/envfabric/envfabric/agent/config"
	sharedconfig "github.com/envfabric/envfabric/shared/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(sharedconfig.Env())
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent: configuration:\n%v\n", err)
		os.Exit(1)
	}
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var handler slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if cfg.LogFormat == "text" {
		handler = slog.NewTextHandler(os.Stderr, opts)
	}
	if err := app.Run(ctx, cfg, slog.New(handler)); err != nil {
		fmt.Fprintf(os.Stderr, "agent: %v\n", err)
		os.Exit(1)
	}
}
