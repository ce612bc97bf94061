package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// record is what the outcomes bucket remembers of one command id. While a
// command is being retried across deliveries it holds the progress (HTTP
// requests made, whether one was ambiguous, the last transient error); once
// the command has an outcome it holds the finished event, so that a
// redelivery or a re-sent id republishes exactly the same event (same
// Nats-Msg-Id, dropped by JetStream as a duplicate) and never calls WeChat
// Pay again.
type record struct {
	Attempts  int                  `json:"attempts"`
	Ambiguous bool                 `json:"ambiguous,omitempty"`
	LastError *publisher.ErrorData `json:"last_error,omitempty"`
	// Outcome is set once the command is finished.
	Outcome schemas.Outcome    `json:"outcome,omitempty"`
	Event   *publisher.Message `json:"event,omitempty"`
	// DeadLettered: a copy went to the dead-letter stream; the command is
	// terminated rather than acknowledged.
	DeadLettered bool `json:"dead_lettered,omitempty"`
	// Published: the event is stored, or the delivery that recorded the
	// outcome has not been settled yet. The delivery that concludes a
	// command writes it with the outcome, before it publishes the event, and
	// acknowledges only once JetStream has stored the event; whatever stops
	// it in between (a crash, a failed publish) leaves the message to a
	// redelivery, and a redelivery of that message republishes (see
	// mustPublish). Any other message with the same id (sent again past the
	// commands stream's duplicate window), delivered once or more, trusts
	// the flag, so its outcome event is not stored twice. Records written
	// without it are republished by every delivery.
	Published bool `json:"published,omitempty"`
	// Seq is the commands stream's sequence of the message whose delivery
	// recorded the outcome: which redeliveries republish. Zero in records
	// written without it; every redelivery then republishes.
	Seq uint64 `json:"seq,omitempty"`
	// Observations are the status changes the execution revealed, recorded
	// with the outcome and observed after it: whatever stops the delivery
	// before they and the event are published (a JetStream error, a
	// crash), a redelivery that republishes observes them again, without
	// calling WeChat Pay. (Observing is idempotent: an unchanged state
	// publishes nothing.)
	Observations []publisher.Observation `json:"observations,omitempty"`
	// Tracks are the tracked resources the execution showed without a
	// state, recorded and applied like Observations.
	Tracks []trackStart `json:"tracks,omitempty"`
	// Replays counts the replays from the dead-letter stream; a replay
	// clears the outcome so that the command runs again.
	Replays int `json:"replays,omitempty"`
	// Running is the claim of a delivery about to send a command that asks
	// WeChat Pay to change something, written before its first request and
	// cleared by the delivery's next write. While it holds, a delivery of
	// another message with the same id (sent again past the commands
	// stream's duplicate window) waits instead of sending the request a
	// second time, concurrently, and taking the refusal of a request that
	// went through for the answer; and any claim, held or expired, tells a
	// later execution the request may have been sent (maybeSent).
	Running *claim `json:"running,omitempty"`

	// written is when the record read was written (the server's time); not
	// stored in it, zero for a record this delivery wrote or made.
	written time.Time
}

func (r *record) done() bool { return r != nil && r.Event != nil }

// claim is a delivery's claim on executing its command.
type claim struct {
	// Seq is the commands stream sequence of the claiming message: its
	// own redeliveries are not held by the claim (maybeSent covers them).
	Seq uint64 `json:"seq"`
	// Until is when the claim expires (the claiming instance's clock): the
	// longest an execution takes, so that a claim left by an instance that
	// died holds nothing for long.
	Until time.Time `json:"until"`
}

// heldFor reports whether r holds a claim of another message than at's,
// unexpired at at.now.
func (r *record) heldFor(at attempt) bool {
	return r != nil && r.Running != nil && (r.Running.Seq != at.seq || at.seq == 0) && at.now.Before(r.Running.Until)
}

// progressed returns a copy of r (a new record when r is nil) that counts
// the requests of ex, remembers whether one of them was ambiguous, and holds
// no claim.
func (r *record) progressed(ex execution) *record {
	next := &record{}
	if r != nil {
		*next = *r
	}
	next.Attempts += ex.attempts
	next.Ambiguous = next.Ambiguous || ex.ambiguous
	next.Running = nil // the execution is over
	return next
}

// records stores one record per command id in a KV bucket, with
// compare-and-set on the revision.
type records struct{ kv jetstream.KeyValue }

// get returns the record of key and its revision (0 and nil when absent).
func (r records) get(ctx context.Context, key string) (*record, uint64, error) {
	e, err := r.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading outcome record: %w", err)
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("outcome record %s is corrupt: %w", key, err)
	}
	rec.written = e.Created()
	return &rec, e.Revision(), nil
}

// recordRead is a read of an outcome record under way (records.read).
type recordRead struct {
	done chan struct{} // closed when the read is over
	rec  *record
	rev  uint64
	err  error
	took time.Duration // how long the read took
	// refused: gate refused to let a request go (owned by the goroutine
	// that calls gate and wait).
	refused bool
}

// errRecordForbids is what a read's gate answers when the request must
// not be sent: the command has an outcome already, or its record could not
// be read.
var errRecordForbids = errors.New("consumer: the outcome record forbids sending the request")

// read starts reading the record of key and returns at once; wait gives
// the result. The read runs on a goroutine of its own, which ends with it:
// every read must be waited for.
func (r records) read(ctx context.Context, key string) *recordRead {
	l := &recordRead{done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(l.done)
		l.rec, l.rev, l.err = r.get(ctx, key)
		l.took = time.Since(start)
	}()
	return l
}

// wait waits for the read and returns what get would have.
func (l *recordRead) wait() (*record, uint64, error) {
	<-l.done
	return l.rec, l.rev, l.err
}

// gate is a wxpay send gate: it lets a request go once the read shows the
// command has no outcome yet, and refuses it (noting so) when the read
// failed, the command has an outcome, or ctx ended first.
func (l *recordRead) gate(ctx context.Context) error {
	select {
	case <-l.done:
	case <-ctx.Done():
		l.refused = true
		return ctx.Err()
	}
	if l.err != nil || l.rec.done() {
		l.refused = true
		return errRecordForbids
	}
	return nil
}

// put writes rec if the stored revision is still rev (0: absent) and returns
// the new revision, or errChanged when another delivery wrote it first.
func (r records) put(ctx context.Context, key string, rec *record, rev uint64) (uint64, error) {
	nrev, err := compareAndSet(ctx, r.kv, key, rec, rev)
	if err != nil && !errors.Is(err, errChanged) {
		return 0, fmt.Errorf("writing outcome record: %w", err)
	}
	return nrev, err
}

// errChanged: the key is no longer at the revision a compare-and-set
// expected (another writer came first).
var errChanged = errors.New("consumer: the key changed concurrently")

// compareAndSet writes v, JSON, under key if the key is still at revision
// rev (0: absent or deleted) and returns the new revision, or an error
// matching errChanged. Create reports an existing key as ErrKeyExists;
// Update reports a stale revision as ErrKeyRevisionMismatch, which on
// replicated buckets (code 10164) ErrKeyExists does not match (nats.go
// v1.55 jetstream/kv.go).
func compareAndSet(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = kv.Create(ctx, key, b)
	} else {
		nrev, err = kv.Update(ctx, key, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, errChanged
	}
	return nrev, err
}

// RecordedOutcome returns the outcome event recorded for command id, and
// false when the command has none (yet, or any more: records expire after
// WXCANCEL_OUTCOME_TTL).
func RecordedOutcome(ctx context.Context, js jetstream.JetStream, t Topology, id string) (publisher.Message, bool, error) {
	kv, err := js.KeyValue(ctx, t.Outcomes.Bucket)
	if err != nil {
		return publisher.Message{}, false, fmt.Errorf("consumer: outcomes bucket: %w", err)
	}
	rec, _, err := records{kv: kv}.get(ctx, schemas.EncodeToken(id))
	if err != nil || !rec.done() {
		return publisher.Message{}, false, err
	}
	return *rec.Event, true, nil
}

// ErrAlreadyReplayed is matched by the error of [ReopenForReplay] when the
// command's recorded outcome is no longer the dead-lettered one: a replay of
// it has run to another outcome, and replaying again would run the command
// once more.
var ErrAlreadyReplayed = errors.New("consumer: the command was replayed and has another outcome since")

// ErrInProgress is matched by the error of [ReopenForReplay] when the
// command has a record without an outcome: it is being worked on.
var ErrInProgress = errors.New("consumer: the command is being worked on (no outcome recorded yet)")

// ReopenForReplay clears the dead-lettered outcome recorded for command id,
// so that the command runs again when it is sent again (`wxcancel dlq
// replay`). It counts the replay, so that the new outcome event gets an id
// of its own ("outcome/<id>/replay-<n>"), and keeps the count of requests
// made. A command without a record (it expired) needs nothing. restore
// puts the outcome back, for when sending the command fails; it is nil when
// nothing was cleared. It fails with [ErrAlreadyReplayed], [ErrInProgress],
// or a JetStream error, leaving the record as it was.
func ReopenForReplay(ctx context.Context, js jetstream.JetStream, t Topology, id string) (restore func(context.Context) error, err error) {
	kv, err := js.KeyValue(ctx, t.Outcomes.Bucket)
	if err != nil {
		return nil, fmt.Errorf("consumer: outcomes bucket: %w", err)
	}
	recs := records{kv: kv}
	key := schemas.EncodeToken(id)
	rec, rev, err := recs.get(ctx, key)
	switch {
	case err != nil:
		return nil, err
	case rec == nil:
		return nil, nil
	case !rec.done():
		return nil, fmt.Errorf("%w: command %s", ErrInProgress, id)
	case !rec.DeadLettered:
		return nil, fmt.Errorf("%w: command %s is %s", ErrAlreadyReplayed, id, rec.Outcome)
	}
	cleared := &record{Attempts: rec.Attempts, Ambiguous: rec.Ambiguous, Replays: rec.Replays + 1}
	crev, err := recs.put(ctx, key, cleared, rev)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := recs.put(ctx, key, rec, crev)
		return err
	}, nil
}
