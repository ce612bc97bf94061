package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

// Service consumes commands from the shared durable consumer, executes them
// against WeChat Pay and publishes their outcome and status events. Create it
// with [New]; [Service.Run] blocks until its context ends and then drains.
type Service struct {
	cfg      Config
	js       jetstream.JetStream
	topo     Topology
	client   *wxpay.Client
	pub      *publisher.Publisher
	events   jetstream.Stream
	tracker  *publisher.StatusTracker
	records  records
	cons     jetstream.Consumer
	log      *slog.Logger
	metrics  *Metrics
	clock    func() time.Time
	ready    atomic.Bool
	inflight sync.WaitGroup

	// sem holds a token per command being worked on (and per puller
	// waiting for a message to give a worker): Concurrency at most, but
	// for the overdraft of commands back from a backoff wait.
	sem       chan struct{}
	overdraft atomic.Int64
	// parked holds a token per command waiting out a retry backoff without
	// a worker slot (see waitOut): Concurrency at most.
	parked chan struct{}
	// handoff passes the slot of a command about to finish to a puller
	// waiting for one (see offerHandover).
	handoff chan *handover
	// idle passes a delivery to a worker waiting for its next one, and
	// workers counts the worker goroutines, busy or idle (see dispatch).
	idle    chan jetstream.Msg
	workers sync.WaitGroup
}

// handover is the slot of a finishing command, promised to a puller: the
// puller asks for the next command at once, and the slot itself is passed on
// the channel once the finishing command is settled.
type handover struct{ slot chan struct{} }

// Options are the collaborators of a Service beyond its Config.
type Options struct {
	// JetStream is the JetStream context to work through (required).
	JetStream jetstream.JetStream
	// Client calls WeChat Pay (required).
	Client *wxpay.Client
	// Logger receives structured logs; slog.Default() when nil.
	Logger *slog.Logger
	// Metrics records Prometheus metrics; a private registry when nil.
	Metrics *Metrics
	// Clock is the time source of events; time.Now when nil.
	Clock func() time.Time
}

// New provisions (or, with Config.Provision false, checks) the streams,
// consumer and buckets and returns a Service ready to [Service.Run].
func New(ctx context.Context, cfg Config, o Options) (*Service, error) {
	if o.JetStream == nil || o.Client == nil {
		return nil, errors.New("consumer: New needs a JetStream context and a WeChat Pay client")
	}
	s := &Service{cfg: cfg, js: o.JetStream, client: o.Client, log: o.Logger, metrics: o.Metrics, clock: o.Clock}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	s.topo = NewTopology(cfg)
	h, err := Provision(ctx, s.js, s.topo, cfg.Provision)
	if err != nil {
		return nil, err
	}
	s.cons, s.records = h.Consumer, records{kv: h.Outcomes}
	s.pub, err = publisher.New(s.js, publisher.Config{Prefix: cfg.Prefix, MchID: cfg.MchID, Clock: s.clock})
	if err != nil {
		return nil, err
	}
	s.events = h.Events
	s.tracker = s.pub.StatusTracker(h.Status, h.Events)
	s.sem = make(chan struct{}, cfg.Concurrency)
	s.parked = make(chan struct{}, cfg.Concurrency)
	s.handoff = make(chan *handover)
	s.idle = make(chan jetstream.Msg)
	return s, nil
}

// Topology returns the JetStream objects the service uses.
func (s *Service) Topology() Topology { return s.topo }

// Ready reports whether the service has provisioned its objects and is
// consuming (the /readyz answer).
func (s *Service) Ready() bool { return s.ready.Load() }

// Run consumes commands until ctx ends, then stops pulling, lets in-flight
// commands finish for up to Config.ShutdownTimeout, cancels the rest (they
// are handed back for redelivery) and returns once its workers have ended.
// It returns an error only when consumption cannot start.
func (s *Service) Run(ctx context.Context) error {
	// Commands run under their own context: cancelling ctx starts the drain,
	// and only the shutdown timeout cancels the commands themselves.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	// A local copy of the status bucket spares the read of an unchanged
	// state; without it (the watch refused) every observation reads.
	if err := s.tracker.Follow(workCtx, 0); err != nil {
		s.log.Warn("status records will be read for every observation", "err", err)
	}
	s.ready.Store(true)
	s.log.Info("consuming commands", "stream", s.topo.Commands.Name, "consumer", s.topo.Consumer.Durable,
		"concurrency", s.cfg.Concurrency, "max_deliver", s.cfg.MaxDeliver)
	s.pull(ctx, workCtx)

	s.ready.Store(false)
	s.log.Info("shutting down: no new commands; waiting for those in flight", "timeout", s.cfg.ShutdownTimeout)
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.log.Info("drained")
	case <-time.After(s.cfg.ShutdownTimeout):
		s.log.Warn("shutdown timeout: cancelling commands still in flight; they will be redelivered")
		cancelWork()
		<-done
	}
	cancelWork() // the idle workers and the status bucket's watch end with the work context
	s.workers.Wait()
	<-s.tracker.FollowEnded()
	return nil
}

// maxPullers bounds the pull requests one instance keeps open: each puller
// holds at most one, for one message. A few pullers keep every worker busy
// (a pull takes one round trip, a command many), and few keep the
// consumer's queue of waiting pull requests, shared by every instance and
// bounded by the server (MaxWaiting, 512 by default), short.
const maxPullers = 16

// pullExpiry is how long one pull request waits on the server for a
// message before the puller asks again.
const pullExpiry = 30 * time.Second

// closeWait bounds the wait for a message already on its way to a puller
// when the service stops pulling (once the server has the unsubscription,
// it assigns no more: a message can only be on the wire).
const closeWait = 200 * time.Millisecond

// pull runs the pullers until ctx ends. A puller asks for a message only
// while it holds a free worker slot, or the promise of one about to be freed
// (offerHandover), and for one message only, so that no message waits in a
// client-side buffer while its ack timer runs: a command is pulled when a
// worker can start it at once, or within a round trip, and goes to that
// worker the moment it can. Every puller owns its own iterator (a long-lived
// subscription: no subscription is made per pull).
func (s *Service) pull(ctx, workCtx context.Context) {
	var wg sync.WaitGroup
	for range min(cap(s.sem), maxPullers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.puller(ctx, workCtx)
		}()
	}
	wg.Wait()
}

// puller pulls commands for free workers until ctx ends, making its iterator
// again after a terminal error (consumer deleted, connection closed).
func (s *Service) puller(ctx, workCtx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		it, err := s.cons.Messages(jetstream.PullMaxMessages(1), jetstream.PullExpiry(pullExpiry))
		if err == nil {
			err = s.pullWith(ctx, workCtx, it, &failures)
		}
		if err == nil {
			return
		}
		failures++
		s.logPullError(err, failures)
		select {
		case <-time.After(min(time.Duration(failures)*100*time.Millisecond, 2*time.Second)):
		case <-ctx.Done():
		}
	}
}

// pullWith pulls through it until ctx ends (nil) or it fails for good.
func (s *Service) pullWith(ctx, workCtx context.Context, it jetstream.MessagesContext, failures *int) error {
	for {
		// Wait for a free worker before asking for a message, or for the
		// promise of one: a command that is finishing hands its slot over,
		// so that the pull overlaps its last round trip (the message then
		// waits for that slot no longer than that takes).
		var h *handover
		select {
		case s.sem <- struct{}{}:
		case h = <-s.handoff:
		case <-ctx.Done():
			s.stopPulling(it)
			return nil
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if h != nil {
			<-h.slot
		}
		if err != nil {
			s.releaseSlot()
			switch {
			case ctx.Err() != nil:
				s.stopPulling(it)
				return nil
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				// The pull request was lost (a server restart, a
				// leadership change): the iterator asks again.
				*failures++
				s.logPullError(err, *failures)
				continue
			default:
				it.Stop()
				return err
			}
		}
		*failures = 0
		s.dispatch(workCtx, msg)
	}
}

// dispatch hands one delivery to a worker: one waiting for its next
// delivery if there is one, else a new one. Workers are kept rather than
// started per delivery because a command needs a deep stack (signing, HTTP,
// JetStream): a new goroutine grows its stack, copy by copy, for every
// command, a kept one once. There are never more workers than twice the
// most commands in flight at once (a worker that has just freed its slot
// may miss the next delivery); they end with the work context.
func (s *Service) dispatch(workCtx context.Context, msg jetstream.Msg) {
	s.inflight.Add(1)
	s.metrics.InFlight.Inc()
	select {
	case s.idle <- msg:
	default:
		s.workers.Add(1)
		go s.worker(workCtx, msg)
	}
}

// worker works on msg, then on each delivery dispatch gives it, until the
// work context ends.
func (s *Service) worker(workCtx context.Context, msg jetstream.Msg) {
	defer s.workers.Done()
	for {
		s.work(workCtx, msg)
		select {
		case msg = <-s.idle:
		case <-workCtx.Done():
			return
		}
	}
}

// work runs one delivery and frees its slot once it is settled.
func (s *Service) work(workCtx context.Context, msg jetstream.Msg) {
	h := s.handle(workCtx, msg)
	s.metrics.InFlight.Dec()
	if h != nil {
		h.slot <- struct{}{} // to the puller it was promised to
	} else {
		s.releaseSlot()
	}
	s.inflight.Done()
}

// offerHandover promises the slot of d, which is finishing (only the
// publication of its outcome event and the acknowledgement remain), to a
// puller waiting for a slot, if one is: the pull's round trip then overlaps
// the publication's. The slot follows when d is settled, whatever the
// publication's fate.
func (s *Service) offerHandover(d *delivery) {
	if d.handover != nil {
		return
	}
	h := &handover{slot: make(chan struct{}, 1)}
	select {
	case s.handoff <- h:
		d.handover = h
	default:
	}
}

// releaseSlot gives a worker slot up. The overdraft of commands that came
// back from a backoff wait while every slot was taken is paid off first, so
// that the pullers wait until the commands worked on are within the bound
// again. (Tokens plus overdraft always count the slots held, so the receive
// never blocks.)
func (s *Service) releaseSlot() {
	for {
		n := s.overdraft.Load()
		if n == 0 {
			<-s.sem
			return
		}
		if s.overdraft.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// waitOut waits out a retry backoff of a WeChat Pay call (the client's
// retry wait). The command gives its worker slot up for the wait, so that
// the backoff of one command does not hold up the others: a puller takes
// the slot for the next command. Back from the wait, the command takes a
// free slot, or, when there is none, goes over the bound until as many
// commands have finished (it never queues for a slot behind new commands,
// nor behind a puller idling for a message). At most Concurrency commands
// wait this way at once; beyond that a command waits holding its slot.
func (s *Service) waitOut(ctx context.Context, d time.Duration) error {
	select {
	case s.parked <- struct{}{}:
	default:
		return sleepContext(ctx, d)
	}
	s.releaseSlot()
	err := sleepContext(ctx, d)
	select {
	case s.sem <- struct{}{}:
	default:
		s.overdraft.Add(1)
	}
	<-s.parked
	return err
}

// sleepContext waits d, or until ctx ends (its error).
func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopPulling ends an iterator when the service stops: a message that the
// server sent for the pull under way (it can be on the wire) is handed back
// at once for another instance, rather than left to its ack timeout.
func (s *Service) stopPulling(it jetstream.MessagesContext) {
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(closeWait))
		if err != nil {
			it.Stop()
			return
		}
		if err := msg.Nak(); err != nil {
			s.log.Debug("handing back a command pulled during shutdown failed", "err", err)
		}
	}
}

// logPullError logs a failed pull: quietly while NATS reconnects or a
// stream leader is elected, loudly when it persists.
func (s *Service) logPullError(err error, failures int) {
	if failures < 10 {
		s.log.Debug("pull failed; retrying", "err", err, "failures", failures)
		return
	}
	s.log.Warn("pull failing repeatedly", "err", err, "failures", failures)
}

// delivery is one delivery of a command, as the service sees it.
type delivery struct {
	msg         jetstream.Msg
	id          string // command id
	idInvalid   bool   // the Nats-Msg-Id header was present but invalid
	key         string // id encoded for the outcomes bucket
	ctype       string // command type, from the subject
	number      uint64 // delivery count, from 1
	seq         uint64 // commands stream sequence (0 when the metadata is unreadable)
	traceparent string
	gate        func(context.Context) error // send gate of the WeChat Pay requests, if any
	log         *slog.Logger
	handover    *handover // the slot is promised to a puller (offerHandover)
}

func (s *Service) newDelivery(msg jetstream.Msg) *delivery {
	d := &delivery{msg: msg, number: 1}
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
	if tp := h.Get(schemas.HeaderTraceparent); schemas.ValidTraceparent(tp) {
		d.traceparent = tp
	}
	d.log = s.log.With("command_id", d.id, "command_type", d.ctype, "delivery", d.number)
	if d.traceparent != "" {
		d.log = d.log.With("traceparent", d.traceparent)
	}
	return d
}

// handle runs one delivery to its end: every path ends in exactly one
// settlement (ack, delayed nak or term) chosen by settle. It returns the
// handover its slot was promised to, if any.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) *handover {
	d := s.newDelivery(msg)
	stop := s.keepAlive(d)
	a := s.process(ctx, d)
	stop()
	s.settle(d, a)
	return d.handover
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

// ackKind is how a delivery is settled.
type ackKind int

const (
	ackDone  ackKind = iota // Ack: the outcome event is stored
	ackRetry                // NakWithDelay: deliver again later
	ackTerm                 // Term: dead-lettered, outcome event stored
)

// action is the settlement of a delivery.
type action struct {
	kind   ackKind
	delay  time.Duration
	reason string
}

// settle is the one place where deliveries are acknowledged, handed back or
// terminated.
func (s *Service) settle(d *delivery, a action) {
	var err error
	switch a.kind {
	case ackDone:
		err = d.msg.Ack()
	case ackRetry:
		s.metrics.Redeliveries.WithLabelValues(metricType(d.ctype)).Inc()
		d.log.Info("handing back for redelivery", "delay", a.delay, "reason", a.reason)
		err = d.msg.NakWithDelay(a.delay)
	case ackTerm:
		err = d.msg.TermWithReason(a.reason)
	}
	if err != nil {
		// The outcome (if any) is recorded: a redelivery will settle it.
		d.log.Warn("settling the delivery failed; it will be redelivered", "err", err)
	}
}

// redeliveryDelay is the wait before delivery number n+1 after delivery n ran
// out of in-process retries: RedeliveryDelay doubled per delivery, capped.
func (s *Service) redeliveryDelay(n uint64) time.Duration {
	d := s.cfg.RedeliveryDelay
	for i := uint64(1); i < n && d < MaxRedeliveryDelay; i++ {
		d *= 2
	}
	return min(d, MaxRedeliveryDelay)
}

// infraRetry hands a delivery back after a NATS-side failure (KV, publish):
// nothing is decided, the next delivery starts over from the record.
func (s *Service) infraRetry(d *delivery, err error) action {
	d.log.Warn("JetStream operation failed", "err", err)
	return action{kind: ackRetry, delay: min(time.Duration(d.number)*time.Second, 10*time.Second), reason: "jetstream: " + err.Error()}
}

// process decides what becomes of one delivery and does everything that must
// happen before it is settled.
//
// The outcome record is read first: a command with an outcome is answered
// from it and never executed again. A read-only command is parsed and its
// first request signed while the record is read; the request waits at its
// send gate until the read shows the command has no outcome (otherwise
// nothing is sent and the execution is dropped).
//
// A final outcome is recorded, with its event and the status changes the
// answers revealed, as soon as the execution ends: only then are the status
// changes and the event published (finish). Whatever stops the delivery
// after the record is written, its redelivery publishes them from the
// record, and WeChat Pay is not called again.
func (s *Service) process(ctx context.Context, d *delivery) action {
	look := s.records.read(ctx, d.key)
	var early *execution
	if readOnly(d.ctype) && d.number <= uint64(s.cfg.MaxDeliver) {
		d.gate = look.gate
		ex := s.execute(ctx, d, nil) // read-only handlers do not use the record
		d.gate = nil
		if !look.refused {
			early = &ex
		}
	}
	rec, rev, err := look.wait()
	s.metrics.observe(stepOutcomeRead, look.took)
	if err != nil {
		return s.infraRetry(d, err)
	}
	if rec.done() {
		d.log.Info("outcome already recorded; not executing again", "outcome", rec.Outcome)
		return s.finish(ctx, d, rec, mustPublish(d, rec))
	}
	if rec == nil {
		rec = &record{}
	}
	if d.number > uint64(s.cfg.MaxDeliver) {
		// The previous (last allowed) delivery ended without a decision,
		// e.g. its instance died: dead-letter without executing again,
		// unless a query proves that its request took effect.
		ex, ok := s.tookEffect(ctx, d)
		rec.Attempts += ex.attempts
		if ok {
			return s.conclude(ctx, d, rec, rev, ex)
		}
		lastErr := rec.LastError
		if lastErr == nil {
			lastErr = &publisher.ErrorData{Code: schemas.CodeTransportError, Message: "no outcome after the allowed deliveries"}
		}
		return s.deadLetter(ctx, d, rec, rev, *lastErr)
	}

	var ex execution
	if early != nil {
		ex = *early
	} else {
		ex = s.execute(ctx, d, rec)
	}
	rec.Attempts += ex.attempts
	rec.Ambiguous = rec.Ambiguous || ex.ambiguous

	switch ex.outcome {
	case outcomeRetry:
		if err := s.observe(ctx, d, ex.observations, time.Time{}); err != nil {
			return s.infraRetry(d, err)
		}
		if ctx.Err() != nil {
			// Shutdown cancelled the command: hand it back at once, keeping
			// the count of requests made.
			if _, err := s.records.put(context.WithoutCancel(ctx), d.key, rec, rev); err != nil {
				d.log.Warn("saving progress failed", "err", err)
			}
			return action{kind: ackRetry, delay: 0, reason: "shutdown"}
		}
		rec.LastError = ex.err
		if d.number >= uint64(s.cfg.MaxDeliver) {
			return s.deadLetter(ctx, d, rec, rev, *ex.err)
		}
		if _, err := s.records.put(ctx, d.key, rec, rev); err != nil {
			if errors.Is(err, errRecordConflict) {
				return s.conflict(ctx, d)
			}
			return s.infraRetry(d, err)
		}
		return action{kind: ackRetry, delay: s.redeliveryDelay(d.number), reason: ex.err.Code + ": " + ex.err.Message}
	default:
		return s.conclude(ctx, d, rec, rev, ex)
	}
}

// conclude records a final outcome with its event, then publishes it.
func (s *Service) conclude(ctx context.Context, d *delivery, rec *record, rev uint64, ex execution) action {
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
	msg, err := s.pub.NewOutcome(d.ctype, d.id, ex.outcome, data, d.traceparent)
	if err != nil {
		// Building an event from our own data cannot fail unless a bug does.
		return s.infraRetry(d, err)
	}
	rec.Outcome, rec.Event, rec.LastError, rec.Observations = ex.outcome, &msg, nil, ex.observations
	rec.Published, rec.Seq = true, d.seq // by this delivery, before it is settled
	start := time.Now()
	// Not cut short by shutdown: once WeChat Pay has answered, losing the
	// outcome would have the redelivery call it again.
	_, err = s.records.put(context.WithoutCancel(ctx), d.key, rec, rev)
	s.metrics.since(stepOutcomeWrite, start)
	if err != nil {
		if errors.Is(err, errRecordConflict) {
			return s.conflict(ctx, d)
		}
		return s.infraRetry(d, err)
	}
	rec.written = time.Time{} // written now, by this delivery: nothing to look up (storedLong)
	s.metrics.Commands.WithLabelValues(metricType(d.ctype), string(ex.outcome)).Inc()
	logOutcome(d, ex, rec.Attempts)
	return s.finish(ctx, d, rec, true)
}

// conflict handles a record written concurrently by another delivery of the
// same id: whatever it recorded wins; without an outcome, try again later.
func (s *Service) conflict(ctx context.Context, d *delivery) action {
	rec, _, err := s.records.get(ctx, d.key)
	if err != nil {
		return s.infraRetry(d, err)
	}
	if rec.done() {
		return s.finish(ctx, d, rec, mustPublish(d, rec))
	}
	return action{kind: ackRetry, delay: time.Second, reason: "another delivery of the same command id is in progress"}
}

// mustPublish reports whether d, finding the outcome of its command
// recorded, must publish the recorded event again: when the record does not
// say it is published, and on a redelivery of the message whose delivery
// recorded it, which may have stopped before JetStream stored the event
// (Published is written ahead of the event). A republish inside the events
// stream's duplicate window is dropped as a duplicate; such a redelivery
// comes within the ack wait, well inside it. A redelivery of another
// message with the same id (sent again past the commands stream's duplicate
// window, possibly long after the event) trusts the flag like its first
// delivery: republished past the events stream's window, the event would be
// stored twice.
func mustPublish(d *delivery, rec *record) bool {
	return !rec.Published || d.number > 1 && (rec.Seq == 0 || rec.Seq == d.seq)
}

// finish observes the recorded status changes and publishes the recorded
// event when publish is set, then settles: Ack, or Term for a dead-lettered
// command.
func (s *Service) finish(ctx context.Context, d *delivery, rec *record, publish bool) action {
	if publish && s.storedLong(ctx, d, rec) {
		d.log.Info("the recorded outcome event is stored already; not publishing it again")
		publish = false
	}
	if publish {
		// From a record written by an earlier delivery, the observations
		// are older than what was recorded since.
		if err := s.observe(ctx, d, rec.Observations, rec.written); err != nil {
			return s.infraRetry(d, err)
		}
		s.offerHandover(d)
		start := time.Now()
		err := s.pub.Publish(ctx, *rec.Event)
		s.metrics.since(stepEventPublish, start)
		if err != nil {
			return s.infraRetry(d, err)
		}
	}
	if rec.DeadLettered {
		return action{kind: ackTerm, reason: "dead-lettered after " + strconv.FormatUint(d.number, 10) + " deliveries"}
	}
	return action{kind: ackDone}
}

// observe records and publishes the status changes obs reveal, for d;
// before, when set, is a time they were made before (see
// publisher.Observation.Before).
func (s *Service) observe(ctx context.Context, d *delivery, obs []publisher.Observation, before time.Time) error {
	for _, ob := range obs {
		ob.CommandID, ob.Traceparent, ob.Before = d.id, d.traceparent, before
		start := time.Now()
		_, err := s.tracker.Observe(ctx, ob)
		s.metrics.since(stepStatus, start)
		if err != nil {
			return fmt.Errorf("status %s/%s: %w", ob.Resource, ob.Key, err)
		}
	}
	return nil
}

// storedLong reports whether the recorded event that d is about to publish
// again (mustPublish) is found in the events stream, looked up when the
// duplicate window may no longer drop it: the record was written by an
// earlier delivery (written is set only on records read) long enough ago
// (the service was down). The lookup failing, the event is published
// again: a duplicate with the same id is better than none.
func (s *Service) storedLong(ctx context.Context, d *delivery, rec *record) bool {
	if rec.written.IsZero() || s.clock().Sub(rec.written) < EventsDuplicateWindow/2 {
		return false
	}
	d.log.Debug("looking the recorded outcome event up in the events stream", "written", rec.written)
	// Bounded: the lookup must not hold the delivery (kept alive) forever.
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	// Since a little before the record: the servers' clocks may differ.
	stored, err := s.pub.Stored(ctx, s.events, *rec.Event, rec.written.Add(-time.Second))
	if err != nil {
		d.log.Warn("looking the recorded outcome event up failed; publishing it again", "err", err)
	}
	return stored
}

// lookupTimeout bounds storedLong's lookup.
const lookupTimeout = 30 * time.Second

// deadLetter copies the command to <prefix>.dlq.<type> with the reason, then
// concludes it as failed; settle terminates it.
func (s *Service) deadLetter(ctx context.Context, d *delivery, rec *record, rev uint64, cause publisher.ErrorData) action {
	out := nats.NewMsg(s.cfg.Prefix + ".dlq." + schemas.EncodeToken(d.ctype))
	out.Data = d.msg.Data()
	schemas.CopyCommandHeaders(out.Header, d.msg.Headers(), "")
	out.Header.Set(schemas.HeaderCommandID, d.id)
	out.Header.Set(schemas.HeaderCommandType, d.ctype)
	out.Header.Set(schemas.HeaderErrorCode, cause.Code)
	out.Header.Set(schemas.HeaderErrorMessage, dlqHeaderValue(cause.Message))
	out.Header.Set(schemas.HeaderDeliveries, strconv.FormatUint(d.number, 10))
	// One copy per run of the command: a replay that fails again is copied
	// again, not dropped as a duplicate of the first copy.
	id := "dlq/" + d.id
	if rec.Replays > 0 {
		id += "/replay-" + strconv.Itoa(rec.Replays)
	}
	if _, err := s.js.PublishMsg(ctx, out, jetstream.WithMsgID(id)); err != nil {
		return s.infraRetry(d, fmt.Errorf("dead-letter copy: %w", err))
	}
	s.metrics.DeadLetters.WithLabelValues(metricType(d.ctype)).Inc()
	d.log.Warn("dead-lettered", "error_code", cause.Code, "attempts", rec.Attempts)
	rec.DeadLettered = true
	return s.conclude(ctx, d, rec, rev, execution{outcome: schemas.Failed, err: &cause})
}

// dlqHeaderValue keeps an error message fit for a header: control
// characters (line breaks included) become spaces, invalid UTF-8 is
// replaced, and it is cut to at most 512 bytes on a character boundary.
func dlqHeaderValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > 512 {
		cut := 512
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

func logOutcome(d *delivery, ex execution, attempts int) {
	attrs := []any{"outcome", ex.outcome, "attempts", attempts}
	if ex.reconciled {
		attrs = append(attrs, "reconciled", true)
	}
	if ex.err != nil {
		attrs = append(attrs, "error_code", ex.err.Code, "error", ex.err.Message)
	}
	switch ex.outcome {
	case schemas.Succeeded:
		d.log.Info("command succeeded", attrs...)
	default:
		d.log.Warn("command "+string(ex.outcome), attrs...)
	}
}
