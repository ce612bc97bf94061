package schemas

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// ErrInvalidToken is matched by the error of [DecodeToken] for text that
// [EncodeToken] cannot have produced.
var ErrInvalidToken = errors.New("schemas: invalid encoded token")

const upperHex = "0123456789ABCDEF"

// tokenEscape starts an escaped byte in an encoded token. It is valid in KV
// keys ([-/_=.a-zA-Z0-9]) and in NATS subject tokens, and is not one of the
// bytes kept as they are.
const tokenEscape = '='

// plainTokenByte reports whether c is kept as it is by [EncodeToken].
func plainTokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// EncodeToken maps any string to one that is usable both as a NATS subject
// token and as (part of) a JetStream KV key: the bytes [A-Za-z0-9_-] are kept
// and every other byte is written as '=' followed by two upper-case hex
// digits (so "cmd:1.a" becomes "cmd=3A1=2Ea"). Identifiers made only of
// [A-Za-z0-9_-] are therefore unchanged. The encoding is reversible with
// [DecodeToken] and injective: two different strings never share an
// encoding. The empty string encodes to the empty string, which is not a
// valid token or key: callers must not encode empty names.
func EncodeToken(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !plainTokenByte(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plainTokenByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte(tokenEscape)
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0x0f])
	}
	return b.String()
}

// DecodeToken reverses [EncodeToken]. It accepts only the canonical encoding
// (upper-case hex digits, and no escape of a byte that is kept as it is), so
// that DecodeToken(t) succeeds exactly when t == EncodeToken(result). Other
// input yields an error matching [ErrInvalidToken] naming the offending
// offset.
func DecodeToken(t string) (string, error) {
	if strings.IndexByte(t, tokenEscape) < 0 {
		for i := 0; i < len(t); i++ {
			if !plainTokenByte(t[i]) {
				return "", fmt.Errorf("%w: byte 0x%02X at offset %d is not allowed", ErrInvalidToken, t[i], i)
			}
		}
		return t, nil
	}
	b := make([]byte, 0, len(t))
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case plainTokenByte(c):
			b = append(b, c)
		case c == tokenEscape:
			if i+2 >= len(t) {
				return "", fmt.Errorf("%w: escape at offset %d is truncated", ErrInvalidToken, i)
			}
			hi, ok1 := upperHexValue(t[i+1])
			lo, ok2 := upperHexValue(t[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("%w: escape at offset %d is not followed by two upper-case hex digits", ErrInvalidToken, i)
			}
			v := hi<<4 | lo
			if plainTokenByte(v) {
				return "", fmt.Errorf("%w: escape at offset %d encodes %q, which is never escaped", ErrInvalidToken, i, v)
			}
			b = append(b, v)
			i += 2
		default:
			return "", fmt.Errorf("%w: byte 0x%02X at offset %d is not allowed", ErrInvalidToken, c, i)
		}
	}
	return string(b), nil
}

func upperHexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// HeaderTraceparent is the NATS header carrying a W3C traceparent, on
// commands and on events. NATS headers are case-sensitive: it is lower case,
// as W3C writes it.
const HeaderTraceparent = "traceparent"

// traceparentPattern is a W3C trace-context traceparent
// (https://www.w3.org/TR/trace-context/#traceparent-header): version 00-fe,
// a non-zero trace id and a non-zero parent id, lower-case hex.
var traceparentPattern = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// ValidTraceparent reports whether s is a traceparent events may carry:
// readers of a command's headers use it to decide whether to keep one.
func ValidTraceparent(s string) bool {
	return traceparentPattern.MatchString(s) && s[:2] != "ff" &&
		s[3:35] != "00000000000000000000000000000000" && s[36:52] != "0000000000000000"
}

// HeaderTracestate is the NATS header carrying a W3C tracestate, beside a
// traceparent, lower case as W3C writes it.
const HeaderTracestate = "tracestate"

// tracestateMember is one list-member of a W3C tracestate
// (https://www.w3.org/TR/trace-context/#tracestate-header): a simple or a
// multi-tenant key, "=", a value of printable ASCII without "," and "=",
// not ending in a space.
var tracestateMember = regexp.MustCompile(`^(?:[a-z0-9][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$`)

// ValidTracestate reports whether s is a tracestate events may carry: at
// most 32 list-members, separated by commas with optional spaces and tabs,
// 512 bytes at most (the length W3C asks propagators to keep).
func ValidTracestate(s string) bool {
	if s == "" || len(s) > 512 {
		return false
	}
	members := strings.Split(s, ",")
	if len(members) > 32 {
		return false
	}
	for _, m := range members {
		if m = strings.Trim(m, " \t"); m != "" && !tracestateMember.MatchString(m) {
			return false // an empty member is allowed, and ignored
		}
	}
	return true
}

// HeaderSafe reports whether s can be a NATS header value and a JSON string
// unchanged: valid UTF-8 without control characters. Command types and ids
// must be, or no event can name them.
func HeaderSafe(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// MaxKeyLength is the longest resource key (an identifier WeChat Pay
// returns) that status tracking takes into a subject.
const MaxKeyLength = 128

// ValidKey reports whether s, an identifier from a WeChat Pay answer, may
// become a subject token and a KV key as it is: 1 to [MaxKeyLength]
// characters matching [IdentifierPattern]. Anything else is not trusted
// into a subject.
func ValidKey(s string) bool { return plainToken(s, MaxKeyLength) }

// plainToken reports whether s is 1 to limit bytes that [EncodeToken] keeps
// as they are: [IdentifierPattern] with a length bound, checked without a
// regular expression (it runs for every key of every command).
func plainToken(s string, limit int) bool {
	if len(s) == 0 || len(s) > limit {
		return false
	}
	for i := range len(s) {
		if !plainTokenByte(s[i]) {
			return false
		}
	}
	return true
}
