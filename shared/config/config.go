// Package config reads typed settings from the environment for both binaries. It only parses:
// each binary's own config package holds its defaults, normalisation and validation, and turns
// the result into the structs its components take, so inner packages never read the environment.
package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Source looks a variable up; os.LookupEnv in production, a map in tests.
type Source func(name string) (string, bool)

// Env is the process environment.
func Env() Source { return os.LookupEnv }

// Map is a Source over a map, for tests.
func Map(m map[string]string) Source {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// Reader collects every problem instead of stopping at the first, so a misconfigured service says
// everything that is wrong in one start-up.
type Reader struct {
	src  Source
	errs []error
}

// NewReader reads from src.
func NewReader(src Source) *Reader { return &Reader{src: src} }

// Errs returns the problems found so far.
func (r *Reader) Errs() []error { return r.errs }

// Fail records a problem found by the caller's own validation.
func (r *Reader) Fail(format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf(format, args...))
}

// String returns the trimmed value of name, or def when unset or blank.
func (r *Reader) String(name, def string) string {
	v, ok := r.src(name)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	return strings.TrimSpace(v)
}

// Int parses name as an integer.
func (r *Reader) Int(name string, def int) int {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.Fail("%s=%q: not an integer", name, v)
		return def
	}
	return n
}

// Float parses name as a number.
func (r *Reader) Float(name string, def float64) float64 {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		r.Fail("%s=%q: not a number", name, v)
		return def
	}
	return f
}

// Bool parses name as a boolean (1/0, true/false, yes/no).
func (r *Reader) Bool(name string, def bool) bool {
	v := strings.ToLower(r.String(name, ""))
	switch v {
	case "":
		return def
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	r.Fail("%s=%q: not a boolean", name, v)
	return def
}

// Duration parses name as a Go duration ("90s", "5m").
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.Fail("%s=%q: not a duration (like 30s or 5m)", name, v)
		return def
	}
	return d
}

// Seconds parses name as a whole or fractional number of seconds, the TRD's unit for timeouts.
func (r *Reader) Seconds(name string, def time.Duration) time.Duration {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		r.Fail("%s=%q: want a positive number of seconds", name, v)
		return def
	}
	return time.Duration(f * float64(time.Second))
}

// IsLoopback reports whether host (a name or an address, without a port) is this machine only:
// "localhost" or a loopback IP. Both binaries use it to decide when a secret is required.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
