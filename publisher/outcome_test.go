package publisher_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

func TestOutcomeEvents(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	tests := []struct {
		name        string
		ctype, id   string
		outcome     schemas.Outcome
		data        publisher.OutcomeData
		traceparent string
		subject     string // stored subject
		typ         string // CloudEvents type
		wantData    string
	}{
		{
			name: "succeeded with a body", ctype: "validate-cancel", id: "cmd:2025.001", outcome: schemas.Succeeded,
			data:        publisher.OutcomeData{Attempts: 2, Result: json.RawMessage(`{"sub_mchid":"1900000109","merchant_state":"NORMAL","note":"<&>"}`)},
			traceparent: testTrace,
			subject:     "wxt.evt.validate-cancel.succeeded", typ: "wxpay.validate-cancel.succeeded",
			wantData: `{"command_id":"cmd:2025.001","command_type":"validate-cancel","attempts":2,
				"result":{"sub_mchid":"1900000109","merchant_state":"NORMAL","note":"<&>"}}`,
		},
		{
			name: "succeeded 204: result is null, not absent", ctype: "cancel-applyment", id: "c-204", outcome: schemas.Succeeded,
			data:    publisher.OutcomeData{CommandID: "c-204", CommandType: "cancel-applyment", Attempts: 1},
			subject: "wxt.evt.cancel-applyment.succeeded", typ: "wxpay.cancel-applyment.succeeded",
			wantData: `{"command_id":"c-204","command_type":"cancel-applyment","attempts":1,"result":null}`,
		},
		{
			name: "succeeded by reconciliation", ctype: "confirm-cancel", id: "c-rec", outcome: schemas.Succeeded,
			data:    publisher.OutcomeData{Attempts: 4, Reconciled: true, Result: json.RawMessage(` {"cancel_state": "CANCELED"} `)},
			subject: "wxt.evt.confirm-cancel.succeeded", typ: "wxpay.confirm-cancel.succeeded",
			wantData: `{"command_id":"c-rec","command_type":"confirm-cancel","attempts":4,"result":{"cancel_state":"CANCELED"},"reconciled":true}`,
		},
		{
			name: "failed with WeChat Pay's detail and request id", ctype: "confirm-cancel", id: "c-fail", outcome: schemas.Failed,
			data: publisher.OutcomeData{Attempts: 1, Error: &publisher.ErrorData{
				Code: "PARAM_ERROR", Message: "参数错误", HTTPStatus: 400,
				Detail: json.RawMessage(`{"field":"confirm_time","location":"body"}`), RequestID: "08F0B5E0-1",
			}},
			traceparent: testTrace,
			subject:     "wxt.evt.confirm-cancel.failed", typ: "wxpay.confirm-cancel.failed",
			wantData: `{"command_id":"c-fail","command_type":"confirm-cancel","attempts":1,"error":{"code":"PARAM_ERROR",
				"message":"参数错误","http_status":400,"detail":{"field":"confirm_time","location":"body"},"request_id":"08F0B5E0-1"}}`,
		},
		{
			name: "failed without an HTTP answer: http_status 0 is written", ctype: "query-cancel-withdraw", id: "c-transport", outcome: schemas.Failed,
			data:    publisher.OutcomeData{Attempts: 15, Error: &publisher.ErrorData{Code: "TRANSPORT_ERROR", Message: "no answer"}},
			subject: "wxt.evt.query-cancel-withdraw.failed", typ: "wxpay.query-cancel-withdraw.failed",
			wantData: `{"command_id":"c-transport","command_type":"query-cancel-withdraw","attempts":15,
				"error":{"code":"TRANSPORT_ERROR","message":"no answer","http_status":0}}`,
		},
		{
			name: "rejected: violations with an empty field", ctype: "confirm-cancel", id: "c-rej", outcome: schemas.Rejected,
			data: publisher.OutcomeData{Error: &publisher.ErrorData{Code: "INVALID_COMMAND", Message: "2 problems", Violations: []schemas.Violation{
				{Field: "confirm_time", Rule: "rfc3339", Message: "must be an RFC 3339 time"},
				{Field: "", Rule: "unknown_field", Message: "unknown field \"x\""},
			}}},
			subject: "wxt.evt.confirm-cancel.rejected", typ: "wxpay.confirm-cancel.rejected",
			wantData: `{"command_id":"c-rej","command_type":"confirm-cancel","attempts":0,"error":{"code":"INVALID_COMMAND","message":"2 problems",
				"violations":[{"field":"confirm_time","rule":"rfc3339","message":"must be an RFC 3339 time"},
				{"field":"","rule":"unknown_field","message":"unknown field \"x\""}]}}`,
		},
		{
			name: "rejected without violations: an empty array, code filled in", ctype: "no-such-type", id: "seq-42", outcome: schemas.Rejected,
			data:    publisher.OutcomeData{Error: &publisher.ErrorData{Message: "unsupported command type"}},
			subject: "wxt.evt.no-such-type.rejected", typ: "wxpay.no-such-type.rejected",
			wantData: `{"command_id":"seq-42","command_type":"no-such-type","attempts":0,
				"error":{"code":"INVALID_COMMAND","message":"unsupported command type","violations":[]}}`,
		},
		{
			name: "a type that is not a subject token is encoded", ctype: "a.b*c", id: "c-odd", outcome: schemas.Rejected,
			data:    publisher.OutcomeData{Error: &publisher.ErrorData{Code: "INVALID_COMMAND", Message: "unsupported command type"}},
			subject: "wxt.evt.a=2Eb=2Ac.rejected", typ: "wxpay.a=2Eb=2Ac.rejected",
			wantData: `{"command_id":"c-odd","command_type":"a.b*c","attempts":0,
				"error":{"code":"INVALID_COMMAND","message":"unsupported command type","violations":[]}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			msg, err := in.pub.NewOutcome(tt.ctype, tt.id, tt.outcome, tt.data, publisher.TraceContext{Traceparent: tt.traceparent})
			if err != nil {
				t.Fatalf("NewOutcome: %v", err)
			}
			if msg.Subject != tt.subject || msg.ID != "outcome/"+tt.id || msg.Traceparent != tt.traceparent {
				t.Errorf("message subject %q id %q traceparent %q", msg.Subject, msg.ID, msg.Traceparent)
			}
			// The consumer stores the message as JSON and republishes it
			// later: it must come back byte for byte.
			stored, err := json.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			var back publisher.Message
			if err := json.Unmarshal(stored, &back); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.Data, msg.Data) || back.Subject != msg.Subject || back.ID != msg.ID || back.Traceparent != msg.Traceparent {
				t.Fatalf("message changed in a JSON round trip:\n%s\n%s", msg.Data, back.Data)
			}

			if err := in.pub.Publish(ctx, msg); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if err := in.pub.Publish(ctx, back); err != nil {
				t.Fatalf("republish: %v", err)
			}
			got := e.stored(t, tt.subject)
			if len(got) != 1 {
				t.Fatalf("%d events stored on %s after publishing twice, want 1", len(got), tt.subject)
			}
			if !bytes.Equal(got[0].Data, msg.Data) {
				t.Errorf("stored event differs from the message:\n%s\n%s", got[0].Data, msg.Data)
			}
			ev := checkEvent(t, got[0], tt.traceparent)
			if ev.ID() != "outcome/"+tt.id || ev.Type() != tt.typ || ev.Subject() != tt.id {
				t.Errorf("id %q type %q subject %q", ev.ID(), ev.Type(), ev.Subject())
			}
			sameJSON(t, "data", ev.Data(), tt.wantData)
		})
	}
	// Every case stored exactly one event: the republishes were duplicates.
	if all := e.stored(t, ""); len(all) != len(tests) {
		t.Errorf("%d events in the stream, want %d", len(all), len(tests))
	}
}

func TestNewOutcomeRejectsInconsistentData(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	failure := &publisher.ErrorData{Code: "SYSTEM_ERROR", Message: "busy", HTTPStatus: 500}
	invalid := &publisher.ErrorData{Code: "INVALID_COMMAND", Message: "bad", Violations: []schemas.Violation{{Field: "x", Rule: "required", Message: "m"}}}
	tests := []struct {
		name        string
		ctype, id   string
		outcome     schemas.Outcome
		data        publisher.OutcomeData
		traceparent string
	}{
		{"unknown outcome", "validate-cancel", "c1", "retry", publisher.OutcomeData{}, ""},
		{"empty outcome", "validate-cancel", "c1", "", publisher.OutcomeData{Error: failure}, ""},
		{"empty command id", "validate-cancel", "", schemas.Succeeded, publisher.OutcomeData{}, ""},
		{"empty command type", "", "c1", schemas.Succeeded, publisher.OutcomeData{}, ""},
		{"control character in the id", "validate-cancel", "c1\r\nX: y", schemas.Succeeded, publisher.OutcomeData{}, ""},
		{"invalid UTF-8 in the type", "validate\xff", "c1", schemas.Succeeded, publisher.OutcomeData{}, ""},
		{"data names another command", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{CommandID: "c2"}, ""},
		{"data names another type", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{CommandType: "confirm-cancel"}, ""},
		{"negative attempts", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{Attempts: -1}, ""},
		{"succeeded with an error", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{Error: failure}, ""},
		{"succeeded with a result that is not JSON", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{Result: json.RawMessage(`{"a":`)}, ""},
		{"failed without an error", "validate-cancel", "c1", schemas.Failed, publisher.OutcomeData{Attempts: 1}, ""},
		{"failed without a code", "validate-cancel", "c1", schemas.Failed, publisher.OutcomeData{Error: &publisher.ErrorData{Message: "m"}}, ""},
		{"failed with a result", "validate-cancel", "c1", schemas.Failed, publisher.OutcomeData{Error: failure, Result: json.RawMessage(`{}`)}, ""},
		{"failed and reconciled", "validate-cancel", "c1", schemas.Failed, publisher.OutcomeData{Error: failure, Reconciled: true}, ""},
		{"failed with violations", "validate-cancel", "c1", schemas.Failed, publisher.OutcomeData{Error: invalid}, ""},
		{"failed with a status that is not HTTP", "validate-cancel", "c1", schemas.Failed, publisher.OutcomeData{Error: &publisher.ErrorData{Code: "X", HTTPStatus: 1000}}, ""},
		{"failed with a detail that is not JSON", "validate-cancel", "c1", schemas.Failed, publisher.OutcomeData{Error: &publisher.ErrorData{Code: "X", HTTPStatus: 400, Detail: json.RawMessage(`nope`)}}, ""},
		{"rejected without an error", "validate-cancel", "c1", schemas.Rejected, publisher.OutcomeData{}, ""},
		{"rejected after requests", "validate-cancel", "c1", schemas.Rejected, publisher.OutcomeData{Attempts: 1, Error: invalid}, ""},
		{"rejected with another code", "validate-cancel", "c1", schemas.Rejected, publisher.OutcomeData{Error: &publisher.ErrorData{Code: "PARAM_ERROR"}}, ""},
		{"rejected with an HTTP status", "validate-cancel", "c1", schemas.Rejected, publisher.OutcomeData{Error: &publisher.ErrorData{Code: "INVALID_COMMAND", HTTPStatus: 400}}, ""},
		{"malformed traceparent", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{}, "00-xyz"},
		{"all-zero trace id", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{}, "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
		{"traceparent with a header injection", "validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{}, testTrace + "\r\nX: y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := in.pub.NewOutcome(tt.ctype, tt.id, tt.outcome, tt.data, publisher.TraceContext{Traceparent: tt.traceparent})
			if !errors.Is(err, publisher.ErrInvalidEvent) {
				t.Fatalf("NewOutcome = %+v, %v; want ErrInvalidEvent", msg, err)
			}
		})
	}
	if n := len(e.stored(t, "")); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

// TestPublishTraceContext: an event's traceparent and tracestate are its
// headers, by their lower-case names.
func TestPublishTraceContext(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	msg, err := in.pub.NewOutcome("validate-cancel", "tc1", schemas.Succeeded, publisher.OutcomeData{},
		publisher.TraceContext{Traceparent: testTrace, Tracestate: "rojo=00f067aa0ba902b7"})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.pub.Publish(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	got := e.stored(t, msg.Subject)
	if len(got) != 1 {
		t.Fatalf("%d events stored, want 1", len(got))
	}
	if h := got[0].Header; h.Get("traceparent") != testTrace || h.Get("tracestate") != "rojo=00f067aa0ba902b7" {
		t.Errorf("headers %v", h)
	}
}

func TestPublishErrors(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	ok, err := in.pub.NewOutcome("validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{}, publisher.TraceContext{})
	if err != nil {
		t.Fatal(err)
	}
	noStream := ok
	noStream.Subject = "elsewhere.evt.validate-cancel.succeeded"
	tests := []struct {
		name string
		msg  publisher.Message
		want error
	}{
		{"no subject", publisher.Message{ID: ok.ID, Data: ok.Data}, publisher.ErrInvalidEvent},
		{"no id", publisher.Message{Subject: ok.Subject, Data: ok.Data}, publisher.ErrInvalidEvent},
		{"no data", publisher.Message{Subject: ok.Subject, ID: ok.ID}, publisher.ErrInvalidEvent},
		{"id that cannot be a header", publisher.Message{Subject: ok.Subject, ID: "a\nb", Data: ok.Data}, publisher.ErrInvalidEvent},
		{"bad traceparent", publisher.Message{Subject: ok.Subject, ID: ok.ID, Data: ok.Data, Traceparent: "x"}, publisher.ErrInvalidEvent},
		{"tracestate without a traceparent", publisher.Message{Subject: ok.Subject, ID: ok.ID, Data: ok.Data, Tracestate: "a=1"}, publisher.ErrInvalidEvent},
		{"bad tracestate", publisher.Message{Subject: ok.Subject, ID: ok.ID, Data: ok.Data, Traceparent: testTrace, Tracestate: "A=1"}, publisher.ErrInvalidEvent},
		{"no stream captures the subject", noStream, publisher.ErrPublish},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := in.pub.Publish(t.Context(), tt.msg); !errors.Is(err, tt.want) {
				t.Fatalf("Publish = %v, want %v", err, tt.want)
			}
		})
	}
	if n := len(e.stored(t, "")); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

func TestConfig(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name  string
		cfg   publisher.Config
		noJS  bool
		fails []string // fragments every one of which the error must name
	}{
		{name: "defaults", cfg: publisher.Config{MchID: testMchID}},
		{name: "missing merchant id", cfg: publisher.Config{}, fails: []string{"MchID is required"}},
		{name: "merchant id with letters", cfg: publisher.Config{MchID: "19x"}, fails: []string{"MchID \"19x\""}},
		{name: "merchant id too long", cfg: publisher.Config{MchID: "123456789012345678901234567890123"}, fails: []string{"up to 32 digits"}},
		{name: "prefix with a dot", cfg: publisher.Config{Prefix: "a.b", MchID: testMchID}, fails: []string{"Prefix \"a.b\""}},
		{name: "every problem at once", cfg: publisher.Config{Prefix: "a b"}, noJS: true, fails: []string{"Prefix", "MchID", "JetStream"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var js = e.js
			if tt.noJS {
				js = nil
			}
			p, err := publisher.New(js, tt.cfg)
			if len(tt.fails) == 0 {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v", p, err)
				}
				return
			}
			if !errors.Is(err, publisher.ErrInvalidConfig) || p != nil {
				t.Fatalf("New = %v, %v; want ErrInvalidConfig", p, err)
			}
			for _, f := range tt.fails {
				if !bytes.Contains([]byte(err.Error()), []byte(f)) {
					t.Errorf("error %q does not name %q", err, f)
				}
			}
		})
	}

	// The default prefix and clock are used.
	p, err := publisher.New(e.js, publisher.Config{MchID: testMchID})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := p.NewOutcome("validate-cancel", "c1", schemas.Succeeded, publisher.OutcomeData{}, publisher.TraceContext{})
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "wxpay.evt.validate-cancel.succeeded" {
		t.Errorf("subject %q, want the default prefix", msg.Subject)
	}
	var ev publisher.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Time == "" || ev.Time[len(ev.Time)-1] != 'Z' || len(ev.Time) != len(testNowText) {
		t.Errorf("time %q is not UTC with nanoseconds", ev.Time)
	}
}

// TestStored: Stored finds an event by its id among the events on its
// subject stored since a time, and only there.
func TestStored(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	ctx := t.Context()
	outcome := func(id string, o schemas.Outcome) publisher.Message {
		t.Helper()
		data := publisher.OutcomeData{}
		if o == schemas.Failed {
			data.Error = &publisher.ErrorData{Code: "SYSTEM_ERROR", Message: "x", HTTPStatus: 500}
		}
		m, err := in.pub.NewOutcome("validate-cancel", id, o, data, publisher.TraceContext{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	early := outcome("s0", schemas.Succeeded)
	if err := in.pub.Publish(ctx, early); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // stored times are the server's, in nanoseconds
	since := time.Now()
	a, other, b := outcome("s1", schemas.Succeeded), outcome("f1", schemas.Failed), outcome("s2", schemas.Succeeded)
	for _, m := range []publisher.Message{a, other, b} {
		if err := in.pub.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		m     publisher.Message
		since time.Time
		want  bool
	}{
		{"the first since", a, since, true},
		{"a later one on the subject", b, since, true},
		{"on another subject", other, since, true},
		{"stored before since", early, since, false},
		{"never published", outcome("s3", schemas.Succeeded), since, false},
		{"since after everything", a, time.Now().Add(time.Minute), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := in.pub.Stored(ctx, in.events, tt.m, tt.since)
			if err != nil || got != tt.want {
				t.Errorf("Stored = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}
