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
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	log     *slog.Logger
	metrics *Metrics
	clock   func() time.Time
	ready   atomic.Bool
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
	// Clock is the time source of events and of the age of records;
	// time.Now when nil.
	Clock func() time.Time
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
		policy: policy{maxDeliver: uint64(cfg.MaxDeliver), baseDelay: cfg.RedeliveryDelay}}
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
	s.records, s.events = records{kv: h.Outcomes}, h.Events
	s.pub, err = publisher.New(s.js, publisher.Config{Prefix: cfg.Prefix, MchID: cfg.MchID, Clock: s.clock})
	if err != nil {
		return nil, err
	}
	s.tracker = s.pub.StatusTracker(h.Status, h.Events)
	s.workers = newWorkers(h.Consumer, cfg.Concurrency, s.handle, s.log, s.metrics.InFlight)
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
	cancelWork() // the idle workers and the status bucket's watch end with the work context
	s.workers.wait()
	<-s.tracker.FollowEnded()
}
