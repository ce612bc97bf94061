package schemas

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/go-playground/validator/v10"
)

// crossRule is a rule over two alternative fields of a command.
type crossRule struct {
	rule   string    // RuleExactlyOneOf or RuleAtLeastOneOf
	fields [2]string // JSON names
}

// crossRules holds the rules over alternative fields, by command.
var crossRules = map[Type]crossRule{
	TypeQueryCancelWithdraw: {RuleExactlyOneOf, [2]string{"applyment_id", "out_request_no"}},
	TypeConfirmCancel:       {RuleAtLeastOneOf, [2]string{"applyment_id", "out_request_no"}},
	TypeCancelApplyment:     {RuleAtLeastOneOf, [2]string{"business_code", "applyment_id"}},
	TypeTrack:               {RuleExactlyOneOf, [2]string{"applyment_id", "out_apply_no"}},
	TypeUntrack:             {RuleExactlyOneOf, [2]string{"applyment_id", "out_apply_no"}},
}

// The param of a cross-field error: which way the rule is broken.
const (
	crossNeither = "neither"
	crossBoth    = "both"
)

// fieldValidator returns the validator, built once: JSON field names in
// namespaces, the custom rules and the cross-field rules registered.
var fieldValidator = sync.OnceValue(func() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	for tag, ok := range map[string]func(string) bool{
		RuleIdentifier: identifierRE.MatchString,
		RuleDigits:     digitsRE.MatchString,
		RuleAlnum:      alnumRE.MatchString,
		RuleHanAlnum:   hanAlnumRE.MatchString,
		RuleRFC3339:    validRFC3339,
		RuleNoControl:  noControlRE.MatchString,
	} {
		if err := v.RegisterValidation(tag, func(fl validator.FieldLevel) bool { return ok(fl.Field().String()) }); err != nil {
			panic(fmt.Sprintf("schemas: registering rule %s: %v", tag, err))
		}
	}
	v.RegisterStructValidation(func(sl validator.StructLevel) {
		c := sl.Current().Interface().(QueryCancelWithdraw)
		cross(sl, TypeQueryCancelWithdraw, c.ApplymentID != "", c.OutRequestNo != "")
	}, QueryCancelWithdraw{})
	v.RegisterStructValidation(func(sl validator.StructLevel) {
		c := sl.Current().Interface().(ConfirmCancel)
		cross(sl, TypeConfirmCancel, c.ApplymentID != "", c.OutRequestNo != "")
	}, ConfirmCancel{})
	v.RegisterStructValidation(func(sl validator.StructLevel) {
		c := sl.Current().Interface().(CancelApplyment)
		cross(sl, TypeCancelApplyment, c.BusinessCode != "", c.ApplymentID != 0)
	}, CancelApplyment{})
	v.RegisterStructValidation(func(sl validator.StructLevel) {
		c := sl.Current().Interface().(Track)
		cross(sl, TypeTrack, c.ApplymentID != "", c.OutApplyNo != "")
	}, Track{})
	v.RegisterStructValidation(func(sl validator.StructLevel) {
		c := sl.Current().Interface().(Untrack)
		cross(sl, TypeUntrack, c.ApplymentID != "", c.OutApplyNo != "")
	}, Untrack{})
	return v
})

// cross checks the cross-field rule of t given which of its two fields are
// set, and reports a broken one.
func cross(sl validator.StructLevel, t Type, first, second bool) {
	r := crossRules[t]
	switch {
	case !first && !second:
		sl.ReportError(nil, "", "", r.rule, crossNeither)
	case first && second && r.rule == RuleExactlyOneOf:
		sl.ReportError(nil, "", "", r.rule, crossBoth)
	}
}

// goNames maps the Go names of command fields to their JSON names, for
// messages about conditions (required_if) that name a Go field.
var goNames = sync.OnceValue(func() map[string]string {
	m := make(map[string]string)
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			m[f.Name] = name
			walk(f.Type)
		}
	}
	for _, t := range types {
		walk(reflect.TypeOf(newCommand(t)))
	}
	return m
})

// validateFields runs the field rules on a decoded command and returns
// their violations, leaving out those about fields in skip (which already
// have a decoding violation) and about anything below them.
func validateFields(t Type, cmd Command, skip map[string]bool) []Violation {
	err := fieldValidator().Struct(cmd)
	if err == nil {
		return nil
	}
	var fes validator.ValidationErrors
	if !errors.As(err, &fes) {
		// Only an invalid argument (not a struct) gets here: a bug.
		panic(fmt.Sprintf("schemas: validating a %s command: %v", t, err))
	}
	var vs []Violation
	for _, fe := range fes {
		path := fe.Namespace()
		if _, rest, ok := strings.Cut(path, "."); ok {
			path = rest
		} else {
			path = ""
		}
		if fe.Tag() == RuleExactlyOneOf || fe.Tag() == RuleAtLeastOneOf {
			r := crossRules[t]
			if skip[r.fields[0]] || skip[r.fields[1]] {
				continue
			}
			vs = append(vs, crossViolation(path, r, fe.Param()))
			continue
		}
		if skipped(path, skip) {
			continue
		}
		vs = append(vs, fieldViolation(path, fe))
	}
	return vs
}

// skipped reports whether path or one of its ancestors is in skip.
func skipped(path string, skip map[string]bool) bool {
	for {
		if skip[path] {
			return true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return false
		}
		path = path[:i]
	}
}

func crossViolation(path string, r crossRule, param string) Violation {
	pair := r.fields[0] + " and " + r.fields[1]
	var msg string
	switch {
	case r.rule == RuleExactlyOneOf && param == crossBoth:
		msg = "exactly one of " + pair + " must be given, not both"
	case r.rule == RuleExactlyOneOf:
		msg = "exactly one of " + pair + " must be given; neither is"
	default:
		msg = "at least one of " + pair + " must be given; neither is"
	}
	return Violation{Field: path, Rule: r.rule, Message: msg}
}

// fieldViolation translates one validator error; the message names the
// field and the limit, never the value.
func fieldViolation(path string, fe validator.FieldError) Violation {
	kind := fe.Kind()
	switch fe.Tag() {
	case "required":
		if strings.HasSuffix(path, "]") { // an array item
			return Violation{path, RuleRequired, path + " must not be empty"}
		}
		return Violation{path, RuleRequired, path + " is required"}
	case "required_if":
		cond, value, _ := strings.Cut(fe.Param(), " ")
		if n := goNames()[cond]; n != "" {
			cond = n
		}
		return Violation{path, RuleRequired, fmt.Sprintf("%s is required when %s is %s", path, cond, value)}
	case "max":
		return Violation{path, RuleMax, path + " must " + limit("at most", fe.Param(), kind)}
	case "min":
		return Violation{path, RuleMin, path + " must " + limit("at least", fe.Param(), kind)}
	case "oneof":
		return Violation{path, RuleEnum, path + " must be one of " + strings.Join(strings.Fields(fe.Param()), ", ")}
	case RuleIdentifier:
		return Violation{path, RuleIdentifier, path + " must consist of the characters A-Z, a-z, 0-9, _ and - only"}
	case RuleDigits:
		return Violation{path, RuleDigits, path + " must consist of the digits 0-9 only"}
	case RuleAlnum:
		return Violation{path, RuleAlnum, path + " must consist of the letters A-Z, a-z and the digits 0-9 only"}
	case RuleHanAlnum:
		return Violation{path, RuleHanAlnum, path + " must consist of the letters A-Z, a-z, the digits 0-9 and Chinese (Han) characters only"}
	case RuleRFC3339:
		return Violation{path, RuleRFC3339, path + " must be an RFC 3339 date-time such as 2015-05-20T13:29:35+08:00"}
	case RuleNoControl:
		return Violation{path, RuleNoControl, path + " must not contain control, line-separator or bidirectional-override characters"}
	}
	return Violation{path, fe.Tag(), fmt.Sprintf("%s breaks the rule %s", path, fe.Tag())}
}

// limit words a max or min limit for the kind of value it bounds.
func limit(bound, n string, kind reflect.Kind) string {
	switch kind {
	case reflect.String:
		unit := "characters"
		if n == "1" {
			unit = "character"
		}
		return "be " + bound + " " + n + " " + unit + " long"
	case reflect.Slice, reflect.Array, reflect.Map:
		unit := "items"
		if n == "1" {
			unit = "item"
		}
		return "have " + bound + " " + n + " " + unit
	}
	return "be " + bound + " " + n
}
