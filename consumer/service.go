// Package consumer is the wxcancel service: it consumes commands from the
// shared durable consumer, executes them against WeChat Pay and publishes
// their outcome and status events, with the guarantees docs/interface.md
// describes.
//
// Where things are: service.go starts and stops the service; workers.go
// pulls commands for a bounded number of workers (the mechanics, which know
// nothing of commands); pipeline.go runs one delivery from the outcome
// record to its acknowledgement, step by step; decide.go is the pure
// decision at the heart of it; commands.go the table of command types and
// their calls; record.go the outcome records; provision.go the JetStream
// objects.
package consumer

import (
	"context"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/wxpay"
)

// Service consumes commands from the shared durable consumer, executes them
// against WeChat Pay and publishes their outcome and status events. Create
// it with [New]; [Service.Run] blocks until its context ends and then
// drains.
type Service struct {
	cfg     Config
	policy  policy
	js      jetstream.JetStream
	topo    Topology
	client  *wxpay.Client
	pub     *publisher.Publisher
	events  jetstream.Stream
	tracker *publisher.StatusTracker
	records records
	workers *workers
	// consumer is the shared durable consumer, for its counts in metrics.
	consumer jetstream.Consumer
	tracks   *tracks // nil when tracking is off
	poller   *poller // nil when tracking is off
	log      *slog.Logger
	metrics  *Metrics
	tracer   trace.Tracer
	tracing  bool // spans are made (see tracerOf)
	clock    func() time.Time
	// claimFor is how long a delivery's claim on executing its command
	// holds (see record.Running): its two WeChat Pay calls at most (the
	// request and the query that reconciles it) and a margin for the clocks
	// of the instances to differ by.
	claimFor time.Duration
	ready    atomic.Bool
}

// Options are the collaborators of a Service beyond its Config.
type Options struct {
	// JetStream is the JetStream context to work through (required).
	JetStream jetstream.JetStream
	// Client calls WeChat Pay (required).
	Client *wxpay.Client
	// Logger receives structured logs; slog.Default() when nil.
	Logger *slog.Logger
	// Metrics records Prometheus metrics; a private registry when nil. A
	// Metrics is of one Service: the readiness and consumer counts it
	// reports when scraped are those of the last Service created with it.
	Metrics *Metrics
	// TracerProvider makes the spans of deliveries and polls (see
	// tracing.go); none when nil, the events then carrying the command's
	// own traceparent.
	TracerProvider trace.TracerProvider
	// Clock is the time source of events, of the age of records and of
	// the tracking cadence; time.Now when nil.
	Clock func() time.Time
	// Rand draws the jitter of the tracking cadence, uniform in [0, 1);
	// math/rand/v2's Float64 when nil.
	Rand func() float64
}

// New provisions (or, with Config.Provision false, checks) the streams,
// consumer and buckets and returns a Service ready to [Service.Run]. It
// fails when a collaborator is missing, when cfg does not validate, or with
// the error of provisioning (matching [ErrNotProvisioned] when objects are
// missing and provisioning is off).
func New(ctx context.Context, cfg Config, o Options) (*Service, error) {
	if o.JetStream == nil || o.Client == nil {
		return nil, errors.New("consumer: New needs a JetStream context and a WeChat Pay client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, js: o.JetStream, client: o.Client, log: o.Logger, metrics: o.Metrics, clock: o.Clock,
		policy:   policy{maxDeliver: uint64(cfg.MaxDeliver), baseDelay: cfg.RedeliveryDelay},
		claimFor: 2*o.Client.MaxCallDuration() + claimMargin}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	s.tracer, s.tracing = tracerOf(o.TracerProvider)
	s.topo = NewTopology(cfg)
	h, err := Provision(ctx, s.js, s.topo, cfg.Provision)
	if err != nil {
		return nil, err
	}
	s.records, s.events = records{kv: h.Outcomes}, h.Events
	s.pub, err = publisher.New(s.js, publisher.Config{Prefix: cfg.Prefix, MchID: cfg.MchID, Clock: s.clock})
	if err != nil {
		return nil, err
	}
	s.tracker = s.pub.StatusTracker(h.Status, h.Events)
	s.consumer = h.Consumer
	s.workers = newWorkers(h.Consumer, cfg.Concurrency, s.handle, s.log, s.metrics.InFlight)
	if cfg.Track {
		r := o.Rand
		if r == nil {
			r = mrand.Float64
		}
		s.tracks = newTracks(h.Tracking, s.pub, h.Events, cfg, s.clock, r, s.log, s.metrics)
		s.poller = newPoller(s, s.tracks, h.Lease)
	}
	s.metrics.service.Store(s)
	return s, nil
}

// Topology returns the JetStream objects the service uses.
func (s *Service) Topology() Topology { return s.topo }

// Ready reports whether the service has provisioned its objects and is
// consuming (the /readyz answer).
func (s *Service) Ready() bool { return s.ready.Load() }

// Run consumes commands until ctx ends, then stops pulling, lets the
// commands in flight finish for up to Config.ShutdownTimeout, cancels the
// rest (they are handed back for redelivery) and returns once every
// goroutine it started has ended. A NATS outage does not end it: pulling
// is retried until NATS is back.
func (s *Service) Run(ctx context.Context) {
	// Commands run under their own context: cancelling ctx starts the drain,
	// and only the shutdown timeout cancels the commands themselves.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	// A local copy of the status bucket spares the read of an unchanged
	// state; without it (the watch refused) every observation reads.
	if err := s.tracker.Follow(workCtx, 0); err != nil {
		s.log.Warn("status records will be read for every observation", "err", err)
	}
	polled := s.startTracking(ctx, workCtx)
	s.ready.Store(true)
	s.log.Info("consuming commands", "stream", s.topo.Commands.Name, "consumer", s.topo.Consumer.Durable,
		"concurrency", s.cfg.Concurrency, "max_deliver", s.cfg.MaxDeliver)
	s.workers.pull(ctx, workCtx)

	s.ready.Store(false)
	s.log.Info("shutting down: no new commands; waiting for those in flight", "timeout", s.cfg.ShutdownTimeout)
	if s.workers.drain(s.cfg.ShutdownTimeout, cancelWork) {
		s.log.Warn("shutdown timeout: cancelled the commands still in flight; they will be redelivered")
	} else {
		s.log.Info("drained")
	}
	cancelWork() // the idle workers, the polls and the buckets' watches end with the work context
	s.workers.wait()
	<-polled
	<-s.tracker.FollowEnded()
}

// startTracking follows the tracking bucket and runs the poller until ctx
// ends (their goroutines end with workCtx); the channel is closed once both
// have ended. A watch that cannot start is retried until it does: until
// then commands that show a resource read its record, and nothing is
// polled.
func (s *Service) startTracking(ctx, workCtx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if s.tracks == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		var polls sync.WaitGroup
		polls.Add(1)
		go func() {
			defer polls.Done()
			s.poller.run(ctx, workCtx)
		}()
		s.followTracks(workCtx)
		polls.Wait()
	}()
	return done
}

// followTracks keeps the copy of the tracking bucket until workCtx ends,
// watching again whenever the watch ends or the connection to NATS came
// back (a reconnection may have lost changes).
func (s *Service) followTracks(workCtx context.Context) {
	nc := s.js.Conn()
	for workCtx.Err() == nil {
		reconnects := nc.Stats().Reconnects
		watchCtx, stop := context.WithCancel(workCtx)
		ended, err := s.tracks.follow(watchCtx)
		if err != nil {
			stop()
			s.log.Warn("tracking: watching the tracking bucket failed; trying again", "err", err)
			_ = sleepContext(workCtx, time.Second)
			continue
		}
		for watching := true; watching; {
			select {
			case <-ended:
				watching = false
			case <-workCtx.Done():
				watching = false
			case <-time.After(time.Second):
				watching = nc.Stats().Reconnects == reconnects
			}
		}
		stop()
		<-ended
	}
}
