package api

import (
	"context"
	"net/http"
	"time"
)

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return http.StatusOK, map[string]string{"status": "ok"}, nil
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	checks := map[string]string{}
	status := http.StatusOK
	for name, check := range h.opt.Ready {
		if err := check(ctx); err != nil {
			checks[name] = err.Error()
			status = http.StatusServiceUnavailable
		} else {
			checks[name] = "ok"
		}
	}
	state := "ready"
	if status != http.StatusOK {
		state = "not ready"
	}
	return status, map[string]any{"status": state, "checks": checks}, nil
}
