package consumer

import (
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// TestDecide holds the pure decision to the delivery guarantees, row by
// row (docs/interface.md, Delivery guarantees): what each delivery does,
// given the command id's record, what this delivery executed, and how
// often the command was delivered.
func TestDecide(t *testing.T) {
	p := policy{maxDeliver: 5, baseDelay: 30 * time.Second}
	systemError := &publisher.ErrorData{Code: "SYSTEM_ERROR", Message: "busy", HTTPStatus: 500}
	lost := &publisher.ErrorData{Code: schemas.CodeTransportError, Message: "no answer"}
	event := &publisher.Message{Subject: "wxpay.evt.validate-cancel.succeeded", ID: "outcome/c1"}
	done := func(published bool, seq uint64) *record {
		return &record{Attempts: 1, Outcome: schemas.Succeeded, Event: event, Published: published, Seq: seq}
	}
	deadLettered := &record{Attempts: 7, Outcome: schemas.Failed, Event: event, Published: true, Seq: 40, DeadLettered: true}
	progress := &record{Attempts: 4, Ambiguous: true, LastError: systemError}
	ran := func(o schemas.Outcome, err *publisher.ErrorData) *execution { return &execution{outcome: o, err: err} }
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	claimed := func(seq uint64, left time.Duration) *record {
		return &record{Attempts: 2, Running: &claim{Seq: seq, Until: now.Add(left)}}
	}
	claimedDone := done(true, 40)
	claimedDone.Running = &claim{Seq: 41, Until: now.Add(time.Minute)}

	tests := []struct {
		name string
		rec  *record
		ex   *execution
		at   attempt
		want action
	}{
		// A command id is executed at most once: its record answers.
		{"first delivery, no record: execute", nil, nil, attempt{number: 1, seq: 9}, action{step: stepExecute}},
		{"redelivery of work in progress: execute", progress, nil, attempt{number: 2, seq: 9}, action{step: stepExecute}},
		{"re-sent id, outcome recorded and published: answer from the record", done(true, 40), nil, attempt{number: 1, seq: 41}, action{step: stepRepublish}},
		{"outcome recorded but not published: publish it", done(false, 40), nil, attempt{number: 1, seq: 41}, action{step: stepRepublish, publish: true}},
		{"redelivery of the message that recorded it: publish again", done(true, 40), nil, attempt{number: 2, seq: 40}, action{step: stepRepublish, publish: true}},
		{"the message that recorded it, counted as a first delivery (NATS lost the count): publish again", done(true, 40), nil, attempt{number: 1, seq: 40}, action{step: stepRepublish, publish: true}},
		{"redelivery of a re-sent message: the record says published", done(true, 40), nil, attempt{number: 2, seq: 41}, action{step: stepRepublish}},
		{"record without a sequence, redelivered: publish again", done(true, 0), nil, attempt{number: 3, seq: 41}, action{step: stepRepublish, publish: true}},
		{"dead-lettered: answer from the record (settled as Term)", deadLettered, nil, attempt{number: 1, seq: 41}, action{step: stepRepublish}},
		{"recorded beats a late delivery", done(true, 40), nil, attempt{number: 9, seq: 40}, action{step: stepRepublish, publish: true}},
		{"recorded beats an early execution", done(true, 40), ran(schemas.Succeeded, nil), attempt{number: 1, seq: 41}, action{step: stepRepublish}},

		// One message with a command id is executed at a time: a message
		// sent again while another is being executed waits for its claim
		// to clear or expire.
		{"another message holds the claim: wait and read again", claimed(40, time.Minute), nil, attempt{number: 1, seq: 41, now: now}, action{step: stepWait, delay: claimPoll}},
		{"the claim expires sooner: wait until it does", claimed(40, 300*time.Millisecond), nil, attempt{number: 1, seq: 41, now: now}, action{step: stepWait, delay: 300 * time.Millisecond}},
		{"the claim beats the last allowed delivery", claimed(40, time.Minute), nil, attempt{number: 6, seq: 41, now: now}, action{step: stepWait, delay: claimPoll}},
		{"the message's own claim (its delivery died): execute", claimed(41, time.Minute), nil, attempt{number: 2, seq: 41, now: now}, action{step: stepExecute}},
		{"an expired claim (its instance died): execute", claimed(40, -time.Second), nil, attempt{number: 1, seq: 41, now: now}, action{step: stepExecute}},
		{"sequence unknown: any claim is another's", claimed(0, time.Minute), nil, attempt{number: 1, seq: 0, now: now}, action{step: stepWait, delay: claimPoll}},
		{"recorded beats a claim", claimedDone, nil, attempt{number: 1, seq: 42, now: now}, action{step: stepRepublish}},

		// A final answer concludes at once, on any delivery.
		{"succeeded: conclude", nil, ran(schemas.Succeeded, nil), attempt{number: 1}, action{step: stepConclude}},
		{"4xx: conclude as failed, never retried", nil, ran(schemas.Failed, &publisher.ErrorData{Code: "NOT_FOUND"}), attempt{number: 1}, action{step: stepConclude}},
		{"bad signature: conclude as failed, never retried", nil, ran(schemas.Failed, &publisher.ErrorData{Code: schemas.CodeResponseSignatureInvalid}), attempt{number: 2}, action{step: stepConclude}},
		{"invalid command: conclude as rejected", nil, ran(schemas.Rejected, &publisher.ErrorData{Code: schemas.CodeInvalidCommand}), attempt{number: 1}, action{step: stepConclude}},

		// Transient failures: redelivered later, with a growing delay, then
		// dead-lettered after the last allowed delivery.
		{"retries ran out on delivery 1: again in 30s", progress, ran(outcomeRetry, systemError), attempt{number: 1}, action{step: stepRetryLater, delay: 30 * time.Second, cause: systemError}},
		{"retries ran out on delivery 3: again in 2m", progress, ran(outcomeRetry, lost), attempt{number: 3}, action{step: stepRetryLater, delay: 2 * time.Minute, cause: lost}},
		{"retries ran out on the last delivery: dead-letter", progress, ran(outcomeRetry, systemError), attempt{number: 5}, action{step: stepDeadLetter, cause: systemError}},
		{"shutdown cut the command short: hand it back at once", progress, ran(outcomeRetry, lost), attempt{number: 5, stopping: true}, action{step: stepHandBack}},

		// A last allowed delivery that ended without a decision (its
		// instance died): reconcile by query, never send again.
		{"after the last delivery: reconcile", progress, nil, attempt{number: 6}, action{step: stepReconcile}},
		{"reconciliation proved the effect: conclude", progress, ran(schemas.Succeeded, nil), attempt{number: 6}, action{step: stepConclude}},
		{"reconciliation unproven: dead-letter with the last error", progress, &execution{}, attempt{number: 6}, action{step: stepDeadLetter, cause: systemError}},
		{"reconciliation unproven, no error recorded: dead-letter as lost", nil, &execution{}, attempt{number: 6}, action{step: stepDeadLetter, cause: &errNoDecision}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.decide(tt.rec, tt.ex, tt.at)
			if got.step != tt.want.step || got.delay != tt.want.delay || got.publish != tt.want.publish || !sameError(got.cause, tt.want.cause) {
				t.Errorf("decide = %+v (%s), want %+v (%s)", got, got.step, tt.want, tt.want.step)
			}
		})
	}
}

func sameError(a, b *publisher.ErrorData) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Code == b.Code && a.Message == b.Message
}

func TestRedeliveryDelayDoublesAndCaps(t *testing.T) {
	p := policy{maxDeliver: 10, baseDelay: 30 * time.Second}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for i, w := range want {
		if got := p.redeliveryDelay(uint64(i + 1)); got != w {
			t.Errorf("after delivery %d: %s, want %s", i+1, got, w)
		}
		if got := p.decide(nil, &execution{outcome: outcomeRetry, err: &publisher.ErrorData{}}, attempt{number: uint64(i + 1)}); got.delay != w {
			t.Errorf("decide after delivery %d: delay %s, want %s", i+1, got.delay, w)
		}
	}
}
