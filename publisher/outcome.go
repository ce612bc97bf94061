package publisher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/wxcancel/wxcancel/schemas"
)

// OutcomeData is the data of an outcome event. [Publisher.NewOutcome] writes
// it in the shape of the outcome (docs/interface.md, Outcome events):
//
//	succeeded: {command_id, command_type, attempts, result, reconciled?}
//	failed:    {command_id, command_type, attempts, error: {code, message, http_status, detail?, request_id?}}
//	rejected:  {command_id, command_type, attempts: 0, error: {code: "INVALID_COMMAND", message, violations: [...]}}
//
// The JSON tags serve storing the value elsewhere (empty fields omitted); the
// event's data always has the exact shape above.
type OutcomeData struct {
	// CommandID is the command's id; NewOutcome fills it in when empty.
	CommandID string `json:"command_id"`
	// CommandType is the command's type; NewOutcome fills it in when empty.
	CommandType string `json:"command_type"`
	// Attempts counts the HTTP requests made for the command over all its
	// deliveries; 0 for rejected.
	Attempts int `json:"attempts"`
	// Result is the response body (succeeded only); empty means JSON null,
	// as for a 204 answer.
	Result json.RawMessage `json:"result,omitempty"`
	// Reconciled marks a succeeded outcome proven by a query after the
	// command's own answer was lost; written only when true.
	Reconciled bool `json:"reconciled,omitempty"`
	// Error describes a failed or rejected outcome; nil for succeeded.
	Error *ErrorData `json:"error,omitempty"`
	// Replay counts how often the command was replayed from the dead-letter
	// stream (`wxcancel dlq replay`). It is not part of the data: it makes
	// the event id of a replay's outcome "outcome/<id>/replay-<n>", so that
	// JetStream does not drop it as a duplicate of the first outcome.
	Replay int `json:"-"`
}

// ErrorData is the error of a failed or rejected outcome.
type ErrorData struct {
	// Code is WeChat Pay's error code or one of the service's own
	// (RESPONSE_SIGNATURE_INVALID, TRANSPORT_ERROR, INVALID_COMMAND).
	Code string `json:"code"`
	// Message is a human-readable description.
	Message string `json:"message"`
	// HTTPStatus is the HTTP status of the last answer, 0 when there was
	// none (failed only; always written for failed).
	HTTPStatus int `json:"http_status,omitempty"`
	// Detail is WeChat Pay's error detail object, when it sent one (failed
	// only).
	Detail json.RawMessage `json:"detail,omitempty"`
	// RequestID is WeChat Pay's Request-ID of the answer, when known (failed
	// only).
	RequestID string `json:"request_id,omitempty"`
	// Violations lists why a command was rejected (rejected only; always
	// written for rejected, as an array).
	Violations []schemas.Violation `json:"violations,omitempty"`
}

// The wire shapes of the outcome data, one per outcome.
type (
	succeededData struct {
		CommandID   string          `json:"command_id"`
		CommandType string          `json:"command_type"`
		Attempts    int             `json:"attempts"`
		Result      json.RawMessage `json:"result"`
		Reconciled  bool            `json:"reconciled,omitempty"`
	}
	failedData struct {
		CommandID   string      `json:"command_id"`
		CommandType string      `json:"command_type"`
		Attempts    int         `json:"attempts"`
		Error       failedError `json:"error"`
	}
	failedError struct {
		Code       string          `json:"code"`
		Message    string          `json:"message"`
		HTTPStatus int             `json:"http_status"`
		Detail     json.RawMessage `json:"detail,omitempty"`
		RequestID  string          `json:"request_id,omitempty"`
	}
	rejectedData struct {
		CommandID   string        `json:"command_id"`
		CommandType string        `json:"command_type"`
		Attempts    int           `json:"attempts"`
		Error       rejectedError `json:"error"`
	}
	rejectedError struct {
		Code       string              `json:"code"`
		Message    string              `json:"message"`
		Violations []schemas.Violation `json:"violations"`
	}
)

// NewOutcome builds the outcome event of a command: subject
// <prefix>.evt.<type>.<outcome> (the type encoded with [schemas.EncodeToken]), type
// wxpay.<type>.<outcome>, subject attribute the command id, id
// "outcome/<command id>" (so a republish is a duplicate), time now.
// traceparent, when not empty, must be a W3C traceparent; it becomes the
// traceparent attribute and header.
//
// Store the returned Message and publish it with [Publisher.Publish]; publish
// the stored Message again (never a rebuilt one: its time differs) after a
// crash.
//
// It fails with [ErrInvalidEvent] when data does not fit the outcome:
// succeeded with an Error; failed or rejected without one; a Result,
// Reconciled, Detail or RequestID where the outcome has none; rejected with
// attempts or a code other than INVALID_COMMAND (an empty code is filled
// in); Result or Detail that is not JSON; or ids that disagree with data.
func (p *Publisher) NewOutcome(commandType, commandID string, outcome schemas.Outcome, data OutcomeData, tc TraceContext) (Message, error) {
	for _, f := range []struct{ what, value string }{{"command type", commandType}, {"command id", commandID}} {
		if problem := nameProblem(f.what, f.value); problem != "" {
			return Message{}, fmt.Errorf("%w: %s", ErrInvalidEvent, problem)
		}
	}
	if data.CommandID == "" {
		data.CommandID = commandID
	}
	if data.CommandType == "" {
		data.CommandType = commandType
	}
	if data.CommandID != commandID || data.CommandType != commandType {
		return Message{}, fmt.Errorf("%w: data names command %q of type %q, not %q of type %q",
			ErrInvalidEvent, data.CommandID, data.CommandType, commandID, commandType)
	}
	if data.Attempts < 0 {
		return Message{}, fmt.Errorf("%w: attempts %d is negative", ErrInvalidEvent, data.Attempts)
	}
	wire, err := outcomeWire(outcome, data)
	if err != nil {
		return Message{}, err
	}
	b, err := json.Marshal(wire)
	if err != nil {
		return Message{}, fmt.Errorf("%w: encoding the %s data of command %s: %w", ErrInvalidEvent, outcome, commandID, err)
	}
	token := schemas.EncodeToken(commandType)
	id := "outcome/" + commandID
	if data.Replay > 0 {
		id += "/replay-" + strconv.Itoa(data.Replay)
	}
	return p.message(p.prefix+".evt."+token+"."+string(outcome), Event{
		ID:      id,
		Type:    typeNamespace + "." + token + "." + string(outcome),
		Subject: commandID,
		Time:    p.now(),
		Data:    b,
	}, tc)
}

// outcomeWire checks data against outcome and returns it in the outcome's
// shape.
func outcomeWire(outcome schemas.Outcome, d OutcomeData) (any, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s outcome of command %s: %s", ErrInvalidEvent, outcome, d.CommandID, fmt.Sprintf(format, args...))
	}
	if outcome != schemas.Succeeded && outcome != schemas.Failed && outcome != schemas.Rejected {
		return nil, fmt.Errorf("%w: outcome %q is not %s, %s or %s", ErrInvalidEvent, outcome, schemas.Succeeded, schemas.Failed, schemas.Rejected)
	}
	if outcome != schemas.Succeeded {
		switch {
		case d.Error == nil:
			return nil, bad("error is required")
		case len(d.Result) > 0:
			return nil, bad("result is only for succeeded")
		case d.Reconciled:
			return nil, bad("reconciled is only for succeeded")
		case d.Error.Code == "" && outcome != schemas.Rejected:
			return nil, bad("error code is required")
		}
	}
	switch outcome {
	case schemas.Succeeded:
		if d.Error != nil {
			return nil, bad("a succeeded outcome has no error (code %s)", d.Error.Code)
		}
		result := d.Result
		if len(bytes.TrimSpace(result)) == 0 {
			result = json.RawMessage("null")
		}
		return succeededData{CommandID: d.CommandID, CommandType: d.CommandType, Attempts: d.Attempts, Result: result, Reconciled: d.Reconciled}, nil
	case schemas.Rejected:
		e := d.Error
		switch {
		case d.Attempts != 0:
			return nil, bad("attempts must be 0 (no request is sent for an invalid command), not %d", d.Attempts)
		case e.Code != "" && e.Code != schemas.CodeInvalidCommand:
			return nil, bad("error code must be %s, not %s", schemas.CodeInvalidCommand, e.Code)
		case e.HTTPStatus != 0 || len(e.Detail) > 0 || e.RequestID != "":
			return nil, bad("http_status, detail and request_id are only for failed")
		}
		vs := e.Violations
		if vs == nil {
			vs = []schemas.Violation{}
		}
		return rejectedData{CommandID: d.CommandID, CommandType: d.CommandType,
			Error: rejectedError{Code: schemas.CodeInvalidCommand, Message: e.Message, Violations: vs}}, nil
	default: // schemas.Failed
		e := d.Error
		switch {
		case len(e.Violations) > 0:
			return nil, bad("violations are only for rejected")
		case e.HTTPStatus != 0 && (e.HTTPStatus < 100 || e.HTTPStatus > 599):
			return nil, bad("http_status %d is not an HTTP status", e.HTTPStatus)
		}
		detail := e.Detail
		if len(bytes.TrimSpace(detail)) == 0 {
			detail = nil
		}
		return failedData{CommandID: d.CommandID, CommandType: d.CommandType, Attempts: d.Attempts,
			Error: failedError{Code: e.Code, Message: e.Message, HTTPStatus: e.HTTPStatus, Detail: detail, RequestID: e.RequestID}}, nil
	}
}

// nameProblem describes what is wrong with a name that must not be empty and
// must survive a header or a JSON string unchanged; "" when nothing is.
func nameProblem(what, s string) string {
	switch {
	case s == "":
		return what + " is empty"
	case !schemas.HeaderSafe(s):
		return fmt.Sprintf("%s %q is not valid UTF-8 without control characters", what, s)
	}
	return ""
}
