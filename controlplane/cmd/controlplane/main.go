// Command controlplane serves Environment Fabric's REST API: it records every operation in the
// audit database, leases environments, and delegates uv and code execution to an agent.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/envfabric/envfabric/controlplane/app"
	"github.com/envfabric/envfabric/controlplane/config"
	sharedconfig "github.com/envfabric/envfabric/shared/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(sharedconfig.Env())
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: configuration:\n%v\n", err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(os.Stderr, opts)
	}
	log := slog.New(handler).With("component", "controlplane")
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("controlplane stopped", "err", err)
		os.Exit(1)
	}
}
