package consumer

import (
	"time"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// step is what a delivery does next, as decide says.
type step int

const (
	// stepExecute: run the command.
	stepExecute step = iota
	// stepReconcile: the previous, last allowed, delivery ended without a
	// decision (its instance died): send nothing but the query that can
	// prove its request took effect.
	stepReconcile
	// stepRepublish: the outcome is recorded; publish it from the record
	// when action.publish says so, then settle as recorded (Ack, or Term
	// for a dead-lettered command).
	stepRepublish
	// stepConclude: record the outcome with its event and the status
	// changes the answers revealed, publish them, Ack.
	stepConclude
	// stepRetryLater: publish the status changes, record the progress and
	// hand the command back for a delivery after action.delay.
	stepRetryLater
	// stepHandBack: shutdown cut the command short: record the progress and
	// hand it back at once, for another instance.
	stepHandBack
	// stepDeadLetter: copy the command to the dead-letter stream, record a
	// failed outcome (action.cause), publish it, Term.
	stepDeadLetter
	// stepWait: another message with the same command id is being executed
	// (the record holds its claim): wait action.delay, keeping the
	// delivery, and read the record again.
	stepWait
)

var stepNames = [...]string{"execute", "reconcile", "republish", "conclude", "retry_later", "hand_back", "dead_letter", "wait"}

func (s step) String() string { return stepNames[s] }

// action is a decision about one delivery.
type action struct {
	step step
	// delay is the wait before the next delivery (stepRetryLater), or
	// before the record is read again (stepWait).
	delay time.Duration
	// cause is the failure a dead letter reports (stepDeadLetter), or the
	// last transient error the record keeps for one (stepRetryLater).
	cause *publisher.ErrorData
	// publish: the recorded event is published again (stepRepublish); it
	// may not be stored yet.
	publish bool
}

// attempt is what the decision knows of a delivery besides its record and
// execution.
type attempt struct {
	number   uint64    // the delivery count, from 1
	seq      uint64    // the message's commands stream sequence (0: unknown)
	stopping bool      // the work context ended: shutdown cancelled the command
	now      time.Time // the service's clock, for the record's claim
}

// claimPoll is how often a delivery waiting for another message's claim
// reads the record again.
const claimPoll = time.Second

// policy decides what becomes of a delivery: the service's delivery
// guarantees (docs/interface.md, Delivery guarantees) as one pure function.
type policy struct {
	maxDeliver uint64        // WXCANCEL_MAX_DELIVER
	baseDelay  time.Duration // WXCANCEL_REDELIVERY_DELAY
}

// errNoDecision is the cause of a dead letter whose last allowed delivery
// ended without a decision and left no error in the record.
var errNoDecision = publisher.ErrorData{Code: schemas.CodeTransportError, Message: "no outcome after the allowed deliveries"}

// decide maps (record, execution, delivery) to what the delivery does next.
// ex is nil before anything was run: the answer then says what to run
// (stepExecute, stepReconcile) or that the record answers (stepRepublish).
// With ex, it says how the delivery ends. rec is nil when the command id has
// no record.
func (p policy) decide(rec *record, ex *execution, at attempt) action {
	late := at.number > p.maxDeliver // after the last allowed delivery
	switch {
	case rec.done():
		return action{step: stepRepublish, publish: mustPublish(rec, at)}
	case ex == nil && rec.heldFor(at):
		return action{step: stepWait, delay: min(rec.Running.Until.Sub(at.now), claimPoll)}
	case late && ex == nil:
		return action{step: stepReconcile}
	case late && ex.outcome == schemas.Succeeded:
		return action{step: stepConclude}
	case late:
		cause := errNoDecision
		if rec != nil && rec.LastError != nil {
			cause = *rec.LastError
		}
		return action{step: stepDeadLetter, cause: &cause}
	case ex == nil:
		return action{step: stepExecute}
	case ex.outcome != outcomeRetry:
		return action{step: stepConclude}
	case at.stopping:
		return action{step: stepHandBack}
	case at.number >= p.maxDeliver:
		return action{step: stepDeadLetter, cause: ex.err}
	default:
		return action{step: stepRetryLater, delay: p.redeliveryDelay(at.number), cause: ex.err}
	}
}

// redeliveryDelay is the wait before delivery number n+1 after delivery n ran
// out of in-process retries: the configured delay doubled per delivery,
// capped at MaxRedeliveryDelay.
func (p policy) redeliveryDelay(n uint64) time.Duration {
	d := p.baseDelay
	for i := uint64(1); i < n && d < MaxRedeliveryDelay; i++ {
		d *= 2
	}
	return min(d, MaxRedeliveryDelay)
}

// mustPublish reports whether a delivery that finds the outcome of its
// command recorded must publish the recorded event again: when the record
// does not say it is published, and on any delivery of the message whose
// delivery recorded it, which may have stopped before JetStream stored the
// event (Published is written ahead of the event). That is a redelivery,
// whatever its count: nats-server killed with SIGKILL may come back without
// the consumer's delivery counts and count it as a first delivery. A
// republish inside the events stream's duplicate window is dropped as a
// duplicate; past it, the event is looked up first (storedLong). A delivery
// of another message with the same id (sent again past the commands
// stream's duplicate window, possibly long after the event) trusts the
// flag: republished past the events stream's window, the event would be
// stored twice. Records written without a sequence are republished by
// every redelivery.
func mustPublish(rec *record, at attempt) bool {
	return !rec.Published || rec.Seq == at.seq || rec.Seq == 0 && at.number > 1
}
