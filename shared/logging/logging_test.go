package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/shared/config"
)

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{"defaults", nil, Config{Level: slog.LevelInfo, Format: "text"}, ""},
		{"json debug", map[string]string{"LOG_FORMAT": "JSON", "LOG_LEVEL": "debug"}, Config{Level: slog.LevelDebug, Format: "json"}, ""},
		{"warn", map[string]string{"LOG_LEVEL": "WARN"}, Config{Level: slog.LevelWarn, Format: "text"}, ""},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, Config{}, `LOG_LEVEL="loud"`},
		{"bad format", map[string]string{"LOG_FORMAT": "xml"}, Config{}, `LOG_FORMAT="xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := config.NewReader(config.Map(tt.env))
			got := FromEnv(r)
			errs := r.Errs()
			if tt.wantErr != "" {
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.wantErr) {
					t.Fatalf("errors = %v; want one naming %s", errs, tt.wantErr)
				}
				return
			}
			if len(errs) > 0 || got != tt.want {
				t.Errorf("got %+v, errors %v; want %+v", got, errs, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, Config{Level: slog.LevelWarn, Format: "json"}, "agent")
	log.Info("dropped")
	log.Warn("kept", "env", "wf/n@v1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("want exactly one JSON line, got %q: %v", buf.String(), err)
	}
	if line["msg"] != "kept" || line["program"] != "agent" || line["env"] != "wf/n@v1" {
		t.Errorf("line = %v; want msg kept, program agent, env wf/n@v1", line)
	}
	buf.Reset()
	New(&buf, Config{Level: slog.LevelInfo, Format: "text"}, "controlplane").Info("hello")
	if got := buf.String(); !strings.Contains(got, "msg=hello") || !strings.Contains(got, "program=controlplane") {
		t.Errorf("text line = %q; want msg=hello program=controlplane", got)
	}
}
