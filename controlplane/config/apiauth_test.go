package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envfabric/envfabric/controlplane/api/auth"
	"github.com/envfabric/envfabric/shared/config"
)

func TestLoadAPI(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("tokens", "# callers\nci:write:ci-secret-0123456789abcdef\n\nops:admin:ops-secret-0123456789abcdef\n", 0o600)
	open := file("tokens-open", "ci:write:ci-secret-0123456789abcdef\n", 0o644)
	bad := file("tokens-bad", "ci:root:ci-secret-0123456789abcdef\n", 0o600)

	tests := []struct {
		name    string
		env     map[string]string
		want    []string // name:role of the tokens
		wantErr []string
		notIn   string // must not appear in the error (a secret)
	}{
		{name: "loopback without tokens", env: map[string]string{}},
		{name: "tokens from the variable", env: map[string]string{"API_TOKENS": "dash:read:dash-secret-0123456789, ci:write:ci:secret:with:colons"},
			want: []string{"dash:read", "ci:write"}},
		{name: "tokens from a file", env: map[string]string{"API_TOKENS_FILE": good}, want: []string{"ci:write", "ops:admin"}},
		{name: "both", env: map[string]string{"API_TOKENS": "dash:read:dash-secret-0123456789", "API_TOKENS_FILE": good},
			want: []string{"dash:read", "ci:write", "ops:admin"}},
		{name: "beyond loopback without tokens", env: map[string]string{"LISTEN_ADDR": "0.0.0.0:8080"}, wantErr: []string{"API_ALLOW_NO_AUTH"}},
		{name: "all interfaces without tokens", env: map[string]string{"LISTEN_ADDR": ":8080"}, wantErr: []string{"beyond loopback"}},
		{name: "beyond loopback, open on purpose", env: map[string]string{"LISTEN_ADDR": "0.0.0.0:8080", "API_ALLOW_NO_AUTH": "true"}},
		{name: "beyond loopback with tokens", env: map[string]string{"LISTEN_ADDR": "0.0.0.0:8080", "API_TOKENS_FILE": good}, want: []string{"ci:write", "ops:admin"}},
		{name: "localhost", env: map[string]string{"LISTEN_ADDR": "localhost:8080"}},
		{name: "short secret", env: map[string]string{"API_TOKENS": "ci:write:short"}, wantErr: []string{"shorter than 16"}, notIn: "short\""},
		{name: "unknown role", env: map[string]string{"API_TOKENS": "ci:root:ci-secret-0123456789abcdef"}, wantErr: []string{"read, write or admin"}, notIn: "ci-secret"},
		{name: "no role", env: map[string]string{"API_TOKENS": "ci-secret-0123456789abcdef"}, wantErr: []string{"name:role:secret"}, notIn: "ci-secret"},
		{name: "bad name", env: map[string]string{"API_TOKENS": "c i:read:ci-secret-0123456789abcdef"}, wantErr: []string{"token name"}},
		{name: "duplicate name", env: map[string]string{"API_TOKENS": "ci:read:ci-secret-0123456789abcdef,ci:admin:other-secret-0123456789"}, wantErr: []string{"given twice"}},
		{name: "shared secret", env: map[string]string{"API_TOKENS": "a:read:ci-secret-0123456789abcdef,b:admin:ci-secret-0123456789abcdef"}, wantErr: []string{"another token's"}, notIn: "ci-secret"},
		{name: "file others may read", env: map[string]string{"API_TOKENS_FILE": open}, wantErr: []string{"chmod 600"}},
		{name: "file with a bad line", env: map[string]string{"API_TOKENS_FILE": bad}, wantErr: []string{"line 1"}, notIn: "ci-secret"},
		{name: "missing file", env: map[string]string{"API_TOKENS_FILE": filepath.Join(dir, "nope")}, wantErr: []string{"API_TOKENS_FILE"}},
		{name: "URL allow-list", env: map[string]string{"ALLOW_PACKAGE_URLS": "https://wheels.example.invalid/simple/, file:///srv/wheels/"}},
		{name: "body timeout too short", env: map[string]string{"REQUEST_BODY_TIMEOUT": "10ms"}, wantErr: []string{"REQUEST_BODY_TIMEOUT"}},
		{name: "body timeout not a duration", env: map[string]string{"REQUEST_BODY_TIMEOUT": "60"}, wantErr: []string{"REQUEST_BODY_TIMEOUT"}},
		{name: "URL allow-list without a trailing slash", env: map[string]string{"ALLOW_PACKAGE_URLS": "https://wheels.example.invalid"}, wantErr: []string{"ALLOW_PACKAGE_URLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(config.Map(tt.env))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Load succeeded; want errors mentioning %v", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if tt.notIn != "" && strings.Contains(err.Error(), tt.notIn) {
					t.Errorf("error %q shows a secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var got []string
			for _, tok := range c.API.Tokens {
				got = append(got, tok.Name+":"+tok.Role.String())
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("tokens %q; want %q", got, tt.want)
			}
		})
	}
}

func TestTokenLookup(t *testing.T) {
	c, err := Load(config.Map(map[string]string{"API_TOKENS": "a:read:aaaaaaaaaaaaaaaaaaaa,b:admin:bbbbbbbbbbbbbbbbbbbb"}))
	if err != nil {
		t.Fatal(err)
	}
	set, err := auth.NewSet(c.API.Tokens)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		secret string
		want   string
	}{
		{"aaaaaaaaaaaaaaaaaaaa", "a"},
		{"bbbbbbbbbbbbbbbbbbbb", "b"},
		{"bbbbbbbbbbbbbbbbbbb", ""},
		{"bbbbbbbbbbbbbbbbbbbbb", ""},
		{"", ""},
	}
	for _, tt := range tests {
		tok, ok := set.Lookup(tt.secret)
		if ok != (tt.want != "") || tok.Name != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.secret, tok.Name, ok, tt.want)
		}
	}
}
