package config

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/api/auth"
	"github.com/envfabric/envfabric/controlplane/reqspec"
	"github.com/envfabric/envfabric/shared/config"
)

// API is how the REST API admits callers and package references.
type API struct {
	Tokens      []auth.Token
	AllowNoAuth bool // API_ALLOW_NO_AUTH: serve beyond loopback without tokens
	// PackageURLPrefixes lets requirements name direct URLs (PEP 508 "name @ url") that start with
	// one of these; empty refuses every URL, path and VCS reference.
	PackageURLPrefixes []string
	BodyTimeout        time.Duration // REQUEST_BODY_TIMEOUT: how long a client may take to send a body
}

// loadAPI reads API_TOKENS, API_TOKENS_FILE, API_ALLOW_NO_AUTH and ALLOW_PACKAGE_URLS.
func loadAPI(r *config.Reader, listenAddr string) API {
	a := API{AllowNoAuth: r.Bool("API_ALLOW_NO_AUTH", false), BodyTimeout: r.Duration("REQUEST_BODY_TIMEOUT", time.Minute)}
	if a.BodyTimeout < time.Second {
		r.Fail("REQUEST_BODY_TIMEOUT=%s: at least 1s", a.BodyTimeout)
	}
	if v := r.String("API_TOKENS", ""); v != "" {
		for i, s := range strings.Split(v, ",") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			t, err := auth.ParseToken(s)
			if err != nil {
				r.Fail("API_TOKENS entry %d: %v", i+1, err) // never echo the entry: it holds a secret
				continue
			}
			a.Tokens = append(a.Tokens, t)
		}
	}
	if path := r.String("API_TOKENS_FILE", ""); path != "" {
		tokens, err := readTokenFile(path)
		if err != nil {
			r.Fail("API_TOKENS_FILE=%q: %v", path, err)
		}
		a.Tokens = append(a.Tokens, tokens...)
	}
	if _, err := auth.NewSet(a.Tokens); err != nil {
		r.Fail("API tokens: %v", err)
	}
	if len(a.Tokens) == 0 && !a.AllowNoAuth {
		if host, _, err := net.SplitHostPort(listenAddr); err == nil && !config.IsLoopback(host) {
			r.Fail("LISTEN_ADDR=%q is beyond loopback and no API tokens are configured (API_TOKENS or API_TOKENS_FILE); set API_ALLOW_NO_AUTH=true to serve an open API anyway", listenAddr)
		}
	}
	if v := r.String("ALLOW_PACKAGE_URLS", ""); v != "" {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			if err := reqspec.ValidURLPrefix(p); err != nil {
				r.Fail("ALLOW_PACKAGE_URLS: %v", err)
				continue
			}
			a.PackageURLPrefixes = append(a.PackageURLPrefixes, p)
		}
	}
	return a
}

// readTokenFile reads one name:role:secret per line ('#' comments, blank lines). The file holds
// secrets, so one that its group or others may read is refused, as ssh refuses a readable key.
func readTokenFile(path string) ([]auth.Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("mode %04o lets others read the secrets; chmod 600 it", perm)
	}
	var out []auth.Token
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t, err := auth.ParseToken(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, t)
	}
	return out, sc.Err()
}
