package wxpay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrAmbiguous is matched by a [TransportError] of a POST that was sent
	// but whose answer was lost (connection dropped, attempt timed out,
	// cancelled, or an unsigned 502/503/504 from a gateway): WeChat Pay may
	// have executed it. Reconcile by querying the resource before assuming
	// either outcome.
	ErrAmbiguous = errors.New("wxpay: outcome unknown: the request was sent but its answer was lost")

	// ErrInvalidArgument is matched by the error of a call refused before any
	// request was made, because an argument (a path parameter, a missing
	// identifier, a key) is unusable.
	ErrInvalidArgument = errors.New("wxpay: invalid argument")

	// ErrResponseTooLarge is matched when a response body that has to be
	// verified exceeds its size limit (1 MiB for a success, 64 KiB for an
	// error). Such a response is neither verified nor trusted.
	ErrResponseTooLarge = errors.New("wxpay: response body too large")
)

// WeChat Pay's error codes that the client and its callers decide on
// (WeChat Pay's APIv3 error-code table and the documentation of the
// cancellation endpoints). Every code is passed through as WeChat Pay sends
// it; these only name the ones code acts on. Match them with [HasCode].
const (
	CodeParamError         = "PARAM_ERROR"         // 400: a parameter is wrong
	CodeInvalidRequest     = "INVALID_REQUEST"     // 400: the request is not allowed in the resource's state
	CodeSignError          = "SIGN_ERROR"          // 401: the request's signature was refused
	CodeNoAuth             = "NO_AUTH"             // 400/403: no permission, or (confirm) not awaiting confirmation
	CodeNotFound           = "NOT_FOUND"           // 404: no such resource
	CodeRuleLimit          = "RULE_LIMIT"          // 403: refused by a business rule (confirm: 无需确认)
	CodeRateLimitExceeded  = "RATELIMIT_EXCEEDED"  // 429: slow down
	CodeFrequencyLimited   = "FREQUENCY_LIMITED"   // 429: slow down
	CodeSystemError        = "SYSTEM_ERROR"        // 500: retry with the same parameters
	CodeServiceUnavailable = "SERVICE_UNAVAILABLE" // 502/503: retry later
)

// HasCode reports whether err is, or wraps, an [*APIError] whose Code is one
// of codes.
func HasCode(err error, codes ...string) bool {
	var ae *APIError
	return errors.As(err, &ae) && slices.Contains(codes, ae.Code)
}

// Response size limits.
const (
	// MaxSuccessBody is the largest 2xx response body read.
	MaxSuccessBody = 1 << 20
	// MaxErrorBody is the largest error response body read.
	MaxErrorBody = 64 << 10
	// maxExcerpt bounds the part of a non-JSON error body kept as its message.
	maxExcerpt = 200
)

// APIError is an HTTP answer from WeChat Pay (or something in front of it)
// with a status other than 200/204: 4xx, 5xx, 3xx, and 202 ("accepted, repeat
// the same request"). Its fields come from the error body
// {"code","message","detail"}; a body that is not such JSON still yields a
// Code derived from the status (e.g. INTERNAL_SERVER_ERROR) and a Message
// holding a printable excerpt of the body.
//
// Signed reports whether the answer carried a WeChat Pay signature, which
// was then verified: an unsigned error may come from a proxy rather than
// from WeChat Pay. (A signed error whose signature does not verify is a
// [SignatureError], never an APIError.)
type APIError struct {
	StatusCode int
	Code       string
	Message    string
	Detail     json.RawMessage // the "detail" object, when present
	RequestID  string          // the Request-ID response header
	Method     string
	Path       string // request URI (escaped path and query)
	Signed     bool
}

// Error describes the answer: method, path, status, code, message, request
// id, and whether it was signed. It never includes Detail, which may echo
// request fields.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wxpay: %s %s: HTTP %d %s", e.Method, e.Path, e.StatusCode, e.Code)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	var notes []string
	if e.RequestID != "" {
		notes = append(notes, "request-id "+e.RequestID)
	}
	if !e.Signed {
		notes = append(notes, "unsigned")
	}
	if len(notes) > 0 {
		b.WriteString(" (" + strings.Join(notes, ", ") + ")")
	}
	return b.String()
}

// TransportError reports an attempt that got no usable HTTP answer: DNS,
// connect or TLS failure, a dropped connection, a timeout, a body cut short,
// or an unsigned 502/503/504 from a gateway. Sent reports whether the request
// (or any part of it) had been written; when it had not, the server cannot
// have acted on it. A sent POST matches [ErrAmbiguous].
type TransportError struct {
	Method string
	Path   string // request URI (escaped path and query)
	Host   string
	Sent   bool
	Err    error
}

// Error describes the failure: method, path, host, whether the request was
// sent, and the cause.
func (e *TransportError) Error() string {
	state := "not sent"
	if e.Sent {
		state = "sent, no answer"
	}
	return fmt.Sprintf("wxpay: %s %s via %s: %s: %v", e.Method, e.Path, e.Host, state, e.Err)
}

// Unwrap returns the underlying error.
func (e *TransportError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrAmbiguous] and the error is a sent POST.
func (e *TransportError) Is(target error) bool {
	return target == ErrAmbiguous && e.Sent && e.Method == http.MethodPost
}

// Retryable reports whether a call that failed with err may succeed when
// repeated with the same parameters: true for 5xx, 429 and 202 answers and for
// transport failures (including the ambiguous ones: WeChat Pay asks for
// retries with identical parameters); false for other 4xx, signature
// failures, oversized responses, invalid arguments, the caller's context
// ending, and anything else.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var ce *canceledError
	if errors.As(err, &ce) {
		return false
	}
	if errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrSignature) || errors.Is(err, ErrResponseTooLarge) {
		return false
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode >= 500 || ae.StatusCode == http.StatusTooManyRequests || ae.StatusCode == http.StatusAccepted
	}
	return false
}

// canceledError ends a call whose context ended. It unwraps to the context's
// error and to the error of the last attempt, if any.
type canceledError struct {
	method, path string
	ctxErr       error
	last         error
}

func (e *canceledError) Error() string {
	msg := fmt.Sprintf("wxpay: %s %s: %v", e.method, e.path, e.ctxErr)
	if e.last != nil {
		msg += "; last attempt: " + strings.TrimPrefix(e.last.Error(), "wxpay: ")
	}
	return msg
}

func (e *canceledError) Unwrap() []error {
	if e.last == nil {
		return []error{e.ctxErr}
	}
	return []error{e.ctxErr, e.last}
}

// errResentByTransport is the cause of a TransportError when net/http
// took a second connection to send a request again by itself (the
// kept-alive one closed without an answer, or an HTTP/2 stream was
// refused): with the same nonce and signature, which WeChat Pay refuses as
// a replay (401 SIGN_ERROR), and behind the retry policy's back. The
// attempt ends there, as sent without an answer, and a retry is signed
// afresh; but the copy's write races that end, so it may still reach the
// server (and be refused there: the client never reads that answer).
var errResentByTransport = errors.New("the connection closed without an answer (net/http's resend with the same nonce was cut short)")

// attemptTimeoutError is the cause of a TransportError when one attempt ran
// out of its own time (Config.AttemptTimeout) while the caller's context was
// still live. It deliberately does not match context.DeadlineExceeded.
type attemptTimeoutError struct{ limit time.Duration }

func (e *attemptTimeoutError) Error() string {
	return "no complete answer within the attempt timeout of " + e.limit.String()
}
func (e *attemptTimeoutError) Timeout() bool { return true }

// gatewayError is the cause of a TransportError for an unsigned 502/503/504:
// a proxy or load balancer answered, not WeChat Pay.
type gatewayError struct{ status int }

func (e *gatewayError) Error() string {
	return fmt.Sprintf("gateway answered %d %s without a WeChat Pay signature", e.status, http.StatusText(e.status))
}

// responseError adds the request and response context to a signature or size
// failure while keeping it matchable with errors.Is / errors.As.
type responseError struct {
	method, path, requestID string
	status                  int
	err                     error
}

func (e *responseError) Error() string {
	msg := fmt.Sprintf("wxpay: %s %s: HTTP %d: %s", e.method, e.path, e.status, strings.TrimPrefix(e.err.Error(), "wxpay: "))
	if e.requestID != "" {
		msg += " (request-id " + e.requestID + ")"
	}
	return msg
}

func (e *responseError) Unwrap() error { return e.err }

// tooLargeError is a size-limit breach; it matches ErrResponseTooLarge.
type tooLargeError struct{ limit int }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("wxpay: response body too large (limit %d bytes)", e.limit)
}
func (e *tooLargeError) Is(target error) bool { return target == ErrResponseTooLarge }

// invalidArgument returns an error matching ErrInvalidArgument.
func invalidArgument(format string, args ...any) error {
	return &argumentError{msg: fmt.Sprintf(format, args...)}
}

type argumentError struct{ msg string }

func (e *argumentError) Error() string        { return "wxpay: invalid argument: " + e.msg }
func (e *argumentError) Is(target error) bool { return target == ErrInvalidArgument }

// errorBody is the JSON body of a WeChat Pay error answer.
type errorBody struct {
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Detail  json.RawMessage `json:"detail"`
}

// newAPIError builds the APIError of an answer with status and body. A body
// that is not a JSON error object yields a code derived from the status and
// a printable excerpt of the body as the message.
func newAPIError(method, path string, status int, h http.Header, body []byte, signed bool) *APIError {
	e := &APIError{StatusCode: status, Method: method, Path: path, RequestID: requestID(h), Signed: signed}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err == nil && eb.Code != "" {
		e.Code = printable(eb.Code, 64)
		e.Message = printable(eb.Message, 1024)
		if d := bytes.TrimSpace(eb.Detail); len(d) > 0 && !bytes.Equal(d, []byte("null")) {
			e.Detail = append(json.RawMessage(nil), d...)
		}
	} else {
		e.Code = statusCode(status)
		e.Message = printable(string(body), maxExcerpt)
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if e.Message == "" {
		e.Message = "HTTP status " + strconv.Itoa(status)
	}
	return e
}

// statusCode derives an error code from an HTTP status: 500 becomes
// INTERNAL_SERVER_ERROR, an unknown status HTTP_599.
func statusCode(status int) string {
	text := http.StatusText(status)
	if text == "" {
		return "HTTP_" + strconv.Itoa(status)
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(text) {
		switch {
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-':
			b.WriteByte('_')
		}
	}
	return b.String()
}

// requestID returns the Request-ID header of an answer as errors and
// results carry it: printable and at most 128 characters, whatever a
// server (or a proxy) put there.
func requestID(h http.Header) string { return printable(h.Get(HeaderRequestID), 128) }

// printable returns s with control characters and invalid UTF-8 replaced,
// runs of white space collapsed, and at most limit runes (… marks a cut).
func printable(s string, limit int) string {
	var b strings.Builder
	n := 0
	space := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size <= 1:
			r = '?'
		case unicode.IsSpace(r):
			if space || b.Len() == 0 {
				continue
			}
			space = true
			r = ' '
		case !unicode.IsPrint(r):
			r = '?'
		}
		if r != ' ' {
			space = false
		}
		if n == limit {
			return strings.TrimRight(b.String(), " ") + "…"
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimRight(b.String(), " ")
}
