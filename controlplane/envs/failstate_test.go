package envs

import (
	"errors"
	"fmt"
	"testing"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/errcode"
)

func TestFailState(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"agent restored", &AgentError{Code: errcode.AgentUnavailable, Restored: true}, store.StateActive},
		{"agent restored, wrapped", fmt.Errorf("mutating: %w", &AgentError{Code: errcode.UVExecutionError, Restored: true}), store.StateActive},
		{"agent not restored", &AgentError{Code: errcode.UVExecutionError}, store.StateError},
		{"commit refused, restored", &UncommittedError{Restored: true}, store.StateActive},
		{"commit refused, not restored", &UncommittedError{}, store.StateError},
		{"resolution", &AgentError{Code: errcode.PackageResolutionFailed}, store.StateActive},
		{"locked", &LockedError{}, store.StateActive},
		{"not a dependency", errcode.New(errcode.DependencyNotFound, "x"), store.StateActive},
		{"unknown", errors.New("boom"), store.StateError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := failState(tt.err); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}
