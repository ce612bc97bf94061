// Package schemas is wxcancel's wire contract: the Go types of the commands
// other services publish on <prefix>.cmd.<type>, their strict decoding and
// validation ([Parse]), and the machine-readable contract embedded in [FS]:
// a JSON Schema (draft 2020-12) per command type, the CloudEvents envelopes
// of outcome and status-change events, and an AsyncAPI 3.0.0 document of
// the subjects. It depends on no other package of the project; the consumer
// maps its types onto the WeChat Pay client's.
//
// # Commands
//
// [Parse] turns a command body into a [Command] (*[ValidateCancel],
// *[QueryCancelWithdraw], *[ConfirmCancel], *[QueryCancelApplication],
// *[CancelApplyment] or *[ApplyCancelWithdraw]) or refuses it with an
// [*InvalidError] listing every [Violation] at once: the JSON field (a
// dotted path such as payee_info.bank_account_info.account_number, "" for
// the body), a stable rule name (the Rule constants) and a message that
// never repeats a value of the command.
//
// The field rules are the struct tags of the command types
// (go-playground/validator), taken from WeChat Pay's documentation of each
// endpoint: string(N) becomes max=N, counted in characters (Unicode code
// points), not bytes; 必填 becomes required. On top of them:
//
//   - identifiers that go into a URL path or a subject (sub_mchid,
//     applyment_id, out_request_no, out_apply_no, business_code) match
//     [IdentifierPattern]; sub_mchid is digits only; the out_request_no of
//     apply-cancel-withdraw letters and digits only;
//   - operator_identification is letters, digits and Han characters
//     ([HanAlnumPattern]); confirm_time an RFC 3339 date-time
//     ([RFC3339Pattern]) of at most 32 characters;
//   - free text refuses control characters ([NoControlPattern]);
//   - a field that is given must have a value: null, "" and [] are refused
//     (rules type and min) instead of being read as "not given", so that
//     a mistake in the sender never silently changes what is requested;
//   - query-cancel-withdraw takes exactly one of applyment_id and
//     out_request_no; confirm-cancel at least one of them; cancel-applyment
//     at least one of business_code and applyment_id (a JSON integer ≥ 1);
//     apply-cancel-withdraw requires payee_info when withdraw is
//     APPLY_WITHDRAW.
//
// The limits WeChat Pay does not document for apply-cancel-withdraw are
// chosen here and written in [ApplyCancelWithdraw]'s documentation.
//
// # JSON Schema and Go agree
//
// The JSON Schemas express the same rules with the same patterns, and the
// tests hold them to it: a corpus of examples (testdata/commands) is
// accepted and refused alike by both, a test compares every schema keyword
// with the struct tags, and a fuzz test checks that whatever Parse accepts
// the schema accepts, and whatever Parse refuses for a reason JSON Schema
// can express the schema refuses. The refusals only Parse makes, because
// JSON Schema sees decoded JSON: bodies over [MaxCommandSize] bytes,
// invalid UTF-8, unpaired UTF-16 surrogate escapes (which decoding turns
// into U+FFFD) and duplicate object keys (of which decoding keeps one).
//
// [ValidateCommandJSON] and [ValidateEventJSON] apply the embedded schemas,
// compiled once, with format assertions on.
//
// # Events
//
// Outcome events (wxpay.<type>.<outcome>, one per command id) and
// status-change events (wxpay.status.changed) are CloudEvents 1.0 in
// structured JSON mode; events/outcome.json and events/status.json define
// them, and [Outcome], [Resource] and the Code constants name their values.
// The dead-letter header names, the encoding of names into subject tokens
// and KV keys ([EncodeToken]) and the checks of what may travel in a header
// ([HeaderSafe], [ValidTraceparent]) live here too, so that every package
// of the service speaks of them with one word.
package schemas
