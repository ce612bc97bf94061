package schemas_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/schemas"
)

// example is one entry of the corpus in testdata/commands: a command body
// and what Parse must say of it.
//
// The body is given as JSON (body), as exact text (raw), or as bytes
// (raw_base64, for text that is not UTF-8); pad_to appends spaces up to that
// length. violations lists the field and rule of every violation Parse
// must report (none: the body is valid). go_only marks a refusal that JSON
// Schema cannot express (size, UTF-8, unpaired surrogates, duplicate keys):
// there, and only there, the JSON Schema accepts what Parse refuses.
type example struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Body       json.RawMessage `json:"body"`
	Raw        *string         `json:"raw"`
	RawBase64  string          `json:"raw_base64"`
	PadTo      int             `json:"pad_to"`
	Violations []fieldRule     `json:"violations"`
	GoOnly     bool            `json:"go_only"`
	Note       string          `json:"note"`

	file string
}

type fieldRule struct {
	Field string `json:"field"`
	Rule  string `json:"rule"`
}

func (e example) bytes(t *testing.T) []byte {
	t.Helper()
	var b []byte
	switch {
	case e.Raw != nil:
		b = []byte(*e.Raw)
	case e.RawBase64 != "":
		var err error
		if b, err = base64.StdEncoding.DecodeString(e.RawBase64); err != nil {
			t.Fatalf("%s: raw_base64: %v", e.file, err)
		}
	case e.Body != nil:
		b = []byte(e.Body)
	default:
		t.Fatalf("%s: %q has no body", e.file, e.Name)
	}
	if e.PadTo > 0 {
		if e.PadTo < len(b) {
			t.Fatalf("%s: %q: pad_to %d is shorter than the body", e.file, e.Name, e.PadTo)
		}
		b = append(b, bytes.Repeat([]byte(" "), e.PadTo-len(b))...)
	}
	return b
}

// loadCorpus reads every file of testdata/commands.
func loadCorpus(t testing.TB) []example {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "commands", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus in testdata/commands: %v", err)
	}
	var all []example
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var es []example
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&es); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for i := range es {
			es[i].file = filepath.Base(f)
		}
		all = append(all, es...)
	}
	return all
}

// TestCorpus runs every example through Parse and through the JSON Schema
// of its type. Parse must report exactly the expected violations, and the
// two must agree on every example but the go_only ones.
func TestCorpus(t *testing.T) {
	for _, e := range loadCorpus(t) {
		t.Run(e.file+"/"+e.Name, func(t *testing.T) {
			body := e.bytes(t)
			cmd, err := schemas.Parse(e.Type, body)

			var got []fieldRule
			if err != nil {
				var inv *schemas.InvalidError
				if !errors.As(err, &inv) {
					t.Fatalf("Parse error %T is not an *InvalidError: %v", err, err)
				}
				if len(inv.Violations) == 0 {
					t.Fatal("an InvalidError without violations")
				}
				for _, v := range inv.Violations {
					got = append(got, fieldRule{v.Field, v.Rule})
					if v.Message == "" {
						t.Errorf("violation %+v has no message", v)
					}
				}
				assertNoEcho(t, body, err.Error())
			} else if cmd == nil {
				t.Fatal("Parse returned neither a command nor an error")
			}
			want := slices.Clone(e.Violations)
			sortFieldRules(want)
			sortFieldRules(got)
			if !slices.Equal(got, want) {
				t.Errorf("violations = %v, want %v (error: %v)", got, want, err)
			}

			if !schemas.Type(e.Type).Known() {
				if !errors.Is(schemas.ValidateCommandJSON(schemas.Type(e.Type), body), schemas.ErrUnknownType) {
					t.Error("ValidateCommandJSON does not refuse the unknown type")
				}
				return
			}
			serr := schemas.ValidateCommandJSON(schemas.Type(e.Type), body)
			switch {
			case e.GoOnly && (err == nil || serr != nil):
				t.Errorf("go_only example: Parse error %v, JSON Schema error %v; want only Parse to refuse", err, serr)
			case !e.GoOnly && (err == nil) != (serr == nil):
				t.Errorf("Parse and JSON Schema disagree: Parse error %v, JSON Schema error %v", err, serr)
			}
			if serr != nil {
				var se *schemas.SchemaError
				if !errors.As(serr, &se) || len(se.Problems) == 0 {
					t.Errorf("JSON Schema error %T %v is not an *SchemaError with problems", serr, serr)
				}
				assertNoEcho(t, body, serr.Error())
			}

			if err == nil {
				assertRoundTrip(t, schemas.Type(e.Type), cmd)
			}
		})
	}
}

// TestCorpusCoversEveryRule guards the corpus: every command type has at
// least eight examples, valid and invalid ones, and together they exercise
// every rule Parse can report.
func TestCorpusCoversEveryRule(t *testing.T) {
	perType := map[string][2]int{} // valid, invalid
	rules := map[string]bool{}
	for _, e := range loadCorpus(t) {
		n := perType[e.Type]
		if len(e.Violations) == 0 {
			n[0]++
		} else {
			n[1]++
		}
		perType[e.Type] = n
		for _, v := range e.Violations {
			rules[v.Rule] = true
		}
	}
	for _, typ := range schemas.Types() {
		if n := perType[string(typ)]; n[0] < 2 || n[1] < 6 || n[0]+n[1] < 8 {
			t.Errorf("%s: %d valid and %d invalid examples; want at least 2, 6 and 8 in all", typ, n[0], n[1])
		}
	}
	for _, r := range []string{
		schemas.RuleRequired, schemas.RuleMax, schemas.RuleMin, schemas.RuleIdentifier, schemas.RuleDigits,
		schemas.RuleAlnum, schemas.RuleHanAlnum, schemas.RuleRFC3339, schemas.RuleEnum, schemas.RuleNoControl,
		schemas.RuleExactlyOneOf, schemas.RuleAtLeastOneOf, schemas.RuleUnknownField, schemas.RuleDuplicateKey,
		schemas.RuleType, schemas.RuleJSON, schemas.RuleUTF8, schemas.RuleSize, schemas.RuleTrailingData,
		schemas.RuleUnknownType,
	} {
		if !rules[r] {
			t.Errorf("no example breaks the rule %s", r)
		}
	}
}

func sortFieldRules(fs []fieldRule) {
	slices.SortFunc(fs, func(a, b fieldRule) int {
		return strings.Compare(a.Field+"\x00"+a.Rule, b.Field+"\x00"+b.Rule)
	})
}

// assertRoundTrip checks that an accepted command encodes to a body that is
// accepted again, as the same command, by Parse and by the JSON Schema.
func assertRoundTrip(t testing.TB, typ schemas.Type, cmd schemas.Command) {
	t.Helper()
	if cmd.CommandType() != typ {
		t.Errorf("CommandType() = %s, want %s", cmd.CommandType(), typ)
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatalf("encoding the command: %v", err)
	}
	again, err := schemas.Parse(string(typ), b)
	if err != nil {
		t.Fatalf("the re-encoded command is refused: %v", err)
	}
	if !reflect.DeepEqual(again, cmd) {
		t.Errorf("the re-encoded command decodes differently:\n got %#v\nwant %#v", again, cmd)
	}
	if err := schemas.ValidateCommandJSON(typ, b); err != nil {
		t.Errorf("the re-encoded command does not match its JSON Schema: %v", err)
	}
}

// assertNoEcho checks that msg repeats no string value of body longer than
// four bytes (values a message could quote); enum values are exempt, since
// messages name the allowed ones.
func assertNoEcho(t testing.TB, body []byte, msg string) {
	t.Helper()
	var v any
	if json.Unmarshal(body, &v) != nil {
		return
	}
	exempt := map[string]bool{
		"APPLY_WITHDRAW": true, "NOT_APPLY_WITHDRAW": true,
		"ACCOUNT_TYPE_CORPORATE": true, "ACCOUNT_TYPE_PERSONAL": true,
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if len(v) > 4 && !exempt[v] && strings.Contains(msg, v) {
				t.Errorf("the message repeats the value %q: %s", v, msg)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
}

// TestSchemaExamples checks that the examples embedded in the command
// schemas are valid commands.
func TestSchemaExamples(t *testing.T) {
	for _, typ := range schemas.Types() {
		b, err := schemas.FS.ReadFile(schemas.CommandSchemaPath(typ))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Examples []json.RawMessage `json:"examples"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.Examples) == 0 {
			t.Errorf("%s has no examples", typ)
		}
		for i, ex := range doc.Examples {
			if _, err := schemas.Parse(string(typ), ex); err != nil {
				t.Errorf("%s example %d: %v", typ, i, err)
			}
			if err := schemas.ValidateCommandJSON(typ, ex); err != nil {
				t.Errorf("%s example %d: %v", typ, i, err)
			}
		}
	}
}

func ExampleParse() {
	_, err := schemas.Parse("confirm-cancel", []byte(`{
		"applyment_id": "X202410241010125346",
		"sub_mchid": "1900000109",
		"operator_identification": "id 1102",
		"confirm_time": "2015-05-20 13:29:35",
		"cancel_contract_version": "V20241213"
	}`))
	var invalid *schemas.InvalidError
	if errors.As(err, &invalid) {
		for _, v := range invalid.Violations {
			fmt.Printf("%s %s: %s\n", v.Field, v.Rule, v.Message)
		}
	}
	// Output:
	// confirm_time rfc3339: confirm_time must be an RFC 3339 date-time such as 2015-05-20T13:29:35+08:00
	// operator_identification han_alnum: operator_identification must consist of the letters A-Z, a-z, the digits 0-9 and Chinese (Han) characters only
}
