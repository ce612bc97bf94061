package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// MaxCommandSize is the largest command body accepted, in bytes (64 KiB).
const MaxCommandSize = 64 << 10

// maxDepth bounds the nesting of a body; commands nest three levels deep.
const maxDepth = 64

// newCommand returns a new, empty command of type t, or nil when t is not
// known.
func newCommand(t Type) Command {
	switch t {
	case TypeValidateCancel:
		return new(ValidateCancel)
	case TypeQueryCancelWithdraw:
		return new(QueryCancelWithdraw)
	case TypeConfirmCancel:
		return new(ConfirmCancel)
	case TypeQueryCancelApplication:
		return new(QueryCancelApplication)
	case TypeCancelApplyment:
		return new(CancelApplyment)
	case TypeApplyCancelWithdraw:
		return new(ApplyCancelWithdraw)
	case TypeTrack:
		return new(Track)
	case TypeUntrack:
		return new(Untrack)
	}
	return nil
}

// Parse decodes and validates the body of a command of type t (the last
// token of its subject) and returns it as a pointer to its struct
// (*ValidateCancel, …).
//
// Every refusal is an [*InvalidError] listing every problem found, sorted:
//
//   - an unknown type: one violation of rule unknown_type (and the error
//     matches [ErrUnknownType]); the body is not looked at;
//   - a body over [MaxCommandSize] bytes (size), not valid UTF-8 or with an
//     unpaired surrogate escape (utf8), not valid JSON (json), not a JSON
//     object (type): that violation alone;
//   - more than white space after the object (trailing_data), together
//     with the object's own violations;
//   - in the object: unknown fields (unknown_field), keys given twice
//     (duplicate_key), wrong JSON types including null (type), fields given
//     empty ("" or [], min), and every field rule of the command's struct
//     tags (required, max, identifier, …) and cross-field rule
//     (exactly_one_of, at_least_one_of). A field with a decoding problem is
//     not checked further.
//
// Parse is safe for concurrent use; it never panics on any input.
func Parse(t string, body []byte) (Command, error) {
	cmd := newCommand(Type(t))
	if cmd == nil {
		return nil, unknownTypeError(t)
	}
	refuse := func(vs ...Violation) (Command, error) {
		return nil, &InvalidError{Type: t, Violations: sortViolations(vs)}
	}
	if len(body) > MaxCommandSize {
		return refuse(Violation{"", RuleSize, fmt.Sprintf("the body is %d bytes long; at most %d bytes are accepted", len(body), MaxCommandSize)})
	}
	if !utf8.Valid(body) {
		return refuse(Violation{"", RuleUTF8, fmt.Sprintf("the body is not valid UTF-8 (at byte %d)", invalidUTF8At(body))})
	}
	root, end, err := parseJSON(body)
	if err != nil {
		return refuse(Violation{"", RuleJSON, err.Error()})
	}
	if at := loneSurrogateAt(body); at >= 0 {
		return refuse(Violation{"", RuleUTF8, fmt.Sprintf("the body has an unpaired UTF-16 surrogate escape at byte %d", at)})
	}
	if root.kind != kindObject {
		return refuse(Violation{"", RuleType, "the body must be a JSON object, not " + root.kind.String()})
	}
	d := decoder{skip: make(map[string]bool)}
	if end < len(body) {
		d.vs = append(d.vs, Violation{"", RuleTrailingData, fmt.Sprintf("the body has data after the JSON object (at byte %d)", end)})
	}
	d.object("", article(t)+" "+t+" command", root, reflect.ValueOf(cmd).Elem())
	vs := append(d.vs, validateFields(Type(t), cmd, d.skip)...)
	if len(vs) > 0 {
		return refuse(vs...)
	}
	return cmd, nil
}

// article returns the indefinite article for a command type.
func article(t string) string {
	if strings.IndexByte("aeiou", t[0]) >= 0 {
		return "an"
	}
	return "a"
}

// sortViolations sorts vs by Field, Rule and Message and drops repeats.
func sortViolations(vs []Violation) []Violation {
	slices.SortFunc(vs, func(a, b Violation) int {
		if c := strings.Compare(a.Field, b.Field); c != 0 {
			return c
		}
		if c := strings.Compare(a.Rule, b.Rule); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	return slices.Compact(vs)
}

// invalidUTF8At returns the offset of the first byte of b that is not part
// of valid UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// loneSurrogateAt returns the offset of the first \u escape in a string of
// the (syntactically valid) JSON text b that is half of a UTF-16 surrogate
// pair without its other half, or -1. encoding/json would silently decode
// it to U+FFFD.
func loneSurrogateAt(b []byte) int {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
		return rune(v), err == nil
	}
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			r, ok := hex4(i)
			if !ok {
				i++ // a one-character escape
				continue
			}
			switch {
			case r >= 0xD800 && r < 0xDC00:
				if lo, ok := hex4(i + 6); ok && lo >= 0xDC00 && lo < 0xE000 {
					i += 11
					continue
				}
				return i
			case r >= 0xDC00 && r < 0xE000:
				return i
			}
			i += 5
		}
	}
	return -1
}

// kind is the type of a JSON value.
type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// String names the kind with its article, for messages.
func (k kind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

// node is a parsed JSON value that keeps the order and the duplicates of
// object keys, which encoding/json's maps and structs lose.
type node struct {
	kind    kind
	text    string // a string's value, a number's literal
	items   []*node
	members []member
}

type member struct {
	name  string
	value *node
}

// parseJSON parses the single JSON value at the start of b and returns it
// with the offset of the first byte after it that is not white space
// (len(b) when there is none). Its error says where the syntax breaks and
// never quotes the body.
func parseJSON(b []byte) (*node, int, error) {
	if root, end, ok := scanObject(b); ok {
		return root, end, nil
	}
	return decodeJSON(b)
}

// decodeJSON is parseJSON with encoding/json's decoder alone: what
// scanObject gives up on, and every refusal.
func decodeJSON(b []byte) (*node, int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	p := jsonParser{dec: dec}
	root, err := p.value(0)
	if err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return nil, 0, fmt.Errorf("the body is not valid JSON (syntax error at byte %d)", se.Offset)
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			if len(bytes.TrimSpace(b)) == 0 {
				return nil, 0, errors.New("the body is empty; it must be a JSON object")
			}
			return nil, 0, errors.New("the body is not valid JSON (it ends before the value is complete)")
		}
		return nil, 0, err
	}
	end := int(dec.InputOffset())
	for end < len(b) && (b[end] == ' ' || b[end] == '\t' || b[end] == '\n' || b[end] == '\r') {
		end++
	}
	return root, end, nil
}

type jsonParser struct{ dec *json.Decoder }

var errTooDeep = fmt.Errorf("the body is not acceptable JSON (nested more than %d levels deep)", maxDepth)

func (p jsonParser) value(depth int) (*node, error) {
	if depth > maxDepth {
		return nil, errTooDeep
	}
	tok, err := p.dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case nil:
		return &node{kind: kindNull}, nil
	case bool:
		return &node{kind: kindBool}, nil
	case json.Number:
		return &node{kind: kindNumber, text: string(v)}, nil
	case string:
		return &node{kind: kindString, text: v}, nil
	case json.Delim:
		switch v {
		case '{':
			n := &node{kind: kindObject}
			for p.dec.More() {
				tok, err := p.dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := tok.(string)
				if !ok { // the decoder reports a syntax error first
					return nil, errors.New("the body is not valid JSON (an object key is not a string)")
				}
				val, err := p.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.members = append(n.members, member{name: key, value: val})
			}
			_, err := p.dec.Token() // '}'
			return n, err
		case '[':
			n := &node{kind: kindArray}
			for p.dec.More() {
				val, err := p.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, val)
			}
			_, err := p.dec.Token() // ']'
			return n, err
		}
	}
	// The decoder only hands out closing delimiters where they belong.
	return nil, fmt.Errorf("the body is not valid JSON (unexpected %v)", tok)
}

// structInfo describes the JSON fields of a command struct.
type structInfo struct {
	fields map[string]fieldInfo
	names  string // the JSON names, comma-separated, for messages
}

type fieldInfo struct {
	index    int
	required bool   // its rules start with required: the validator reports it empty
	min      string // the min= param of its rules, if any
}

var structInfos sync.Map // reflect.Type → *structInfo

func infoOf(t reflect.Type) *structInfo {
	if si, ok := structInfos.Load(t); ok {
		return si.(*structInfo)
	}
	si := &structInfo{fields: make(map[string]fieldInfo)}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		fi := fieldInfo{index: i}
		rules := strings.Split(f.Tag.Get("validate"), ",")
		fi.required = rules[0] == "required"
		for _, r := range rules {
			if strings.HasPrefix(r, "min=") {
				fi.min = strings.TrimPrefix(r, "min=")
			}
		}
		si.fields[name] = fi
		names = append(names, name)
	}
	si.names = strings.Join(names, ", ")
	got, _ := structInfos.LoadOrStore(t, si)
	return got.(*structInfo)
}

// plainName reports whether a JSON key may be quoted in a violation's
// Field (1 to 64 of [A-Za-z0-9_-]); others are described without their
// name.
func plainName(name string) bool { return plainToken(name, 64) }

// decoder maps a parsed body onto a command struct, collecting violations
// for everything that does not fit it.
type decoder struct {
	vs   []Violation
	skip map[string]bool // paths with a violation: not validated further
}

func (d *decoder) add(path, rule, msg string) {
	d.vs = append(d.vs, Violation{Field: path, Rule: rule, Message: msg})
	d.skip[path] = true
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// object decodes the object n into the struct v; what describes v for
// messages ("a confirm-cancel command", "payee_info").
func (d *decoder) object(path, what string, n *node, v reflect.Value) {
	si := infoOf(v.Type())
	seen := make(map[string]bool, len(n.members))
	for _, m := range n.members {
		name := m.name
		field := join(path, name)
		if !plainName(name) {
			name, field = "", path
		}
		if seen[m.name] {
			if name == "" {
				d.vs = append(d.vs, Violation{field, RuleDuplicateKey,
					fmt.Sprintf("%s has a key more than once (the key is not shown)", describe(path, what))})
			} else {
				d.add(field, RuleDuplicateKey, field+" is given more than once")
			}
			continue
		}
		seen[m.name] = true
		fi, ok := si.fields[m.name]
		if !ok {
			if name == "" {
				d.vs = append(d.vs, Violation{field, RuleUnknownField,
					fmt.Sprintf("%s has a field that is not one of %s (its name is not shown)", describe(path, what), si.names)})
			} else {
				d.add(field, RuleUnknownField, fmt.Sprintf("%s is not a field of %s; the fields are %s", field, what, si.names))
			}
			continue
		}
		d.value(field, m.value, v.Field(fi.index), fi)
	}
}

func describe(path, what string) string {
	if path == "" {
		return "the body"
	}
	return what
}

// wantKind is the JSON kind that decodes into a Go kind of the command
// structs.
var wantKind = map[reflect.Kind]kind{
	reflect.String: kindString, reflect.Int64: kindNumber, reflect.Slice: kindArray,
	reflect.Pointer: kindObject, reflect.Struct: kindObject,
}

// value decodes n into v, a field (or an array item) at path.
func (d *decoder) value(path string, n *node, v reflect.Value, fi fieldInfo) {
	want := wantKind[v.Kind()]
	if n.kind != want {
		w := want.String()
		if v.Kind() == reflect.Int64 {
			w = "an integer"
		}
		d.add(path, RuleType, fmt.Sprintf("%s must be %s, not %s", path, w, n.kind))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.text)
		if n.text == "" && !fi.required {
			d.add(path, RuleMin, path+" must not be empty when given; leave it out instead")
		}
	case reflect.Int64:
		i, problem := jsonInt(n.text)
		switch {
		case problem == "fraction":
			d.add(path, RuleType, path+" must be an integer, not a number with a fraction")
		case problem == "large":
			d.add(path, RuleMax, fmt.Sprintf("%s must be at most %d", path, int64(1<<63-1)))
		case problem == "small":
			d.add(path, RuleMin, fmt.Sprintf("%s must be at least %s", path, cmp(fi.min, "-9223372036854775808")))
		case i == 0 && !fi.required && fi.min != "":
			d.add(path, RuleMin, fmt.Sprintf("%s must be at least %s", path, fi.min))
		default:
			v.SetInt(i)
		}
	case reflect.Slice:
		if len(n.items) == 0 && !fi.required {
			d.add(path, RuleMin, path+" must have at least 1 item when given; leave it out instead")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.items), len(n.items))
		for i, item := range n.items {
			// Items are checked by their own rules (dive): none is
			// optional.
			d.value(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i), fieldInfo{required: true})
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.object(path, path, n, p.Elem())
		v.Set(p)
	case reflect.Struct:
		d.object(path, path, n, v)
	}
}

func cmp(s, fallback string) string {
	if s != "" {
		return s
	}
	return fallback
}

// jsonInt converts a JSON number literal to an int64. The literal is an
// integer when its value is, whatever its form (10, 1.0e1 and 1E1 are all
// 10), as in JSON Schema. problem is "fraction" for a value that is not an
// integer, "large" or "small" for one out of int64's range.
func jsonInt(lit string) (i int64, problem string) {
	if v, err := strconv.ParseInt(lit, 10, 64); err == nil {
		return v, ""
	}
	neg := strings.HasPrefix(lit, "-")
	lit = strings.TrimPrefix(lit, "-")
	mant, expPart, _ := strings.Cut(strings.ToLower(lit), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	exp := -len(frac)
	if expPart != "" {
		// Exponents beyond ±10^6 only matter for zero, which any exponent
		// leaves zero, and otherwise put the value out of range or make
		// it a fraction.
		e, err := strconv.ParseInt(strings.TrimPrefix(expPart, "+"), 10, 64)
		if err != nil || e > 1e6 || e < -1e6 {
			switch {
			case digits == "":
				return 0, ""
			case strings.HasPrefix(expPart, "-"):
				return 0, "fraction"
			case neg:
				return 0, "small"
			default:
				return 0, "large"
			}
		}
		exp += int(e)
	}
	if digits == "" {
		return 0, ""
	}
	trimmed := strings.TrimRight(digits, "0")
	exp += len(digits) - len(trimmed)
	digits = trimmed
	if exp < 0 {
		return 0, "fraction"
	}
	if len(digits)+exp > 19 {
		if neg {
			return 0, "small"
		}
		return 0, "large"
	}
	n, _ := new(big.Int).SetString(digits+strings.Repeat("0", exp), 10)
	if neg {
		n.Neg(n)
	}
	if !n.IsInt64() {
		if neg {
			return 0, "small"
		}
		return 0, "large"
	}
	return n.Int64(), ""
}
