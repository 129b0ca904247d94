package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		meta Meta
	}{
		{"agent", Meta{Role: RoleAgent, ID: "a1", URL: "http://10.0.0.1:8081", Fleet: "f-1", Load: 3,
			Pythons: []Python{{"3.11.7", "/usr/bin/python3.11"}}, Sandbox: "namespace", Version: "dev"}},
		{"control plane", Meta{Role: RoleControlPlane, ID: "cp1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.meta.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if b[0] != metaVersion {
				t.Errorf("first byte %d; want the version %d", b[0], metaVersion)
			}
			got, err := DecodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.meta) {
				t.Errorf("got %+v; want %+v", got, tt.meta)
			}
		})
	}
}

func TestDecodeMetaRefuses(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no node metadata"},
		{"future version", append([]byte{2}, `{"r":"agent"}`...), "version 2"},
		{"not json", append([]byte{1}, `{`...), "decode"},
		{"unknown role", append([]byte{1}, `{"r":"spy"}`...), "unknown role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMeta(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestMetaFit(t *testing.T) {
	m := Meta{Role: RoleAgent, ID: "a1"}
	for i := range 40 {
		m.Pythons = append(m.Pythons, Python{fmt.Sprintf("3.%d.0", i), fmt.Sprintf("/opt/pythons/cpython-3.%d.0/bin/python3", i)})
	}
	if _, err := m.Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Encode of 40 interpreters: %v; want ErrMetaTooLarge", err)
	}
	b, dropped, err := m.Fit()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxMetaSize || dropped == 0 {
		t.Errorf("Fit: %d bytes, %d dropped; want at most %d bytes and some dropped", len(b), dropped, MaxMetaSize)
	}
	got, _ := DecodeMeta(b)
	if got.Pythons[0] != m.Pythons[0] {
		t.Errorf("Fit dropped the first interpreter; it must keep the first ones")
	}
}

func TestPythonFor(t *testing.T) {
	m := Meta{Pythons: []Python{{"3.11.7", "/a/python3.11"}, {"3.12.1", "/b/python3.12"}}}
	tests := map[string]string{"3.11": "/a/python3.11", "3.11.7": "/a/python3.11", "3.1": "", "3.12": "/b/python3.12", "3.13": ""}
	for want, path := range tests {
		if got := m.PythonFor(want); got != path {
			t.Errorf("PythonFor(%q) = %q; want %q", want, got, path)
		}
	}
}

func TestParseKeys(t *testing.T) {
	k16 := "MDEyMzQ1Njc4OWFiY2RlZg==" // 16 bytes
	tests := []struct {
		in      string
		n       int
		wantErr string
	}{
		{"", 0, ""},
		{k16, 1, ""},
		{k16 + ", " + k16, 2, ""},
		{"not base64!", 0, "not base64"},
		{"c2hvcnQ=", 0, "5 bytes"},
	}
	for _, tt := range tests {
		keys, err := ParseKeys(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseKeys(%q) = %v; want error %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(keys) != tt.n {
			t.Errorf("ParseKeys(%q) = %d keys, %v; want %d", tt.in, len(keys), err, tt.n)
		}
	}
}

// freeUDPTCPPort returns a loopback port free for both TCP and UDP.
func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

type testMember struct {
	*Member
	meta atomic.Pointer[Meta]
}

func startMember(t *testing.T, name string, keys [][]byte, seeds []string, accept func(Meta) error) *testMember {
	t.Helper()
	tm := &testMember{}
	tm.meta.Store(&Meta{Role: RoleAgent, ID: name, Fleet: "fleet-a"})
	var logs bytes.Buffer
	m, err := Join(t.Context(), Config{NodeName: name, BindAddr: freePort(t), Seeds: seeds, Keys: keys, Profile: "local",
		RejoinInterval: 200 * time.Millisecond},
		Hooks{Meta: func() Meta { return *tm.meta.Load() }, Accept: accept},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	tm.Member = m
	t.Cleanup(func() { m.Close() })
	return tm
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func peerNames(m *Member) string {
	var names []string
	for _, p := range m.Peers() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ",")
}

func TestMembership(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210fedcba9876543210")
	sameFleet := func(m Meta) error {
		if m.Fleet != "fleet-a" {
			return fmt.Errorf("wrong storage: fleet %q", m.Fleet)
		}
		return nil
	}
	a := startMember(t, "a", [][]byte{key}, nil, sameFleet)
	b := startMember(t, "b", [][]byte{key}, []string{a.Addr()}, sameFleet)
	waitFor(t, "a and b to see each other", func() bool { return peerNames(a.Member) == "b" && peerNames(b.Member) == "a" })

	// Metadata changes reach the others.
	b.meta.Store(&Meta{Role: RoleAgent, ID: "b", Fleet: "fleet-a", Load: 7})
	if err := b.UpdateMeta(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see b's new load", func() bool { p := a.Peers(); return len(p) == 1 && p[0].Meta.Load == 7 })

	// A member with another key cannot join: it never appears, and sees nobody.
	wrongKey := startMember(t, "wrong-key", [][]byte{other}, []string{a.Addr()}, sameFleet)
	// A member on other storage is refused by everyone's Accept.
	stranger := startMember(t, "stranger", [][]byte{key}, nil, sameFleet)
	stranger.meta.Store(&Meta{Role: RoleAgent, ID: "stranger", Fleet: "fleet-b"})
	stranger.UpdateMeta(time.Second)
	stranger.ml.Join([]string{a.Addr()})
	waitFor(t, "a to refuse the stranger", func() bool { _, ok := a.Refused()["stranger"]; return ok })
	// A key rotation, first step: a member that already holds the new key second (still encrypting
	// with the current one) talks to the fleet.
	rotated := startMember(t, "rotated", [][]byte{key, other}, []string{a.Addr()}, sameFleet)
	waitFor(t, "the rotated member to join", func() bool { return strings.Contains(peerNames(a.Member), "rotated") })

	time.Sleep(time.Second) // give the wrong-key member its chances to join
	if names := peerNames(a.Member); strings.Contains(names, "wrong-key") || strings.Contains(names, "stranger") {
		t.Errorf("a sees %s; want neither wrong-key nor stranger", names)
	}
	if names := peerNames(wrongKey.Member); names != "" {
		t.Errorf("the wrong-key member sees %q; want nobody", names)
	}
	_ = rotated

	// A member that leaves disappears from the others' view.
	b.Close()
	waitFor(t, "a to see b leave", func() bool { return !strings.Contains(peerNames(a.Member), "b") })
}
