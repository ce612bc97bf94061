package schemas_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/schemas"
)

// goOnlyRules are the refusals JSON Schema cannot express.
var goOnlyRules = []string{schemas.RuleSize, schemas.RuleUTF8, schemas.RuleDuplicateKey}

// FuzzParse feeds arbitrary bodies to Parse, for every command type. Parse
// must never panic; a refusal is an *InvalidError with sorted, complete
// violations; an accepted body re-encodes to one that is accepted again as
// the same command; and Parse and the JSON Schema agree: what Parse
// accepts the schema accepts, and what Parse refuses for any reason but a
// Go-only one the schema refuses too.
func FuzzParse(f *testing.F) {
	for _, e := range loadCorpus(f) {
		var body []byte
		switch {
		case e.Raw != nil:
			body = []byte(*e.Raw)
		case e.Body != nil:
			body = e.Body
		default:
			continue
		}
		for i, typ := range schemas.Types() {
			if string(typ) == e.Type {
				f.Add(uint8(i), body)
			}
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		types := schemas.Types()
		typ := types[int(which)%len(types)]
		cmd, err := schemas.Parse(string(typ), body)
		serr := schemas.ValidateCommandJSON(typ, body)
		if err == nil {
			if cmd == nil {
				t.Fatal("neither a command nor an error")
			}
			if serr != nil {
				t.Fatalf("Parse accepts what the JSON Schema refuses: %v\nbody: %q", serr, body)
			}
			assertRoundTrip(t, typ, cmd)
			return
		}
		var inv *schemas.InvalidError
		if !errors.As(err, &inv) || len(inv.Violations) == 0 || cmd != nil {
			t.Fatalf("refusal %T %v with command %v", err, err, cmd)
		}
		if !slices.IsSortedFunc(inv.Violations, func(a, b schemas.Violation) int {
			return strings.Compare(a.Field+"\x00"+a.Rule+"\x00"+a.Message, b.Field+"\x00"+b.Rule+"\x00"+b.Message)
		}) {
			t.Fatalf("violations not sorted: %v", inv.Violations)
		}
		goOnly := false
		for _, v := range inv.Violations {
			if v.Rule == "" || v.Message == "" {
				t.Fatalf("incomplete violation %+v", v)
			}
			goOnly = goOnly || slices.Contains(goOnlyRules, v.Rule)
		}
		if !goOnly && serr == nil {
			t.Fatalf("the JSON Schema accepts what Parse refuses: %v\nbody: %q", err, body)
		}
	})
}
