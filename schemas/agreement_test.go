package schemas

import (
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSchemasMirrorStructTags checks, field by field, that every command's
// JSON Schema says what its struct's validate tags say: the same fields,
// the same required ones, maxLength/maxItems equal to max=, minimum equal
// to min=, enums equal to oneof=, and for every string the very pattern
// the Go rule uses. With the corpus this keeps the two from drifting apart.
func TestSchemasMirrorStructTags(t *testing.T) {
	for _, typ := range types {
		t.Run(string(typ), func(t *testing.T) {
			b, err := FS.ReadFile(CommandSchemaPath(typ))
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v", doc["$schema"])
			}
			m := mirror{t: t, doc: doc}
			m.object(string(typ), reflect.TypeOf(newCommand(typ)).Elem(), doc)

			if r, ok := crossRules[typ]; ok {
				key := map[string]string{RuleExactlyOneOf: "oneOf", RuleAtLeastOneOf: "anyOf"}[r.rule]
				want := []any{map[string]any{"required": []any{r.fields[0]}}, map[string]any{"required": []any{r.fields[1]}}}
				if !reflect.DeepEqual(doc[key], want) {
					t.Errorf("%s = %v, want %v", key, doc[key], want)
				}
			}
		})
	}
}

// TestApplyCancelWithdrawConditionalPayee pins the one conditional rule.
func TestApplyCancelWithdrawConditionalPayee(t *testing.T) {
	b, err := FS.ReadFile(CommandSchemaPath(TypeApplyCancelWithdraw))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		If   any `json:"if"`
		Then any `json:"then"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	wantIf := map[string]any{"required": []any{"withdraw"}, "properties": map[string]any{"withdraw": map[string]any{"const": string(ApplyWithdraw)}}}
	wantThen := map[string]any{"required": []any{"payee_info"}}
	if !reflect.DeepEqual(doc.If, wantIf) || !reflect.DeepEqual(doc.Then, wantThen) {
		t.Errorf("if = %v, then = %v", doc.If, doc.Then)
	}
	f, _ := reflect.TypeOf(ApplyCancelWithdraw{}).FieldByName("PayeeInfo")
	if got := f.Tag.Get("validate"); got != "required_if=Withdraw "+string(ApplyWithdraw) {
		t.Errorf("PayeeInfo rules = %q", got)
	}
}

type mirror struct {
	t   *testing.T
	doc map[string]any
}

// resolve follows a local $ref.
func (m mirror) resolve(s map[string]any) map[string]any {
	ref, ok := s["$ref"].(string)
	if !ok {
		return s
	}
	name, ok := strings.CutPrefix(ref, "#/$defs/")
	if !ok {
		m.t.Fatalf("unexpected $ref %q", ref)
	}
	d, _ := m.doc["$defs"].(map[string]any)[name].(map[string]any)
	if d == nil {
		m.t.Fatalf("$ref %q does not resolve", ref)
	}
	return d
}

func (m mirror) object(path string, st reflect.Type, s map[string]any) {
	t := m.t
	s = m.resolve(s)
	if s["type"] != "object" || s["additionalProperties"] != false {
		t.Errorf("%s: type %v, additionalProperties %v; want object and false", path, s["type"], s["additionalProperties"])
	}
	props, _ := s["properties"].(map[string]any)
	var names, required []string
	for i := range st.NumField() {
		f := st.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, name)
		rules := strings.Split(f.Tag.Get("validate"), ",")
		if rules[0] == "required" {
			required = append(required, name)
		}
		ps, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s.%s: not in the schema", path, name)
			continue
		}
		m.field(path+"."+name, f.Type, rules, ps)
	}
	var schemaNames []string
	for n := range props {
		schemaNames = append(schemaNames, n)
	}
	slices.Sort(names)
	slices.Sort(schemaNames)
	if !slices.Equal(names, schemaNames) {
		t.Errorf("%s: schema properties %v, struct fields %v", path, schemaNames, names)
	}
	var schemaRequired []string
	for _, r := range asSlice(s["required"]) {
		schemaRequired = append(schemaRequired, r.(string))
	}
	slices.Sort(required)
	slices.Sort(schemaRequired)
	if !slices.Equal(required, schemaRequired) {
		t.Errorf("%s: schema requires %v, struct tags %v", path, schemaRequired, required)
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// param returns the parameter of rule name= in rules, or "".
func param(rules []string, name string) string {
	for _, r := range rules {
		if v, ok := strings.CutPrefix(r, name+"="); ok {
			return v
		}
	}
	return ""
}

func number(t *testing.T, path, key string, v any) int64 {
	f, ok := v.(float64)
	if !ok {
		t.Errorf("%s: %s = %v, want a number", path, key, v)
		return -1
	}
	if f >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(f)
}

func (m mirror) field(path string, ft reflect.Type, rules []string, s map[string]any) {
	t := m.t
	// Rules before dive apply to a slice, after it to its items.
	var items []string
	if i := slices.Index(rules, "dive"); i >= 0 {
		rules, items = rules[:i], rules[i+1:]
	}
	s = m.resolve(s)
	switch ft.Kind() {
	case reflect.String:
		m.str(path, rules, s)
	case reflect.Int64:
		if s["type"] != "integer" {
			t.Errorf("%s: type %v, want integer", path, s["type"])
		}
		if min, _ := strconv.ParseInt(param(rules, "min"), 10, 64); number(t, path, "minimum", s["minimum"]) != min {
			t.Errorf("%s: minimum %v, want %d", path, s["minimum"], min)
		}
		if number(t, path, "maximum", s["maximum"]) != math.MaxInt64 {
			t.Errorf("%s: maximum %v, want %d", path, s["maximum"], int64(math.MaxInt64))
		}
	case reflect.Slice:
		if s["type"] != "array" || s["minItems"] != 1.0 {
			t.Errorf("%s: type %v, minItems %v; want array and 1", path, s["type"], s["minItems"])
		}
		if max := param(rules, "max"); strconv.FormatInt(number(t, path, "maxItems", s["maxItems"]), 10) != max {
			t.Errorf("%s: maxItems %v, want %s", path, s["maxItems"], max)
		}
		is, _ := s["items"].(map[string]any)
		if ft.Elem().Kind() == reflect.Struct {
			m.object(path+"[]", ft.Elem(), is)
		} else {
			m.str(path+"[]", slices.DeleteFunc(items, func(r string) bool { return r == "required" }), m.resolve(is))
		}
	case reflect.Pointer:
		m.object(path, ft.Elem(), s)
	default:
		t.Errorf("%s: unexpected Go kind %s", path, ft.Kind())
	}
}

// str checks a string property against its rules.
func (m mirror) str(path string, rules []string, s map[string]any) {
	t := m.t
	if s["type"] != "string" {
		t.Errorf("%s: type %v, want string", path, s["type"])
	}
	if oneof := param(rules, "oneof"); oneof != "" {
		var enum []string
		for _, e := range asSlice(s["enum"]) {
			enum = append(enum, e.(string))
		}
		if !slices.Equal(enum, strings.Fields(oneof)) {
			t.Errorf("%s: enum %v, want %v", path, enum, strings.Fields(oneof))
		}
		return
	}
	if s["minLength"] != 1.0 {
		t.Errorf("%s: minLength %v, want 1 (a field that is given is not empty)", path, s["minLength"])
	}
	if max := param(rules, "max"); strconv.FormatInt(number(t, path, "maxLength", s["maxLength"]), 10) != max {
		t.Errorf("%s: maxLength %v, want %s", path, s["maxLength"], max)
	}
	// The most specific rule is the one the schema's pattern expresses;
	// it implies the others (digits and alnum imply identifier).
	var want string
	for _, c := range []struct{ rule, pattern string }{
		{RuleDigits, DigitsPattern}, {RuleAlnum, AlnumPattern}, {RuleIdentifier, IdentifierPattern},
		{RuleHanAlnum, HanAlnumPattern}, {RuleRFC3339, RFC3339Pattern}, {RuleNoControl, NoControlPattern},
	} {
		if slices.Contains(rules, c.rule) {
			want = c.pattern
			break
		}
	}
	if want == "" {
		t.Errorf("%s: no character rule in %v; every string needs one", path, rules)
	}
	if s["pattern"] != want {
		t.Errorf("%s: pattern %q, want %q", path, s["pattern"], want)
	}
	if slices.Contains(rules, RuleRFC3339) && s["format"] != "date-time" {
		t.Errorf("%s: format %v, want date-time", path, s["format"])
	}
}
