package envs_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/controlplane/envs"
	"github.com/envfabric/envfabric/shared/errcode"
)

// TestAgentErrorDetail: an agent's whole account of a failure (uv's command line, its paths)
// reaches the audit and the logs (AuditMessage), never the text API answers and recorded states
// are made of (Error, ErrorMessage).
func TestAgentErrorDetail(t *testing.T) {
	e := fmt.Errorf("changing dependencies: %w", &envs.AgentError{Code: errcode.PackageResolutionFailed,
		Message: "uv add failed (exit status 1): No solution found", Detail: "command: uv add --project /srv/envs/wf/n/v1 -- gamma"})
	var coded errcode.Coded
	if !errors.As(e, &coded) {
		t.Fatal("not a coded error")
	}
	for name, got := range map[string]string{"Error": e.Error(), "ErrorMessage": coded.ErrorMessage()} {
		if strings.Contains(got, "--project") {
			t.Errorf("%s = %q; want no command line", name, got)
		}
	}
	if got := envs.AuditMessage(e); !strings.Contains(got, "No solution found") || !strings.Contains(got, "command: uv add --project /srv/envs/wf/n/v1") {
		t.Errorf("AuditMessage = %q; want the message and the agent's command line", got)
	}
	if plain := errcode.New(errcode.EnvNotFound, "no such environment"); envs.AuditMessage(plain) != plain.Error() {
		t.Errorf("AuditMessage of a plain error = %q; want %q", envs.AuditMessage(plain), plain.Error())
	}
}
