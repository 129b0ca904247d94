package httpserver

import (
	"github.com/envfabric/envfabric/shared/config"
)

// FromEnv reads the HTTP_* settings both programs share, starting from def (each program's
// config package holds its own defaults), and reports problems on r.
func FromEnv(r *config.Reader, def Limits) Limits {
	l := Limits{
		ReadHeaderTimeout: r.Duration("HTTP_READ_HEADER_TIMEOUT", def.ReadHeaderTimeout),
		ReadTimeout:       r.Duration("HTTP_READ_TIMEOUT", def.ReadTimeout),
		WriteTimeout:      r.Duration("HTTP_WRITE_TIMEOUT", def.WriteTimeout),
		WorkTimeout:       r.Duration("HTTP_WORK_TIMEOUT", def.WorkTimeout),
		IdleTimeout:       r.Duration("HTTP_IDLE_TIMEOUT", def.IdleTimeout),
		MaxHeaderBytes:    r.Int("HTTP_MAX_HEADER_BYTES", def.MaxHeaderBytes),
		MaxConns:          r.Int("HTTP_MAX_CONNS", def.MaxConns),
		ProbeConns:        r.Int("HTTP_PROBE_CONNS", def.ProbeConns),
	}
	positive := func(name string, ok bool) {
		if !ok {
			r.Fail("%s must be positive", name)
		}
	}
	positive("HTTP_READ_HEADER_TIMEOUT", l.ReadHeaderTimeout > 0)
	positive("HTTP_READ_TIMEOUT", l.ReadTimeout > 0)
	positive("HTTP_WRITE_TIMEOUT", l.WriteTimeout > 0)
	positive("HTTP_WORK_TIMEOUT", l.WorkTimeout > 0)
	positive("HTTP_IDLE_TIMEOUT", l.IdleTimeout > 0)
	positive("HTTP_MAX_CONNS", l.MaxConns > 0)
	positive("HTTP_PROBE_CONNS", l.ProbeConns > 0)
	if l.ReadHeaderTimeout > l.ReadTimeout {
		r.Fail("HTTP_READ_HEADER_TIMEOUT (%s) exceeds HTTP_READ_TIMEOUT (%s)", l.ReadHeaderTimeout, l.ReadTimeout)
	}
	if l.WorkTimeout < l.WriteTimeout {
		r.Fail("HTTP_WORK_TIMEOUT (%s) is shorter than HTTP_WRITE_TIMEOUT (%s)", l.WorkTimeout, l.WriteTimeout)
	}
	if l.MaxHeaderBytes < 4096 {
		r.Fail("HTTP_MAX_HEADER_BYTES=%d: at least 4096", l.MaxHeaderBytes)
	}
	return l
}
