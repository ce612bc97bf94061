package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	tracker  *publisher.StatusTracker
	records  records
	cons     jetstream.Consumer
	log      *slog.Logger
	metrics  *Metrics
	clock    func() time.Time
	ready    atomic.Bool
	sem      chan struct{}
	inflight sync.WaitGroup
}

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
	s.tracker = s.pub.StatusTracker(h.Status)
	s.sem = make(chan struct{}, cfg.Concurrency)
	return s, nil
}

// Topology returns the JetStream objects the service uses.
func (s *Service) Topology() Topology { return s.topo }

// Ready reports whether the service has provisioned its objects and is
// consuming (the /readyz answer).
func (s *Service) Ready() bool { return s.ready.Load() }

// Run consumes commands until ctx ends, then stops pulling, lets in-flight
// commands finish for up to Config.ShutdownTimeout, cancels the rest (they
// are handed back for redelivery) and returns. It returns an error only when
// consumption cannot start.
func (s *Service) Run(ctx context.Context) error {
	// Commands run under their own context: cancelling ctx starts the drain,
	// and only the shutdown timeout cancels the commands themselves.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

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
	return nil
}

// fetchWait bounds one pull request: an idle instance asks again this often,
// and a shutdown waits at most this long for the pull under way.
const fetchWait = 2 * time.Second

// pull fetches commands only for free workers, so that no message waits in
// a client-side buffer while its ack timer runs: a command is pulled when a
// worker can start it at once. Every free worker is asked for in one pull,
// so pulls batch naturally under load. It returns when ctx ends.
func (s *Service) pull(ctx, workCtx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		// Wait for one free worker, then take every other free one.
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	more:
		for n < cap(s.sem) {
			select {
			case s.sem <- struct{}{}:
				n++
			default:
				break more
			}
		}
		batch, err := s.cons.Fetch(n, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			s.release(n)
			failures++
			s.logPullError(err, failures)
			select {
			case <-time.After(min(time.Duration(failures)*100*time.Millisecond, 2*time.Second)):
			case <-ctx.Done():
			}
			continue
		}
		for msg := range batch.Messages() {
			n--
			s.inflight.Add(1)
			s.metrics.InFlight.Inc()
			go func() {
				defer func() {
					s.metrics.InFlight.Dec()
					<-s.sem
					s.inflight.Done()
				}()
				s.handle(workCtx, msg)
			}()
		}
		s.release(n)
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			failures++
			s.logPullError(err, failures)
			continue
		}
		failures = 0
	}
}

// release frees n worker slots taken for a pull that brought fewer messages.
func (s *Service) release(n int) {
	for range n {
		<-s.sem
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

// traceparentPattern is a W3C trace-context traceparent, version 00.
var traceparentPattern = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// delivery is one delivery of a command, as the service sees it.
type delivery struct {
	msg         jetstream.Msg
	id          string // command id
	idInvalid   bool   // the Nats-Msg-Id header was present but invalid
	key         string // id encoded for the outcomes bucket
	ctype       string // command type, from the subject
	number      uint64 // delivery count, from 1
	traceparent string
	log         *slog.Logger
}

func (s *Service) newDelivery(msg jetstream.Msg) *delivery {
	d := &delivery{msg: msg, number: 1}
	var seq uint64
	if meta, err := msg.Metadata(); err == nil {
		d.number, seq = meta.NumDelivered, meta.Sequence.Stream
	}
	h := msg.Headers()
	d.id = h.Get(jetstream.MsgIDHeader)
	if d.id == "" || !schemas.ValidCommandID(d.id) {
		d.idInvalid = d.id != ""
		d.id = "seq-" + strconv.FormatUint(seq, 10)
	}
	d.key = publisher.EncodeToken(d.id)
	d.ctype = strings.TrimPrefix(msg.Subject(), s.cfg.Prefix+".cmd.")
	if tp := h.Get("traceparent"); traceparentPattern.MatchString(tp) {
		d.traceparent = tp
	}
	d.log = s.log.With("command_id", d.id, "command_type", d.ctype, "delivery", d.number)
	if d.traceparent != "" {
		d.log = d.log.With("traceparent", d.traceparent)
	}
	return d
}

// handle runs one delivery to its end: every path ends in exactly one
// settlement (ack, delayed nak or term) chosen by settle.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) {
	d := s.newDelivery(msg)
	stop := s.keepAlive(d)
	a := s.process(ctx, d)
	stop()
	s.settle(d, a)
}

// keepAlive tells JetStream the command is still being worked on, every
// third of the ack wait, until stopped.
func (s *Service) keepAlive(d *delivery) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := d.msg.InProgress(); err != nil {
					d.log.Debug("in-progress signal failed", "err", err)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
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
func (s *Service) process(ctx context.Context, d *delivery) action {
	rec, rev, err := s.records.get(ctx, d.key)
	if err != nil {
		return s.infraRetry(d, err)
	}
	if rec.done() {
		d.log.Info("outcome already recorded; not executing again", "outcome", rec.Outcome)
		return s.finish(ctx, d, rec, rev)
	}
	if rec == nil {
		rec = &record{}
	}
	if d.number > uint64(s.cfg.MaxDeliver) {
		// The previous (last allowed) delivery ended without a decision,
		// e.g. its instance died: dead-letter without executing again.
		lastErr := rec.LastError
		if lastErr == nil {
			lastErr = &publisher.ErrorData{Code: schemas.CodeTransportError, Message: "no outcome after the allowed deliveries"}
		}
		return s.deadLetter(ctx, d, rec, rev, *lastErr)
	}

	ex := s.execute(ctx, d, rec)
	for _, ob := range ex.observations {
		ob.CommandID, ob.Traceparent = d.id, d.traceparent
		if _, err := s.tracker.Observe(ctx, ob); err != nil {
			return s.infraRetry(d, fmt.Errorf("status %s/%s: %w", ob.Resource, ob.Key, err))
		}
	}
	rec.Attempts += ex.attempts
	rec.Ambiguous = rec.Ambiguous || ex.ambiguous

	switch ex.outcome {
	case outcomeRetry:
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
	if ex.outcome == publisher.Rejected {
		data.Attempts = 0
	}
	msg, err := s.pub.NewOutcome(d.ctype, d.id, ex.outcome, data, d.traceparent)
	if err != nil {
		// Building an event from our own data cannot fail unless a bug does.
		return s.infraRetry(d, err)
	}
	rec.Outcome, rec.Event, rec.LastError = ex.outcome, &msg, nil
	nrev, err := s.records.put(ctx, d.key, rec, rev)
	if err != nil {
		if errors.Is(err, errRecordConflict) {
			return s.conflict(ctx, d)
		}
		return s.infraRetry(d, err)
	}
	s.metrics.Commands.WithLabelValues(metricType(d.ctype), string(ex.outcome)).Inc()
	logOutcome(d, ex, rec.Attempts)
	return s.finish(ctx, d, rec, nrev)
}

// conflict handles a record written concurrently by another delivery of the
// same id: whatever it recorded wins; without an outcome, try again later.
func (s *Service) conflict(ctx context.Context, d *delivery) action {
	rec, rev, err := s.records.get(ctx, d.key)
	if err != nil {
		return s.infraRetry(d, err)
	}
	if rec.done() {
		return s.finish(ctx, d, rec, rev)
	}
	return action{kind: ackRetry, delay: time.Second, reason: "another delivery of the same command id is in progress"}
}

// finish publishes the recorded event unless JetStream already has it, marks
// it published, and settles: Ack, or Term for a dead-lettered command.
func (s *Service) finish(ctx context.Context, d *delivery, rec *record, rev uint64) action {
	if !rec.Published {
		if err := s.pub.Publish(ctx, *rec.Event); err != nil {
			return s.infraRetry(d, err)
		}
		rec.Published = true
		if _, err := s.records.put(ctx, d.key, rec, rev); err != nil && !errors.Is(err, errRecordConflict) {
			// The event is stored; a redelivery republishes it with the same
			// id, which JetStream drops as a duplicate.
			d.log.Warn("marking the outcome published failed", "err", err)
		}
	}
	if rec.DeadLettered {
		return action{kind: ackTerm, reason: "dead-lettered after " + strconv.FormatUint(d.number, 10) + " deliveries"}
	}
	return action{kind: ackDone}
}

// Dead-letter headers (contract §5).
const (
	HeaderDLQCommandID    = "Wxcancel-Command-Id"
	HeaderDLQCommandType  = "Wxcancel-Command-Type"
	HeaderDLQErrorCode    = "Wxcancel-Error-Code"
	HeaderDLQErrorMessage = "Wxcancel-Error-Message"
	HeaderDLQDeliveries   = "Wxcancel-Deliveries"
)

// deadLetter copies the command to <prefix>.dlq.<type> with the reason, then
// concludes it as failed; settle terminates it.
func (s *Service) deadLetter(ctx context.Context, d *delivery, rec *record, rev uint64, cause publisher.ErrorData) action {
	out := nats.NewMsg(s.cfg.Prefix + ".dlq." + publisher.EncodeToken(d.ctype))
	out.Data = d.msg.Data()
	for k, v := range d.msg.Headers() {
		if k == jetstream.MsgIDHeader {
			continue
		}
		out.Header[k] = append([]string(nil), v...)
	}
	out.Header.Set(HeaderDLQCommandID, d.id)
	out.Header.Set(HeaderDLQCommandType, d.ctype)
	out.Header.Set(HeaderDLQErrorCode, cause.Code)
	out.Header.Set(HeaderDLQErrorMessage, headerSafe(cause.Message))
	out.Header.Set(HeaderDLQDeliveries, strconv.FormatUint(d.number, 10))
	if _, err := s.js.PublishMsg(ctx, out, jetstream.WithMsgID("dlq/"+d.id)); err != nil {
		return s.infraRetry(d, fmt.Errorf("dead-letter copy: %w", err))
	}
	s.metrics.DeadLetters.WithLabelValues(metricType(d.ctype)).Inc()
	d.log.Warn("dead-lettered", "error_code", cause.Code, "attempts", rec.Attempts)
	rec.DeadLettered = true
	return s.conclude(ctx, d, rec, rev, execution{outcome: publisher.Failed, err: &cause})
}

// headerSafe keeps a header value on one line and bounded.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
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
	case publisher.Succeeded:
		d.log.Info("command succeeded", attrs...)
	default:
		d.log.Warn("command "+string(ex.outcome), attrs...)
	}
}
