package fleet

import (
	"context"
	"errors"
	"time"

	"github.com/envfabric/envfabric/controlplane/agentclient"
	"github.com/envfabric/envfabric/shared/gossip"
)

// Gossip cannot tell whether an agent holds a certificate this control plane accepts (nor
// whether it accepts this control plane's): an agent on the right storage with the gossip key
// but another CA's certificate looks alive. Under mutual TLS the fleet therefore looks at every
// agent it has not seen yet (and again at those it refused, as certificates rotate), and keeps
// out of Pick, All and the view's agents those whose calls fail for a certificate; the view lists
// them under refused. An agent not yet looked at is routed to as before: a call that fails for
// its certificate refuses it at once.

const (
	certProbeTimeout = 2 * time.Second
	// certRecheck is how often an agent refused for its certificate is looked at again.
	certRecheck = 5 * time.Second
)

// verifyCertificates looks at agents' certificates when membership changes and every second,
// until ctx ends.
func (f *Fleet) verifyCertificates(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	if f.cfg.AgentTLS == nil {
		return // plaintext: there are no certificates to refuse
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.probe:
		case <-t.C:
		}
		for _, p := range f.agents(false) {
			if !f.certDue(p, time.Now()) {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, certProbeTimeout)
			err := f.client(p).Ping(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			f.noteCert(p, err)
		}
	}
}

// certDue reports whether the agent's certificate is to be looked at (again).
func (f *Fleet) certDue(p gossip.Peer, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.certs[p.Meta.ID]
	return !ok || c.url != p.Meta.URL || (c.refused != "" && now.Sub(c.at) >= certRecheck)
}

// noteCert records what a call to p says of the certificates: refused when it failed for one,
// accepted when it got through or failed for anything else.
func (f *Fleet) noteCert(p gossip.Peer, err error) {
	if f.cfg.AgentTLS == nil {
		return
	}
	var cert *agentclient.CertificateError
	refused := ""
	if errors.As(err, &cert) {
		refused = "certificate: " + cert.Error()
	} else if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return // no answer says nothing of the certificates
	}
	f.mu.Lock()
	before := f.certs[p.Meta.ID]
	f.certs[p.Meta.ID] = certCheck{url: p.Meta.URL, refused: refused, at: time.Now()}
	f.mu.Unlock()
	switch {
	case refused != "" && (before.refused == "" || before.url != p.Meta.URL):
		f.log.Warn("agent refused: its certificate and this control plane's do not accept each other", "agent", p.Meta.ID, "url", p.Meta.URL, "err", err)
	case refused == "" && before.refused != "":
		f.log.Info("agent accepted: the certificates now agree", "agent", p.Meta.ID, "url", p.Meta.URL)
	}
}

// refusedCert says why p is refused for a certificate ("" it is not).
func (f *Fleet) refusedCert(p gossip.Peer) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.certs[p.Meta.ID]; ok && c.url == p.Meta.URL {
		return c.refused
	}
	return ""
}

// certRefused lists the live agents refused for a certificate.
func (f *Fleet) certRefused() []string {
	var out []string
	for _, p := range f.agents(false) {
		if f.refusedCert(p) != "" {
			out = append(out, p.Meta.ID)
		}
	}
	return out
}
