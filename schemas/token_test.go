package schemas_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/schemas"
)

// kvKeyPattern is what JetStream accepts as a KV key; a subject token must
// in addition have no '.', '*', '>' or whitespace.
var kvKeyPattern = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

func validToken(s string) bool {
	return kvKeyPattern.MatchString(s) && !strings.ContainsAny(s, ".*> \t\r\n/")
}

func TestEncodeToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"validate-cancel", "validate-cancel"},
		{"ABC_xyz-09", "ABC_xyz-09"},
		{"cmd:2025.001", "cmd=3A2025=2E001"},
		{"a b*c>d/e=f", "a=20b=2Ac=3Ed=2Fe=3Df"},
		{"注销", "=E6=B3=A8=E9=94=80"},
		{"\x00\xff", "=00=FF"},
		{"=", "=3D"},
	}
	for _, tt := range tests {
		got := schemas.EncodeToken(tt.in)
		if got != tt.want {
			t.Errorf("EncodeToken(%q) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := schemas.DecodeToken(got)
		if err != nil || back != tt.in {
			t.Errorf("DecodeToken(%q) = %q, %v", got, back, err)
		}
	}
}

func TestDecodeTokenRejectsNonCanonical(t *testing.T) {
	for _, in := range []string{
		"a.b",  // '.' is always escaped
		"a b",  // so is a space
		"=3a",  // lower-case hex
		"=41",  // 'A' is never escaped
		"=2",   // truncated
		"abc=", // truncated
		"=G0",  // not hex
		"é",    // not ASCII
	} {
		if got, err := schemas.DecodeToken(in); !errors.Is(err, schemas.ErrInvalidToken) {
			t.Errorf("DecodeToken(%q) = %q, %v; want ErrInvalidToken", in, got, err)
		}
	}
}

func FuzzTokenRoundTrip(f *testing.F) {
	for _, s := range []string{"", "wxpay", "cmd:2025.001", "a.b*c>d", "=3A", "注销 ", "\x00\xff\n", "seq-18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := schemas.EncodeToken(s)
		if s != "" && !validToken(enc) {
			t.Fatalf("EncodeToken(%q) = %q is not a valid KV key and subject token", s, enc)
		}
		dec, err := schemas.DecodeToken(enc)
		if err != nil || dec != s {
			t.Fatalf("DecodeToken(EncodeToken(%q)) = %q, %v", s, dec, err)
		}
	})
}

func FuzzDecodeToken(f *testing.F) {
	for _, s := range []string{"", "abc", "=3A", "=3a", "=41", "=", "a=2", "a.b", "=E6=B3=A8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dec, err := schemas.DecodeToken(s)
		if err != nil {
			if !errors.Is(err, schemas.ErrInvalidToken) {
				t.Fatalf("DecodeToken(%q): error %v does not match ErrInvalidToken", s, err)
			}
			return
		}
		// Only canonical encodings decode: the encoding is a bijection.
		if enc := schemas.EncodeToken(dec); enc != s {
			t.Fatalf("DecodeToken(%q) = %q, which encodes to %q", s, dec, enc)
		}
	})
}

func TestValidTracestate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"rojo=00f067aa0ba902b7", true},
		{"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", true},
		{"rojo=1 , congo=2", true},
		{"tenant@vendor=x", true},
		{"a=1,,b=2", true}, // empty members are allowed
		{"", false},
		{"Rojo=1", false},       // keys are lower case
		{"rojo", false},         // no value
		{"rojo=", false},        // an empty value
		{"rojo=a=b", false},     // '=' in the value
		{"rojo=a\x01", false},   // a control character
		{"rojo=a ", true},       // trailing spaces are optional white space
		{"rojo=ünïcode", false}, // not ASCII
		{strings.Repeat("a", 513), false},
		{strings.TrimSuffix(strings.Repeat("k=v,", 33), ","), false}, // 33 members
		{strings.TrimSuffix(strings.Repeat("k=v,", 32), ","), true},
	} {
		if got := schemas.ValidTracestate(tt.in); got != tt.want {
			t.Errorf("ValidTracestate(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// FuzzValidKeyMatchesItsPattern keeps ValidKey, which checks bytes in a
// loop, in step with IdentifierPattern, which the JSON Schemas publish.
func FuzzValidKeyMatchesItsPattern(f *testing.F) {
	for _, s := range []string{"", "a", "1900000109", "out_apply-no", "a.b", "a b", "é", "订单", "x\x00", strings.Repeat("k", schemas.MaxKeyLength), strings.Repeat("k", schemas.MaxKeyLength+1)} {
		f.Add(s)
	}
	pattern := regexp.MustCompile(schemas.IdentifierPattern)
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) <= schemas.MaxKeyLength && pattern.MatchString(s)
		if got := schemas.ValidKey(s); got != want {
			t.Fatalf("ValidKey(%q) = %v, IdentifierPattern with the length bound says %v", s, got, want)
		}
	})
}
