package agentclient

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/envfabric/envfabric/controlplane/envs"
	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
	"github.com/envfabric/envfabric/shared/envid"
	"github.com/envfabric/envfabric/shared/errcode"
)

// TestErrorCodes: every value of the wire enum names a documented error code, so an agent's
// failure never reaches a client as an unknown code.
func TestErrorCodes(t *testing.T) {
	for v, name := range agentv1.ErrorCode_name {
		c := agentv1.ErrorCode(v)
		t.Run(name, func(t *testing.T) {
			got := codeOf(c)
			if c == agentv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
				if got.Known() {
					t.Errorf("got %q; want no code for an unspecified one", got)
				}
				return
			}
			if !got.Known() || "ERROR_CODE_"+string(got) != name {
				t.Errorf("got %q; want the documented code %s names", got, name)
			}
		})
	}
}

// TestRefusedConnectionNotStarted: a call to an address nothing listens on (an agent just killed)
// fails as AGENT_UNAVAILABLE marked envs.ErrNotStarted, so that a run may go elsewhere; an agent
// that answers with a failure is not marked.
func TestRefusedConnectionNotStarted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // the port is free again: a connection to it is refused

	c := New("http://"+addr, "token")
	_, err = c.Run(t.Context(), envs.RunSpec{Key: envid.Key{WorkflowID: "wf", NodeID: "n", VersionID: "v1"}, Code: "print(1)", Timeout: time.Second, MaxOutput: 1024})
	if errcode.Of(err) != errcode.AgentUnavailable || !errors.Is(err, envs.ErrNotStarted) {
		t.Errorf("got %v (code %s); want AGENT_UNAVAILABLE marked as not started", err, errcode.Of(err))
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	_, err = New(srv.URL, "token").Run(t.Context(), envs.RunSpec{Key: envid.Key{WorkflowID: "wf", NodeID: "n", VersionID: "v1"}, Code: "print(1)", Timeout: time.Second, MaxOutput: 1024})
	if err == nil || errors.Is(err, envs.ErrNotStarted) {
		t.Errorf("an agent that answered: got %v; want a failure not marked as not started", err)
	}
}
