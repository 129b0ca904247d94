// Package httpserver builds the HTTP servers of both programs so that idle and slow clients cannot
// exhaust them: header, read, write and idle timeouts, a bound on header size, and a cap on
// concurrent connections under which the probes stay answerable.
package httpserver

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits bound what one client can hold of a server. A zero field means no bound (Go's own
// meaning); the programs' config packages fill every field.
type Limits struct {
	// ReadHeaderTimeout bounds the TLS handshake and a request's headers: slow-header clients are
	// cut after it.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. It is lifted once the body has
	// been read, so a long handler is never cut by it (see deadlines).
	ReadTimeout time.Duration
	// WriteTimeout bounds answering a GET or HEAD: reads are quick, and a client that does not
	// read its answer must not hold the handler.
	WriteTimeout time.Duration
	// WorkTimeout bounds answering any other request, which does work (a run, a uv operation):
	// it must exceed the longest such work, or its answer is cut.
	WorkTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
	// MaxConns caps the connections held at once; 0 is no cap.
	MaxConns int
	// ProbeConns is the reserve beyond MaxConns for the probes, used only when every connection
	// under the cap is busy with a request.
	ProbeConns int
}

// Config is one server.
type Config struct {
	Limits Limits
	// Probes are the paths served on reserve connections (/healthz, /readyz); everything else is
	// answered 503 there.
	Probes []string
	// TLS, when set, makes the server speak only TLS with this configuration.
	TLS       *tls.Config
	Protocols *http.Protocols
	// BaseContext is the parent of every request's context.
	BaseContext context.Context
	Logger      *slog.Logger
	// Registerer, when set, receives the connection metrics, named MetricPrefix + "http_connections…".
	Registerer   prometheus.Registerer
	MetricPrefix string
}

// Server is a running http.Server behind the connection cap.
type Server struct {
	srv   *http.Server
	conns *tracker
	tls   bool
}

// New builds the server; Serve starts it.
func New(cfg Config, h http.Handler) *Server {
	lim := cfg.Limits
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{conns: newTracker(lim.MaxConns, lim.ProbeConns, cfg.MetricPrefix), tls: cfg.TLS != nil}
	s.srv = &http.Server{
		Handler:           s.conns.guard(cfg.Probes, deadlines(lim, h)),
		Protocols:         cfg.Protocols,
		TLSConfig:         cfg.TLS,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ConnState:         s.conns.state,
		ConnContext:       s.conns.connContext,
		ErrorLog:          slog.NewLogLogger(&errorLog{logger}, slog.LevelWarn),
	}
	if cfg.BaseContext != nil {
		s.srv.BaseContext = func(net.Listener) context.Context { return cfg.BaseContext }
	}
	if cfg.Registerer != nil {
		s.conns.register(cfg.Registerer)
	}
	return s
}

// Serve accepts on ln until Shutdown; it always returns a non-nil error (http.ErrServerClosed
// after Shutdown).
func (s *Server) Serve(ln net.Listener) error {
	l := &listener{Listener: ln, t: s.conns}
	if s.tls {
		// The certificates come from TLSConfig (GetConfigForClient / GetCertificate).
		return s.srv.ServeTLS(l, "", "")
	}
	return s.srv.Serve(l)
}

// Shutdown stops accepting, closes idle connections and waits for requests in flight, until ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// deadlines sets each request's deadlines. Writing is bounded by WriteTimeout for reads and by
// WorkTimeout for requests that do work. The read deadline the server set for the request
// (ReadTimeout) is lifted once the body has been read (at once when there is none): on HTTP/1 a
// read deadline that passes while the handler runs cancels the request's context, which would
// kill a ten-minute run or a half-hour uv operation.
func deadlines(lim Limits, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		d := lim.WorkTimeout
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			d = lim.WriteTimeout
		}
		if d > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(d))
		}
		if lim.ReadTimeout > 0 {
			if r.Body == nil || r.Body == http.NoBody {
				_ = rc.SetReadDeadline(time.Time{})
			} else {
				r.Body = &liftAtEOF{ReadCloser: r.Body, rc: rc}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// liftAtEOF clears the connection's read deadline once the body is read whole.
type liftAtEOF struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *liftAtEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// errorLog sends the server's own messages to the logger: TLS handshake failures at debug (a
// scan or a flood would otherwise fill the log), everything else (a handler's panic) as a warning.
type errorLog struct{ log *slog.Logger }

func (e *errorLog) Enabled(ctx context.Context, l slog.Level) bool { return true }

func (e *errorLog) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "TLS handshake error") {
		r.Level = slog.LevelDebug
	}
	if !e.log.Handler().Enabled(ctx, r.Level) {
		return nil
	}
	return e.log.Handler().Handle(ctx, r)
}

func (e *errorLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &errorLog{slog.New(e.log.Handler().WithAttrs(as))}
}

func (e *errorLog) WithGroup(name string) slog.Handler {
	return &errorLog{slog.New(e.log.Handler().WithGroup(name))}
}

// isProbe reports whether path is one of probes.
func isProbe(probes []string, path string) bool { return slices.Contains(probes, path) }
