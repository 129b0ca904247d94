package auth

import (
	"fmt"
	"strings"
	"testing"
)

var tokenTests = []struct {
	in      string
	want    Token
	wantErr string
}{
	{in: "ci:write:0123456789abcdef", want: Token{Name: "ci", Role: Write, Secret: "0123456789abcdef"}},
	{in: " ops:admin:a:b:c:0123456789abcdef ", want: Token{Name: "ops", Role: Admin, Secret: "a:b:c:0123456789abcdef"}},
	{in: "ci:write:0123456789abcde", wantErr: "shorter"},
	{in: "ci:Write:0123456789abcdef", wantErr: "role"},
	{in: ":read:0123456789abcdef", wantErr: "token name"},
	{in: "ci:read", wantErr: "name:role:secret"},
	{in: "ci:read:0123456789 abcdef", wantErr: "printable"},
	{in: "ci:read:0123456789abcdef\u00e9", wantErr: "printable"},
	{in: "c/i:read:0123456789abcdef", wantErr: "token name"},
}

func TestParseToken(t *testing.T) {
	for _, tt := range tokenTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseToken(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseToken(f *testing.F) {
	for _, tt := range tokenTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if tok.Role == None || !validName(tok.Name) || len(tok.Secret) < MinSecretLen || strings.ContainsAny(tok.Secret, " ,\n") {
			t.Fatalf("ParseToken(%q) accepted %+v", s, tok)
		}
	})
}

func TestRoles(t *testing.T) {
	tests := []struct {
		have, need Role
		want       bool
	}{
		{Read, Read, true}, {Read, Write, false}, {Read, Admin, false},
		{Write, Read, true}, {Write, Write, true}, {Write, Admin, false},
		{Admin, Read, true}, {Admin, Admin, true},
		{None, None, false}, {None, Read, false},
	}
	for _, tt := range tests {
		if got := tt.have.Allows(tt.need); got != tt.want {
			t.Errorf("%s.Allows(%s) = %v; want %v", tt.have, tt.need, got, tt.want)
		}
	}
}

// BenchmarkLookup is the price of authenticating one request: every configured secret is
// compared, so it grows with the number of tokens.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprint(n, " tokens"), func(b *testing.B) {
			var tokens []Token
			for i := 0; i < n; i++ {
				tokens = append(tokens, Token{Name: fmt.Sprint("t", i), Role: Read, Secret: fmt.Sprintf("secret-%020d", i)})
			}
			s, err := NewSet(tokens)
			if err != nil {
				b.Fatal(err)
			}
			want := tokens[n-1].Secret
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, ok := s.Lookup(want); !ok {
					b.Fatal("not found")
				}
			}
		})
	}
}
