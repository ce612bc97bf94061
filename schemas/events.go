package schemas

import (
	"slices"
	"strings"
)

// Outcome is how a command ended: the last token of an outcome event's
// subject and type (docs/interface.md, Outcome events).
type Outcome string

// The outcomes. Every command id gets exactly one outcome event.
const (
	// Succeeded: WeChat Pay answered 2xx with a valid signature, or a query
	// proved that the command took effect (data.reconciled is true).
	Succeeded Outcome = "succeeded"
	// Failed: a non-retryable WeChat Pay error, a response whose signature
	// does not verify, or retries exhausted.
	Failed Outcome = "failed"
	// Rejected: the command itself is invalid; no request was sent.
	Rejected Outcome = "rejected"
)

// Outcomes returns every outcome. The slice is the caller's to modify.
func Outcomes() []Outcome { return []Outcome{Succeeded, Failed, Rejected} }

// The error codes of failed and rejected outcomes that are the service's
// own; every other code is WeChat Pay's (PARAM_ERROR, NO_AUTH, NOT_FOUND,
// RULE_LIMIT, SYSTEM_ERROR, …).
const (
	// CodeInvalidCommand is the code of every rejected outcome.
	CodeInvalidCommand = "INVALID_COMMAND"
	// CodeResponseSignatureInvalid: a response's signature was missing,
	// wrong, expired, or a WECHATPAY/SIGNTEST/ probe.
	CodeResponseSignatureInvalid = "RESPONSE_SIGNATURE_INVALID"
	// CodeTransportError: no HTTP answer within the retry budget.
	CodeTransportError = "TRANSPORT_ERROR"
)

// Resource is a kind of WeChat Pay resource whose state changes are
// published (docs/interface.md, Status-change events).
type Resource string

// The resources.
const (
	// ResourceMerchant: key sub_mchid, state
	// "<merchant_state>/<validate_result>" (NORMAL/ALLOW_CANCEL_WITHDRAW).
	ResourceMerchant Resource = "merchant"
	// ResourceCancelWithdraw: key applyment_id, state cancel_state.
	ResourceCancelWithdraw Resource = "cancel-withdraw"
	// ResourceCancelApplication: key out_apply_no, state cancel_state.
	ResourceCancelApplication Resource = "cancel-application"
	// ResourceApplyment: key business_code, else applyment_id; state
	// CANCELED after a successful cancel-applyment.
	ResourceApplyment Resource = "applyment"
)

var resources = []Resource{ResourceMerchant, ResourceCancelWithdraw, ResourceCancelApplication, ResourceApplyment}

// Resources returns every resource. The slice is the caller's to modify.
func Resources() []Resource { return slices.Clone(resources) }

// TrackedResources returns the resources that lifecycle tracking follows
// (docs/interface.md, Lifecycle tracking). The slice is the caller's to
// modify.
func TrackedResources() []Resource { return slices.Clone(trackedResources) }

var trackedResources = []Resource{ResourceCancelWithdraw, ResourceCancelApplication}

// Tracked reports whether lifecycle tracking follows resources of kind r.
func (r Resource) Tracked() bool { return slices.Contains(trackedResources, r) }

// Final reports whether state, as a status-change event of r writes it, is
// one a resource never leaves: cancel-withdraw REJECTED, REVOKED and FINISH
// (the cancel_state, whatever withdraw_state follows it), cancel-application
// REJECTED and CANCEL_SUCCESS. Resources that are not tracked have no final
// state.
func (r Resource) Final(state string) bool {
	cancelState, _, _ := strings.Cut(state, "/")
	switch r {
	case ResourceCancelWithdraw:
		return cancelState == "REJECTED" || cancelState == "REVOKED" || cancelState == "FINISH"
	case ResourceCancelApplication:
		return state == "REJECTED" || state == "CANCEL_SUCCESS"
	}
	return false
}

// EndReason is why the tracking of a resource ended.
type EndReason string

// The reasons tracking ends.
const (
	// EndFinal: a final state was seen.
	EndFinal EndReason = "final"
	// EndNotFound: three polls in a row were answered 404 NOT_FOUND.
	EndNotFound EndReason = "not_found"
	// EndUntracked: an untrack command ended it.
	EndUntracked EndReason = "untracked"
	// EndExpired: WXCANCEL_TRACK_HORIZON passed since it started.
	EndExpired EndReason = "expired"
)

// EndReasons returns every reason. The slice is the caller's to modify.
func EndReasons() []EndReason { return []EndReason{EndFinal, EndNotFound, EndUntracked, EndExpired} }

// Event attributes and headers shared by every event.
const (
	// SpecVersion is the CloudEvents specversion of every event.
	SpecVersion = "1.0"
	// DataContentType is the datacontenttype attribute of every event.
	DataContentType = "application/json"
	// EventContentType is the Content-Type header of every event message
	// (CloudEvents structured JSON mode).
	EventContentType = "application/cloudevents+json"
	// EventTypeStatusChanged is the type of every status-change event.
	EventTypeStatusChanged = "wxpay.status.changed"
	// EventTypeTrackingEnded is the type of the event that ends the
	// tracking of a resource.
	EventTypeTrackingEnded = "wxpay.tracking.ended"
	// EventTypePrefix starts the type of every event: outcome events are
	// wxpay.<command type>.<outcome>.
	EventTypePrefix = "wxpay."
	// SourcePrefix starts the source of every event: wxcancel/<WXPAY_MCHID>.
	SourcePrefix = "wxcancel/"
)

// The headers of a dead-lettered command, added to the original command's
// headers on <prefix>.dlq.<type> (docs/interface.md, Dead letters).
const (
	// HeaderCommandID holds the command id.
	HeaderCommandID = "Wxcancel-Command-Id"
	// HeaderCommandType holds the command type.
	HeaderCommandType = "Wxcancel-Command-Type"
	// HeaderErrorCode holds the error code of the command's failed outcome.
	HeaderErrorCode = "Wxcancel-Error-Code"
	// HeaderErrorMessage holds the error message of the failed outcome.
	HeaderErrorMessage = "Wxcancel-Error-Message"
	// HeaderDeliveries holds the number of deliveries, in decimal.
	HeaderDeliveries = "Wxcancel-Deliveries"
)

// CopyCommandHeaders copies the headers of a command (src) into dst, but for
// NATS's own control headers (Nats-Msg-Id, Nats-Expected-Stream, …) and
// those whose name starts with skip (when skip is not empty). The control
// headers were meant for the command's own publication: on a copy published
// elsewhere (a dead letter, a replay) they would make JetStream refuse it,
// or drop it as a duplicate. Values are copied, not shared.
func CopyCommandHeaders(dst, src map[string][]string, skip string) {
	for k, v := range src {
		if strings.HasPrefix(k, "Nats-") || skip != "" && strings.HasPrefix(k, skip) {
			continue
		}
		dst[k] = append([]string(nil), v...)
	}
}
