package schemas

import (
	"regexp"
	"time"
)

// The patterns of the field rules. The JSON Schemas in commands/ use exactly
// these strings (a test compares them), so Go and JSON Schema agree on every
// character. They use only syntax that Go (RE2), ECMA-262 and Python share;
// characters outside ASCII are written as themselves, not as escapes.
const (
	// IdentifierPattern is the rule for identifiers that go into a URL path
	// or a subject: sub_mchid, applyment_id, out_request_no, out_apply_no,
	// business_code (docs/interface.md, Commands).
	IdentifierPattern = `^[A-Za-z0-9_-]+$`
	// DigitsPattern is the rule for sub_mchid (a WeChat Pay merchant id).
	DigitsPattern = `^[0-9]+$`
	// AlnumPattern is the rule for the out_request_no of
	// apply-cancel-withdraw, which WeChat Pay requires to be made of letters
	// and digits only (https://pay.weixin.qq.com/doc/v3/partner/4013892756).
	AlnumPattern = `^[A-Za-z0-9]+$`
	// HanAlnumPattern is the rule for operator_identification ("支持包含大小写
	// 字母、数字和汉字"): ASCII letters and digits and the CJK ideographs —
	// CJK Unified Ideographs U+4E00–U+9FFF, Extension A U+3400–U+4DBF,
	// Compatibility Ideographs U+F900–U+FAFF and the supplementary
	// ideographic planes' extensions U+20000–U+323AF.
	HanAlnumPattern = "^[A-Za-z0-9\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF\U00020000-\U000323AF]+$"
	// RFC3339Pattern is the form of confirm_time: an RFC 3339 date-time with
	// an upper-case T, seconds 00–59 (no leap second), an optional fraction
	// of 1–9 digits and a Z or ±hh:mm offset, as 2015-05-20T13:29:35+08:00.
	// The date must also exist (no February 30).
	RFC3339Pattern = `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// NoControlPattern is the rule for free-text fields: no C0 or C1
	// control character, no DEL, no line or paragraph separator
	// (U+2028, U+2029) and no bidirectional embedding, override or isolate
	// control (U+202A–U+202E, U+2066–U+2069), any of which can forge or
	// disguise log lines and displays.
	NoControlPattern = "^[^\\x00-\\x1F\\x7F-\\x9F\u2028\u2029\u202A-\u202E\u2066-\u2069]*$"
)

var (
	identifierRE = regexp.MustCompile(IdentifierPattern)
	digitsRE     = regexp.MustCompile(DigitsPattern)
	alnumRE      = regexp.MustCompile(AlnumPattern)
	hanAlnumRE   = regexp.MustCompile(HanAlnumPattern)
	rfc3339RE    = regexp.MustCompile(RFC3339Pattern)
	noControlRE  = regexp.MustCompile(NoControlPattern)
)

// validRFC3339 reports whether s has the form of RFC3339Pattern and names a
// date that exists.
func validRFC3339(s string) bool {
	if !rfc3339RE.MatchString(s) {
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}
