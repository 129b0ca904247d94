// Package logging builds the one structured logger both programs use, from LOG_LEVEL and
// LOG_FORMAT, so the agent's and the control plane's logs read (and parse) the same way.
package logging

import (
	"io"
	"log/slog"
	"strings"

	"github.com/envfabric/envfabric/shared/config"
)

// Config is how a program logs.
type Config struct {
	Level  slog.Level
	Format string // "text" or "json"
}

// FromEnv reads LOG_LEVEL (debug, info, warn, error; default info) and LOG_FORMAT (text or json;
// default text), reporting problems on r.
func FromEnv(r *config.Reader) Config {
	c := Config{Format: strings.ToLower(r.String("LOG_FORMAT", "text"))}
	if lvl := r.String("LOG_LEVEL", "info"); c.Level.UnmarshalText([]byte(lvl)) != nil {
		r.Fail("LOG_LEVEL=%q: want debug, info, warn or error", lvl)
	}
	if c.Format != "text" && c.Format != "json" {
		r.Fail("LOG_FORMAT=%q: want text or json", c.Format)
	}
	return c
}

// New is the logger that writes to w as c says; program names the program in every line (components below it add "component").
func New(w io.Writer, c Config, program string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("program", program)
}
