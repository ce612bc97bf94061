package schemas

import (
	"errors"
	"strconv"
	"strings"
)

// The rules a [Violation] names. They are stable: other services may match
// on them.
const (
	// RuleRequired: a required field is missing or empty.
	RuleRequired = "required"
	// RuleMax: a string has more characters (Unicode code points), an array
	// more items, or an integer a greater value than allowed.
	RuleMax = "max"
	// RuleMin: a field that was given is empty ("" or []) or an integer is
	// below its minimum. An optional field is left out, never sent empty.
	RuleMin = "min"
	// RuleIdentifier: an identifier that goes into a URL path or a subject
	// has a character outside [A-Za-z0-9_-].
	RuleIdentifier = "identifier"
	// RuleDigits: sub_mchid has a character other than 0-9.
	RuleDigits = "digits"
	// RuleAlnum: a field has a character other than A-Z, a-z and 0-9.
	RuleAlnum = "alnum"
	// RuleHanAlnum: operator_identification has a character other than
	// A-Z, a-z, 0-9 and Han (CJK ideographs).
	RuleHanAlnum = "han_alnum"
	// RuleRFC3339: confirm_time is not an RFC 3339 date-time of the form
	// 2015-05-20T13:29:35+08:00.
	RuleRFC3339 = "rfc3339"
	// RuleEnum: a field is not one of its allowed values.
	RuleEnum = "enum"
	// RuleNoControl: a free-text field contains a control character (see
	// NoControlPattern).
	RuleNoControl = "no_control"
	// RuleExactlyOneOf: not exactly one of two alternative fields is given
	// (Field is the object holding them, "" for the body).
	RuleExactlyOneOf = "exactly_one_of"
	// RuleAtLeastOneOf: neither of two alternative fields is given (Field is
	// the object holding them, "" for the body).
	RuleAtLeastOneOf = "at_least_one_of"
	// RuleUnknownField: the body has a field the command does not define.
	RuleUnknownField = "unknown_field"
	// RuleDuplicateKey: an object has the same key twice.
	RuleDuplicateKey = "duplicate_key"
	// RuleType: a value has the wrong JSON type (null included), or the
	// body is not a JSON object.
	RuleType = "type"
	// RuleJSON: the body is not valid JSON.
	RuleJSON = "json"
	// RuleUTF8: the body is not valid UTF-8, or has an unpaired UTF-16
	// surrogate escape (\ud800–\udfff) that would decode to U+FFFD.
	RuleUTF8 = "utf8"
	// RuleSize: the body is longer than MaxCommandSize bytes.
	RuleSize = "size"
	// RuleTrailingData: there is more than white space after the JSON
	// object.
	RuleTrailingData = "trailing_data"
	// RuleUnknownType: the command type is not one of Types().
	RuleUnknownType = "unknown_type"
	// RuleTrackingOff: a track or untrack command came to a service whose
	// lifecycle tracking is off (WXCANCEL_TRACK=false). The service's own
	// rule, not Parse's.
	RuleTrackingOff = "tracking_off"
)

// ErrUnknownType is matched (errors.Is) by the error of [Parse] and of
// [ValidateCommandJSON] for a command type that is not one of [Types]. The
// error is also an [*InvalidError] with one violation of rule
// [RuleUnknownType].
var ErrUnknownType = errors.New("unknown command type")

// Violation is one reason a command is invalid.
type Violation struct {
	// Field is the JSON field name, a dotted path for nested fields with
	// indexes for array items (payee_info.bank_account_info.account_number,
	// proof_medias[0].proof_media), or "" for the body as a whole.
	Field string `json:"field"`
	// Rule is one of the Rule constants.
	Rule string `json:"rule"`
	// Message says what is wrong in words. It names fields and limits but
	// never contains a value of the command.
	Message string `json:"message"`
}

// InvalidError is the error of [Parse] for a command that is refused: an
// unknown type, a body that is not acceptable JSON, or one that breaks field
// rules. Violations lists every problem found, sorted by Field, then Rule,
// then Message.
type InvalidError struct {
	// Type is the command type as it was given.
	Type string
	// Violations is never empty.
	Violations []Violation

	cause error // ErrUnknownType or nil
}

// Error returns one line naming every violation.
func (e *InvalidError) Error() string {
	var b strings.Builder
	if errors.Is(e.cause, ErrUnknownType) {
		b.WriteString("invalid command: ")
	} else {
		b.WriteString("invalid ")
		b.WriteString(e.Type)
		b.WriteString(" command: ")
	}
	for i, v := range e.Violations {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(v.Message)
	}
	return b.String()
}

// Unwrap returns ErrUnknownType for an unknown command type, nil otherwise.
func (e *InvalidError) Unwrap() error { return e.cause }

// unknownTypeError is the error for a command type that is not known.
func unknownTypeError(t string) *InvalidError {
	names := make([]string, len(types))
	for i, k := range types {
		names[i] = string(k)
	}
	return &InvalidError{
		Type: t,
		Violations: []Violation{{Field: "", Rule: RuleUnknownType,
			Message: "command type " + quoteName(t) + " is not one of " + strings.Join(names, ", ")}},
		cause: ErrUnknownType,
	}
}

// quoteName quotes a name taken from input (a command type, a JSON key) for
// a message: ASCII-only, at most 64 bytes of it.
func quoteName(s string) string {
	const limit = 64
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8RuneStart(s[cut]) {
			cut--
		}
		return strconv.QuoteToASCII(s[:cut]) + "…"
	}
	return strconv.QuoteToASCII(s)
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
