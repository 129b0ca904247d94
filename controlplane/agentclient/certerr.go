package agentclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"reflect"

	"connectrpc.com/connect"

	"github.com/envfabric/envfabric/shared/agentauth"
	"github.com/envfabric/envfabric/shared/fleettls"
)

// CertificateError is a call that failed for a certificate: the agent's, which this control
// plane does not accept (AgentRefused false), or this control plane's, which the agent refused,
// at the handshake or per request (AgentRefused true). Callers reach it with errors.As; it is
// wrapped in an AGENT_UNAVAILABLE error whose message names the problem.
type CertificateError struct {
	Agent        string // the agent's URL
	AgentRefused bool
	Err          error
}

func (e *CertificateError) Error() string {
	if e.AgentRefused {
		return fmt.Sprintf("agent %s refused this control plane's certificate (%v): check FLEET_TLS_* on both: "+
			"this control plane needs a control-plane certificate from a CA in the agent's FLEET_TLS_CA bundle", e.Agent, e.Err)
	}
	return fmt.Sprintf("this control plane does not accept the certificate of agent %s (%v): check FLEET_TLS_* on both: "+
		"the agent needs an agent certificate for its address from a CA in this control plane's FLEET_TLS_CA bundle", e.Agent, e.Err)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// certificateError classifies err as a certificate problem, or returns nil. The checks are on
// types: the verification of the agent's certificate here (*tls.CertificateVerificationError, the
// x509 errors, a wrong fleet role), the agent's TLS alert about ours, and the agent's refusal of
// a request (agentauth.RefusedHeader).
func certificateError(url string, err error) *CertificateError {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		role     *fleettls.RoleError
		ce       *connect.Error
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &hostname), errors.As(err, &role):
		return &CertificateError{Agent: url, Err: innermost(err)}
	case remoteCertificateAlert(err):
		return &CertificateError{Agent: url, AgentRefused: true, Err: innermost(err)}
	case errors.As(err, &ce) && ce.Meta().Get(agentauth.RefusedHeader) == agentauth.RefusedCertificate:
		return &CertificateError{Agent: url, AgentRefused: true, Err: errors.New(ce.Message())}
	}
	return nil
}

// The TLS alerts (RFC 8446 §6.2) a peer sends when it refuses a certificate.
var certificateAlerts = map[uint8]bool{
	42:  true, // bad_certificate
	43:  true, // unsupported_certificate
	44:  true, // certificate_revoked
	45:  true, // certificate_expired
	46:  true, // certificate_unknown
	48:  true, // unknown_ca
	116: true, // certificate_required
}

// remoteCertificateAlert reports whether err is the peer's TLS alert about a certificate. Over
// TCP crypto/tls reports a received alert as a *net.OpError "remote error" around its unexported
// alert type (a uint8; tls.AlertError is used only with QUIC), so the value is read by kind.
func remoteCertificateAlert(err error) bool {
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return certificateAlerts[uint8(alert)]
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	v := reflect.ValueOf(op.Err)
	return v.Type().PkgPath() == "crypto/tls" && v.Kind() == reflect.Uint8 && certificateAlerts[uint8(v.Uint())]
}

// innermost is the deepest error of a chain of single wraps: the cause without the URL and
// transport layers that the message names already.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
