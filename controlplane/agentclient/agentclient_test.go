package agentclient

import (
	"testing"

	agentv1 "github.com/envfabric/envfabric/proto/gen/envfabric/agent/v1"
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
