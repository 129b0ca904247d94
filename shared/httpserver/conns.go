package httpserver

import (
	"container/list"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// The connection cap, and why it is built this way.
//
// A listener that stops accepting at the cap (x/net/netutil.LimitListener) lets a flood of idle
// connections lock everyone out, probes included: new connections wait in the kernel's backlog
// until an idle one times out, and are then again outnumbered by the flood. So this listener
// always accepts, and at the cap makes room by closing a connection that is doing nothing:
//
//   - first the one that has waited longest without completing a request (StateNew: idle floods
//     and slow-header clients, which ReadHeaderTimeout would cut anyway),
//   - then the keep-alive connection idle the longest (StateIdle: its client reconnects, and Go's
//     transport retries a request that found its idle connection closed).
//
// A connection with a request in flight (StateActive, a run or a uv operation) is never closed.
// When every connection under the cap is active, up to ProbeConns more are admitted as a reserve
// that answers only the probes, and closes after each answer, so /healthz and /readyz stay
// answerable however the cap is used. Past the reserve, a new connection is closed at once.
//
// The newest connection is the last one a flood can push out: to evict a probe's connection
// before its request arrives, a client would have to open MaxConns connections in the time the
// probe takes to send a few hundred bytes.

// tracker counts the connections and knows which are doing nothing.
type tracker struct {
	mu    sync.Mutex
	pools [2]pool // by class

	open                      prometheus.GaugeFunc
	evicted, refused, probing prometheus.Counter
}

// class is what a connection was admitted as.
type class int

const (
	normal  class = iota // under MaxConns
	reserve              // beyond it, for the probes only
)

// pool is one class of connections.
type pool struct {
	n, max int
	fresh  list.List // *conn in StateNew, oldest first
	idle   list.List // *conn in StateIdle, idle longest first
}

// victim is the connection of the pool to close to make room, or nil when all are busy.
func (p *pool) victim() *conn {
	for _, l := range []*list.List{&p.fresh, &p.idle} {
		if l.Len() > 0 {
			return l.Front().Value.(*conn)
		}
	}
	return nil
}

func newTracker(max, probes int, prefix string) *tracker {
	t := &tracker{
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "http_connections_evicted_total",
			Help: "Connections closed to make room at the cap (never one with a request in flight)."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "http_connections_refused_total",
			Help: "Connections closed at once: the cap and the probe reserve were full of requests in flight."}),
		probing: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "http_connections_reserve_total",
			Help: "Connections admitted to the probe reserve: every connection under the cap was busy."}),
	}
	t.pools[normal].max, t.pools[reserve].max = max, probes
	t.open = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "http_connections", Help: "Connections open now."},
		func() float64 { return float64(t.count()) })
	return t
}

func (t *tracker) register(reg prometheus.Registerer) {
	reg.MustRegister(t.evicted, t.refused, t.probing, t.open)
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pools[normal].n + t.pools[reserve].n
}

// reserved counts the connections of the probe reserve.
func (t *tracker) reserved() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pools[reserve].n
}

// conn is an accepted connection under the tracker's eye.
type conn struct {
	net.Conn
	t     *tracker
	class class

	// Guarded by t.mu.
	elem   *list.Element // in its pool's fresh or idle list while doing nothing
	in     *list.List
	closed bool
}

// Close closes the connection once, whoever asks first (the server, or the tracker evicting it).
func (c *conn) Close() error {
	t := c.t
	t.mu.Lock()
	if c.closed {
		t.mu.Unlock()
		return nil
	}
	c.closed = true
	t.unlist(c)
	t.pools[c.class].n--
	t.mu.Unlock()
	return c.Conn.Close()
}

func (t *tracker) unlist(c *conn) {
	if c.elem != nil {
		c.in.Remove(c.elem)
		c.elem, c.in = nil, nil
	}
}

func (t *tracker) list(c *conn, l *list.List) {
	t.unlist(c)
	c.elem, c.in = l.PushBack(c), l
}

// admit decides about a new connection: it returns the tracked connection (nil: close it now)
// and a connection to close to make room (or nil). A normal slot goes first to a free one, then
// to one taken from a connection doing nothing; only when all are busy does the reserve serve,
// under the same rule.
func (t *tracker) admit(nc net.Conn) (c, victim *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c = &conn{Conn: nc, t: t, class: normal}
	if p := &t.pools[normal]; p.max > 0 && p.n >= p.max {
		if victim = p.victim(); victim == nil {
			c.class = reserve
			r := &t.pools[reserve]
			if r.n >= r.max {
				if victim = r.victim(); victim == nil {
					t.refused.Inc()
					return nil, nil
				}
			}
			t.probing.Inc()
		}
		if victim != nil {
			// Out of the lists now, so no later admission picks it again; Close does the counting.
			t.unlist(victim)
			t.evicted.Inc()
		}
	}
	t.pools[c.class].n++
	t.list(c, &t.pools[c.class].fresh)
	return c, victim
}

// state follows the server's view of each connection (http.Server.ConnState).
func (t *tracker) state(nc net.Conn, s http.ConnState) {
	c := unwrap(nc)
	if c == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed {
		return
	}
	switch s {
	case http.StateNew:
		if c.in == nil {
			t.list(c, &t.pools[c.class].fresh)
		}
	case http.StateIdle:
		t.list(c, &t.pools[c.class].idle)
	default: // active, hijacked, closed: not to be evicted (Close does the counting)
		t.unlist(c)
	}
}

type reserveKey struct{}

// connContext marks the requests of reserve connections.
func (t *tracker) connContext(ctx context.Context, nc net.Conn) context.Context {
	if c := unwrap(nc); c != nil && c.class == reserve {
		return context.WithValue(ctx, reserveKey{}, true)
	}
	return ctx
}

// guard answers only the probes on reserve connections, and closes those after each answer.
func (t *tracker) guard(probes []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(reserveKey{}) == nil {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		if !isProbe(probes, r.URL.Path) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "the server is at its connection limit", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// unwrap finds the tracked connection under a TLS one.
func unwrap(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

// listener admits connections through the tracker.
type listener struct {
	net.Listener
	t *tracker
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c, victim := l.t.admit(nc)
		if victim != nil {
			_ = victim.Close()
		}
		if c == nil {
			_ = nc.Close()
			continue
		}
		return c, nil
	}
}
