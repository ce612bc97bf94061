package consumer

// One delivery of a command, top to bottom. handle runs five steps, each a
// function that takes and returns values:
//
//  1. lookup reads the command id's outcome record. A read-only command
//     (see the command table) is executed meanwhile, its first request
//     signed and held at the send gate until the record shows the command
//     has no outcome. A command with an outcome is never executed again.
//  2. execute runs what decide asks for on the record: nothing when the
//     outcome is recorded; the command (retrying transient failures with
//     backoff, waiting without holding a worker's place); or, after the
//     last allowed delivery, only the query that can prove the previous
//     delivery's request took effect. A POST whose answer may have been
//     lost is reconciled by query before it is reported.
//  3. decide (policy.decide, pure) says what the delivery does next from
//     the record, the execution and the delivery count.
//  4. commit does it, in this order: write the record by compare-and-set
//     (the outcome with its event and the status changes the answers
//     revealed, or the progress), publish the status changes, publish the
//     outcome event. The outcome is recorded before anything is published:
//     whatever stops the delivery afterwards, its redelivery publishes from
//     the record without calling WeChat Pay again, and only the message
//     that recorded it republishes, so one command id has one outcome
//     event (a republish inside the events stream's duplicate window is
//     dropped; a late one is looked up first). One exception: untrack, which
//     calls nothing but the tracking bucket, ends the tracking (publishing its
//     tracking-ended event) while it executes; a redelivery after a crash
//     between that and the record finds the tracking gone and reports
//     was_tracked false.
//  5. settle acknowledges (Ack), hands back (NakWithDelay) or terminates
//     (Term): the one place a delivery is settled, and only once commit's
//     publications are stored.
//
// A JetStream failure in any step decides nothing: the delivery is handed
// back and its redelivery starts over from the record.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// delivery is one delivery of a command, as the service sees it.
type delivery struct {
	msg       jetstream.Msg
	id        string // command id
	idInvalid bool   // the Nats-Msg-Id header was present but invalid
	key       string // id encoded for the outcomes bucket
	ctype     string // command type, from the subject
	cmd       schemas.Command
	parseErr  error      // why the body is not a valid command of ctype
	def       *command   // cmd's entry in the command table; nil unless cmd is valid and of a known type
	number    uint64     // delivery count, from 1
	seq       uint64     // commands stream sequence (0 when the metadata is unreadable)
	span      trace.Span // the delivery's (see tracing.go)
	log       *slog.Logger
	slot      *slot                       // the delivery's place among the workers
	gate      func(context.Context) error // send gate of the WeChat Pay requests, if any
}

func (s *Service) newDelivery(msg jetstream.Msg, sl *slot) *delivery {
	d := &delivery{msg: msg, number: 1, slot: sl}
	if meta, err := msg.Metadata(); err == nil {
		d.number, d.seq = meta.NumDelivered, meta.Sequence.Stream
	}
	h := msg.Headers()
	d.id = h.Get(jetstream.MsgIDHeader)
	if d.id == "" || !schemas.ValidCommandID(d.id) {
		d.idInvalid = d.id != ""
		d.id = "seq-" + strconv.FormatUint(d.seq, 10)
	}
	d.key = schemas.EncodeToken(d.id)
	d.ctype = strings.TrimPrefix(msg.Subject(), s.cfg.Prefix+".cmd.")
	if !schemas.HeaderSafe(d.ctype) {
		// Not a type of ours, and not even text an event can carry: name it
		// escaped, so that it is still answered with a rejected event.
		d.ctype = strings.Trim(strconv.QuoteToASCII(d.ctype), `"`)
	}
	if !d.idInvalid {
		d.cmd, d.parseErr = schemas.Parse(d.ctype, msg.Data())
	}
	if !d.idInvalid && d.parseErr == nil {
		d.def = commands[d.cmd.CommandType()]
	}
	d.log = s.log.With("command_id", d.id, "command_type", d.ctype, "delivery", d.number)
	if tp := h.Get(schemas.HeaderTraceparent); schemas.ValidTraceparent(tp) {
		d.log = d.log.With("traceparent", tp) // the events get it through the delivery's span
	}
	return d
}

// rejection is the rejected execution of an invalid command (a bad command
// id, a body that does not parse or breaks a rule), and whether it is one.
func (d *delivery) rejection() (execution, bool) {
	switch {
	case d.idInvalid:
		return rejected("the Nats-Msg-Id header is not a valid command id",
			schemas.Violation{Field: "", Rule: "command_id", Message: "Nats-Msg-Id must be " + schemas.CommandIDRule}), true
	case d.parseErr != nil:
		var inv *schemas.InvalidError
		if errors.As(d.parseErr, &inv) {
			return rejected(inv.Error(), inv.Violations...), true
		}
		return rejected(d.parseErr.Error(), schemas.Violation{Field: "", Rule: "invalid", Message: d.parseErr.Error()}), true
	}
	if d.def == nil {
		return rejected("unsupported command type", unsupportedType(d.ctype)), true
	}
	return execution{}, false
}

// readOnly reports whether d's command is valid and read-only (see
// command.readOnly).
func (d *delivery) readOnly() bool { return d.def != nil && d.def.readOnly }

// claims reports whether d's command is valid and claimed before it is
// executed (see command.claimed).
func (d *delivery) claims() bool { return d.def != nil && d.def.claimed() }

// attempt is what decide knows of d, now.
func (s *Service) attempt(ctx context.Context, d *delivery) attempt {
	return attempt{number: d.number, seq: d.seq, stopping: ctx.Err() != nil, now: s.clock()}
}

// handle runs one delivery through its steps; every path ends in exactly
// one settlement.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg, sl *slot) {
	d := s.newDelivery(msg, sl)
	ctx = s.startDelivery(ctx, d)
	stop := s.keepAlive(d)
	st := s.process(ctx, d)
	stop()
	s.settle(ctx, d, st)
	s.endDelivery(d, st)
}

// process runs steps 1 to 4 and returns the settlement. Before it executes
// a command that asks WeChat Pay to change something it claims the record;
// while the record holds another message's claim it waits, and reads the
// record again.
func (s *Service) process(ctx context.Context, d *delivery) settlement {
	found := s.lookup(ctx, d)
	waited := false
	for found.err == nil {
		act := s.policy.decide(found.rec, nil, s.attempt(ctx, d))
		switch {
		case act.step == stepWait:
			if !waited {
				d.log.Info("another message with the same command id is being executed; waiting for its outcome")
				s.metrics.ClaimWaits.WithLabelValues(metricType(d.ctype)).Inc()
				waited = true
			}
			if d.slot.waitOut(ctx, act.delay) != nil {
				return settlement{kind: ackRetry, reason: "shutdown"}
			}
		case act.step == stepExecute && d.claims():
			rev, err := s.claim(ctx, d, found.rec, found.rev)
			if err == nil {
				found.rev = rev
				return s.proceed(ctx, d, found, act)
			}
			if !errors.Is(err, errChanged) {
				return s.infraRetry(d, jsOutcomeWrite, err)
			}
		default:
			return s.proceed(ctx, d, found, act)
		}
		found = s.lookup(ctx, d)
	}
	return s.infraRetry(d, jsOutcomeRead, found.err)
}

// claim writes the claim of d's execution into its record, read at
// revision rev (nil, 0: none), and returns the new revision.
func (s *Service) claim(ctx context.Context, d *delivery, rec *record, rev uint64) (uint64, error) {
	claimed := &record{}
	if rec != nil {
		*claimed = *rec
	}
	claimed.Running = &claim{Seq: d.seq, Until: s.clock().Add(s.claimFor)}
	ctx, span := s.step(ctx, "outcome claim")
	start := time.Now()
	rev, err := s.records.put(ctx, d.key, claimed, rev)
	s.metrics.since(jsOutcomeWrite, start)
	endStep(span, err)
	return rev, err
}

// proceed runs steps 2 to 4 on what lookup found, as act says.
func (s *Service) proceed(ctx context.Context, d *delivery, found found, act action) settlement {
	rec := found.rec
	ex := s.execute(ctx, d, found, act)
	if ex != nil && ex.jetstream != nil {
		return s.infraRetry(d, jsTracking, ex.jetstream)
	}
	if ex != nil {
		rec = rec.progressed(*ex)
		act = s.policy.decide(rec, ex, s.attempt(ctx, d))
	}
	return s.commit(ctx, d, rec, found.rev, ex, act)
}

// found is what lookup found.
type found struct {
	rec *record // nil: the command id has no record
	rev uint64  // its revision (0: none)
	err error
	// early is the execution of a read-only command run during the read;
	// nil when none ran, or when the record refused its request.
	early *execution
}

// lookup reads the record of d's command id. A read-only command, before
// its last allowed delivery, is executed at the same time: the record read
// is its request's send gate.
func (s *Service) lookup(ctx context.Context, d *delivery) found {
	start := time.Now()
	read := s.records.read(ctx, d.key)
	var early *execution
	if d.readOnly() && d.number <= s.policy.maxDeliver {
		d.gate = read.gate
		ex := s.run(ctx, d, nil) // read-only commands do not use the record
		d.gate = nil
		if !read.refused {
			early = &ex
		}
	}
	rec, rev, err := read.wait()
	s.metrics.observe(jsOutcomeRead, read.took)
	s.stepTook(ctx, "outcome read", start, read.took, err)
	return found{rec: rec, rev: rev, err: err, early: early}
}

// execute runs what act asks for: the command (the early execution when
// lookup ran it), or the reconciliation's query; nil for anything else.
func (s *Service) execute(ctx context.Context, d *delivery, f found, act action) *execution {
	var ex execution
	switch {
	case act.step == stepExecute && f.early != nil:
		return f.early
	case act.step == stepExecute:
		ex = s.run(ctx, d, f.rec)
	case act.step == stepReconcile:
		ex = s.reconcile(ctx, d)
	default:
		return nil
	}
	return &ex
}

// commit does what act says, writing the record (rec, read at revision
// rev) before it publishes anything.
func (s *Service) commit(ctx context.Context, d *delivery, rec *record, rev uint64, ex *execution, act action) settlement {
	switch act.step {
	case stepRepublish:
		publish := act.publish && !s.storedLong(ctx, d, rec)
		if publish {
			d.log.Info("outcome already recorded; publishing it again", "outcome", rec.Outcome)
		} else {
			d.log.Info("outcome already recorded; not executing again", "outcome", rec.Outcome)
		}
		s.metrics.Duplicates.WithLabelValues(metricType(d.ctype)).Inc()
		s.spanOutcome(d, rec.Outcome, true)
		return s.publishRecorded(ctx, d, rec, publish)
	case stepConclude:
		return s.conclude(ctx, d, rec, rev, *ex)
	case stepDeadLetter:
		if err := s.copyToDeadLetters(ctx, d, rec, *act.cause); err != nil {
			return s.infraRetry(d, jsDeadLetter, err)
		}
		rec.DeadLettered = true
		failed := execution{outcome: schemas.Failed, err: act.cause}
		if ex != nil {
			failed.observations, failed.tracks = ex.observations, ex.tracks
		}
		return s.conclude(ctx, d, rec, rev, failed)
	case stepRetryLater, stepHandBack:
		if err := s.observe(ctx, d, ex.observations, time.Time{}); err != nil {
			return s.infraRetry(d, jsStatus, err)
		}
		if err := s.follow(ctx, d, ex.observations, ex.tracks); err != nil {
			return s.infraRetry(d, jsTracking, err)
		}
		if act.step == stepHandBack {
			// Not cut short by the shutdown that stopped the command: the
			// count of requests made is kept.
			if _, err := s.records.put(context.WithoutCancel(ctx), d.key, rec, rev); err != nil {
				d.log.Warn("saving progress failed", "err", err)
			}
			return settlement{kind: ackRetry, reason: "shutdown"}
		}
		rec.LastError = act.cause
		if _, err := s.records.put(ctx, d.key, rec, rev); err != nil {
			if errors.Is(err, errChanged) {
				return s.conflict(ctx, d)
			}
			return s.infraRetry(d, jsOutcomeWrite, err)
		}
		return settlement{kind: ackRetry, delay: act.delay, reason: act.cause.Code + ": " + act.cause.Message}
	}
	// Unreachable: decide asks to run something only before execute.
	d.log.Error("no decision for the delivery; handing it back", "step", act.step.String())
	return settlement{kind: ackRetry, delay: time.Second, reason: "no decision"}
}

// conclude records the final outcome of ex with its event and the status
// changes it revealed, then publishes them.
func (s *Service) conclude(ctx context.Context, d *delivery, rec *record, rev uint64, ex execution) settlement {
	data := publisher.OutcomeData{
		CommandID:   d.id,
		CommandType: d.ctype,
		Attempts:    rec.Attempts,
		Result:      ex.result,
		Reconciled:  ex.reconciled,
		Error:       ex.err,
		Replay:      rec.Replays,
	}
	if ex.outcome == schemas.Rejected {
		data.Attempts = 0
	}
	msg, err := s.pub.NewOutcome(d.ctype, d.id, ex.outcome, data, traceOf(ctx))
	if err != nil {
		// Building an event from our own data cannot fail unless a bug does.
		return s.infraRetry(d, jsOutcomeWrite, err)
	}
	rec.Outcome, rec.Event, rec.LastError, rec.Observations, rec.Tracks = ex.outcome, &msg, nil, ex.observations, ex.tracks
	rec.Published, rec.Seq = true, d.seq // by this delivery, before it is settled
	wctx, span := s.step(ctx, "outcome write")
	start := time.Now()
	// Not cut short by shutdown: once WeChat Pay has answered, losing the
	// outcome would have the redelivery call it again.
	_, err = s.records.put(context.WithoutCancel(wctx), d.key, rec, rev)
	s.metrics.since(jsOutcomeWrite, start)
	endStep(span, err)
	if err != nil {
		if errors.Is(err, errChanged) {
			return s.conflict(ctx, d)
		}
		return s.infraRetry(d, jsOutcomeWrite, err)
	}
	rec.written = time.Time{} // written now, by this delivery: its observations are current
	s.spanOutcome(d, ex.outcome, false)
	s.metrics.Commands.WithLabelValues(metricType(d.ctype), string(ex.outcome)).Inc()
	logOutcome(d, ex, rec.Attempts)
	return s.publishRecorded(ctx, d, rec, true)
}

// conflict handles a record written concurrently by another delivery of the
// same id: whatever it recorded wins; without an outcome, try again later.
func (s *Service) conflict(ctx context.Context, d *delivery) settlement {
	rec, _, err := s.records.get(ctx, d.key)
	if err != nil {
		return s.infraRetry(d, jsOutcomeRead, err)
	}
	if act := s.policy.decide(rec, nil, s.attempt(ctx, d)); act.step == stepRepublish {
		return s.commit(ctx, d, rec, 0, nil, act)
	}
	return settlement{kind: ackRetry, delay: time.Second, reason: "another delivery of the same command id is in progress"}
}

// publishRecorded observes the recorded status changes and publishes the
// recorded event when publish is set, then settles: Ack, or Term for a
// dead-lettered command.
func (s *Service) publishRecorded(ctx context.Context, d *delivery, rec *record, publish bool) settlement {
	if publish {
		// From a record written by an earlier delivery, the observations
		// are older than what was recorded since.
		if err := s.observe(ctx, d, rec.Observations, rec.written); err != nil {
			return s.infraRetry(d, jsStatus, err)
		}
		if err := s.follow(ctx, d, rec.Observations, rec.Tracks); err != nil {
			return s.infraRetry(d, jsTracking, err)
		}
		d.slot.handOver()
		pctx, span := s.publishStep(ctx, *rec.Event)
		start := time.Now()
		err := s.pub.Publish(pctx, *rec.Event)
		s.metrics.since(jsEventPublish, start)
		endStep(span, err)
		if err != nil {
			return s.infraRetry(d, jsEventPublish, err)
		}
	}
	if rec.DeadLettered {
		return settlement{kind: ackTerm, reason: "dead-lettered after " + strconv.FormatUint(d.number, 10) + " deliveries"}
	}
	return settlement{kind: ackDone}
}

// observe records and publishes the status changes obs reveal, for d;
// before, when set, is a time they were made before (see
// publisher.Observation.Before).
func (s *Service) observe(ctx context.Context, d *delivery, obs []publisher.Observation, before time.Time) error {
	for _, ob := range obs {
		ob.CommandID, ob.Before = d.id, before
		_, err := s.observeOne(ctx, ob)
		if err != nil {
			return fmt.Errorf("status %s/%s: %w", ob.Resource, ob.Key, err)
		}
	}
	return nil
}

// follow tells lifecycle tracking what d's answers showed of tracked kinds
// of resources (obs, recorded in the status bucket before; tracks, shown
// without a state), so that each is tracked, restarted or ended; nothing
// when tracking is off.
func (s *Service) follow(ctx context.Context, d *delivery, obs []publisher.Observation, tracks []trackStart) error {
	if s.tracks == nil {
		return nil
	}
	for _, ob := range obs {
		sg := sighting{resource: ob.Resource, key: ob.Key, subMchid: ob.SubMchid, state: ob.State, modifiedAt: ob.ModifiedAt}
		if err := s.tracks.seen(ctx, sg); err != nil {
			return fmt.Errorf("tracking %s/%s: %w", ob.Resource, ob.Key, err)
		}
	}
	for _, t := range tracks {
		sg := sighting{resource: t.Resource, key: t.Key, subMchid: t.SubMchid, changed: t.Changed, notFound: t.NotFound}
		if err := s.tracks.seen(ctx, sg); err != nil {
			return fmt.Errorf("tracking %s/%s: %w", t.Resource, t.Key, err)
		}
	}
	return nil
}

// storedLong reports whether the recorded event that d is about to publish
// again is found in the events stream, looked up when the duplicate window
// may no longer drop it: the record was written by an earlier delivery
// (written is set only on records read) long enough ago (the service was
// down). The lookup failing, the event is published again: a duplicate with
// the same id is better than none.
func (s *Service) storedLong(ctx context.Context, d *delivery, rec *record) bool {
	if rec.written.IsZero() || s.clock().Sub(rec.written) < EventsDuplicateWindow/2 {
		return false
	}
	// Bounded: the lookup must not hold the delivery (kept alive) forever.
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	// Since a little before the record: the servers' clocks may differ.
	stored, err := s.pub.Stored(ctx, s.events, *rec.Event, rec.written.Add(-time.Second))
	switch {
	case err != nil:
		s.metrics.EventLookups.WithLabelValues("failed").Inc()
		d.log.Warn("looking the recorded outcome event up failed; publishing it again", "err", err)
	case stored:
		s.metrics.EventLookups.WithLabelValues("found").Inc()
		d.log.Info("the recorded outcome event is stored already; not publishing it again")
	default:
		s.metrics.EventLookups.WithLabelValues("not_found").Inc()
	}
	return stored
}

// lookupTimeout bounds storedLong's lookup.
const lookupTimeout = 30 * time.Second

// ackKind is how a delivery is settled.
type ackKind int

const (
	ackDone  ackKind = iota // Ack: the outcome event is stored
	ackRetry                // NakWithDelay: deliver again later
	ackTerm                 // Term: dead-lettered, outcome event stored
)

// String names the acknowledgement: ack, nak or term.
func (k ackKind) String() string {
	switch k {
	case ackDone:
		return "ack"
	case ackRetry:
		return "nak"
	}
	return "term"
}

// settlement is how a delivery is settled.
type settlement struct {
	kind   ackKind
	delay  time.Duration
	reason string
}

// settle is the one place where deliveries are acknowledged, handed back or
// terminated.
func (s *Service) settle(ctx context.Context, d *delivery, st settlement) {
	_, span := s.step(ctx, st.kind.String())
	defer func() { span.End() }()
	var err error
	switch st.kind {
	case ackDone:
		err = d.msg.Ack()
	case ackRetry:
		s.metrics.Redeliveries.WithLabelValues(metricType(d.ctype)).Inc()
		d.log.Info("handing back for redelivery", "delay", st.delay, "reason", st.reason)
		err = d.msg.NakWithDelay(st.delay)
	case ackTerm:
		err = d.msg.TermWithReason(st.reason)
	}
	if err != nil {
		// The outcome (if any) is recorded: a redelivery will settle it.
		s.metrics.JetStreamFailures.WithLabelValues(jsSettle).Inc()
		span.SetStatus(codes.Error, "settling failed")
		d.log.Warn("settling the delivery failed; it will be redelivered", "err", err)
	}
}

// infraRetry hands a delivery back after a JetStream failure in step:
// nothing is decided, the next delivery starts over from the record.
func (s *Service) infraRetry(d *delivery, step string, err error) settlement {
	s.metrics.JetStreamFailures.WithLabelValues(step).Inc()
	d.log.Warn("JetStream operation failed", "step", step, "err", err)
	return settlement{kind: ackRetry, delay: min(time.Duration(d.number)*time.Second, 10*time.Second), reason: "jetstream: " + err.Error()}
}

// keepAlive tells JetStream the command is still being worked on, every
// third of the ack wait, until stopped; no signal is sent once stop
// returns. (A timer, not a goroutine: most commands end long before the
// first signal.)
func (s *Service) keepAlive(d *delivery) (stop func()) {
	every := s.cfg.AckWait / 3
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if err := d.msg.InProgress(); err != nil {
			d.log.Debug("in-progress signal failed", "err", err)
		}
		t.Reset(every)
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}
