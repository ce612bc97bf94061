package schemas

import (
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// scanObject parses b as parseJSON does, for the texts commands are made of:
// a JSON object at the start of b, in valid UTF-8, without \u escapes of
// UTF-16 surrogates. It reports false for anything else, valid or not, and
// parseJSON then parses b with encoding/json, whose errors say where the
// syntax breaks. What it accepts, it returns exactly as parseJSON would
// (FuzzScanObject checks that), at a tenth of the cost: encoding/json's
// token-by-token decoder is the one costly step of parsing a command.
func scanObject(b []byte) (root *node, end int, ok bool) {
	if !utf8.Valid(b) {
		return nil, 0, false
	}
	s := scanner{b: b}
	s.space()
	if s.i >= len(b) || b[s.i] != '{' {
		return nil, 0, false
	}
	root, ok = s.value(0)
	if !ok {
		return nil, 0, false
	}
	s.space()
	return root, s.i, true
}

// scanner walks a JSON text; i is the offset of the next byte.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next reports whether the byte at i is c, and steps over it if so.
func (s *scanner) next(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) value(depth int) (*node, bool) {
	if depth > maxDepth || s.i >= len(s.b) {
		return nil, false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth)
	case c == '[':
		return s.array(depth)
	case c == '"':
		text, ok := s.string()
		return &node{kind: kindString, text: text}, ok
	case c == '-' || c >= '0' && c <= '9':
		text, ok := s.number()
		return &node{kind: kindNumber, text: text}, ok
	case s.literal("true") || s.literal("false"):
		return &node{kind: kindBool}, true
	case s.literal("null"):
		return &node{kind: kindNull}, true
	}
	return nil, false
}

func (s *scanner) literal(word string) bool {
	if strings.HasPrefix(string(s.b[s.i:min(s.i+len(word), len(s.b))]), word) {
		s.i += len(word)
		return true
	}
	return false
}

func (s *scanner) object(depth int) (*node, bool) {
	s.i++ // '{'
	n := &node{kind: kindObject}
	s.space()
	if s.next('}') {
		return n, true
	}
	for {
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return nil, false
		}
		name, ok := s.string()
		if !ok {
			return nil, false
		}
		s.space()
		if !s.next(':') {
			return nil, false
		}
		s.space()
		v, ok := s.value(depth + 1)
		if !ok {
			return nil, false
		}
		n.members = append(n.members, member{name: name, value: v})
		s.space()
		if s.next('}') {
			return n, true
		}
		if !s.next(',') {
			return nil, false
		}
	}
}

func (s *scanner) array(depth int) (*node, bool) {
	s.i++ // '['
	n := &node{kind: kindArray}
	s.space()
	if s.next(']') {
		return n, true
	}
	for {
		s.space()
		v, ok := s.value(depth + 1)
		if !ok {
			return nil, false
		}
		n.items = append(n.items, v)
		s.space()
		if s.next(']') {
			return n, true
		}
		if !s.next(',') {
			return nil, false
		}
	}
}

// string reads a string literal and returns its value.
func (s *scanner) string() (string, bool) {
	s.i++ // '"'
	start := s.i
	// The common case: no escape, returned as one slice of the body.
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return string(s.b[start : s.i-1]), true
		case c == '\\':
			return s.escaped(start)
		case c < 0x20:
			return "", false
		}
		s.i++
	}
	return "", false
}

// escaped reads the rest of a string literal that has escapes, from its
// first backslash at i; start is the offset of its first character.
func (s *scanner) escaped(start int) (string, bool) {
	buf := append([]byte(nil), s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return string(buf), true
		case c < 0x20:
			return "", false
		case c != '\\':
			buf = append(buf, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return "", false
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok || utf16.IsSurrogate(r) {
				return "", false // surrogates: left to encoding/json
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", false
		}
	}
	return "", false
}

// hex4 reads the four hexadecimal digits of a \u escape.
func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}

// number reads a number literal (RFC 8259 §6) and returns it as written.
func (s *scanner) number() (string, bool) {
	start := s.i
	s.next('-')
	switch {
	case s.next('0'):
	case s.digits() == 0:
		return "", false
	}
	if s.next('.') && s.digits() == 0 {
		return "", false
	}
	if s.next('e') || s.next('E') {
		if !s.next('+') {
			s.next('-')
		}
		if s.digits() == 0 {
			return "", false
		}
	}
	return string(s.b[start:s.i]), true
}

// digits steps over decimal digits and returns how many there were.
func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}
