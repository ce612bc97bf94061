package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EventsDuplicateWindow is how long the events stream remembers the ids of
// the events it stored: an outcome event that a redelivery republishes
// inside it is dropped as a duplicate (WXCANCEL_ACK_WAIT is bounded by it).
const EventsDuplicateWindow = 2 * time.Minute

// durableName is the name of the durable pull consumer every instance
// shares (Topology.Consumer.Durable). It is the same for every prefix: a
// consumer's name is scoped to its stream, whose name carries the prefix.
const durableName = "wxcancel"

// Topology names the JetStream objects the service uses and holds their
// configuration. It is the single source of truth: provisioning applies it,
// and deploy/ declares the same objects for operators who manage them
// themselves.
//
// Why these settings (operators will ask):
//   - Commands: work-queue retention (a command is removed once acknowledged
//     or terminated, so the stream holds only the backlog); no age limit and
//     DiscardNew, so a full stream refuses new commands (the sender sees the
//     error) instead of silently dropping old ones; messages up to the
//     server's max payload, so an oversized command still arrives and is
//     answered with a rejected event; a 5-minute duplicate window so a
//     producer retrying a publish after a timeout does not enqueue twice
//     (beyond it, the outcome record answers re-sent ids).
//   - Events: limits retention, kept 7 days for replay (`events --since`);
//     the 2-minute duplicate window covers the republish of an outcome after
//     a crash between publish and acknowledgement (the ack wait is 30s).
//   - Dead letters: kept 90 days, DiscardNew: a full dead-letter stream makes
//     the copy fail, and the command then stays in the commands stream
//     rather than being lost.
//   - Consumer: explicit acks; MaxDeliver unlimited on the server, because
//     the service itself dead-letters after WXCANCEL_MAX_DELIVER deliveries
//     and a server-side limit would strand a command whose last delivery
//     died with its instance; MaxAckPending 1000 shared by all instances.
//   - Outcomes bucket: one record per command id, kept WXCANCEL_OUTCOME_TTL
//     (7 days): the idempotency window for re-sent ids.
//   - Status bucket: the last state seen of each resource, kept forever
//     (one small record per resource), updated by compare-and-set.
//   - Tracking bucket: one record per tracked resource (its state, cadence,
//     next poll and the claim of a poll in flight), updated by
//     compare-and-set and deleted once its tracking has ended; every
//     instance watches it.
//   - Lease bucket: one key, held by the instance that drives the polls;
//     its TTL (TrackLeaseTTL) frees it when that instance dies.
//   - Replicas: WXCANCEL_REPLICAS everywhere (1 on a single server, 3 on a
//     cluster: tolerates the loss of one node).
type Topology struct {
	Commands, Events, DLQ jetstream.StreamConfig
	Consumer              jetstream.ConsumerConfig
	Outcomes, Status      jetstream.KeyValueConfig
	Tracking, Lease       jetstream.KeyValueConfig
}

// TrackLeaseTTL is how long the lease of the instance that drives the
// tracking polls outlives its last renewal: after a kill, another instance
// takes over within it.
const TrackLeaseTTL = 6 * time.Second

// Streams returns the configurations of the streams, in the order they
// are provisioned.
func (t Topology) Streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{t.Commands, t.Events, t.DLQ}
}

// Buckets returns the configurations of the KV buckets, in the order they
// are provisioned.
func (t Topology) Buckets() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{t.Outcomes, t.Status, t.Tracking, t.Lease}
}

// NewTopology derives every stream, consumer and bucket configuration from c.
func NewTopology(c Config) Topology {
	p := c.Prefix
	up := strings.ToUpper(p)
	replicas := max(c.Replicas, 1)
	// Every bucket keeps one value per key, on file, replicated.
	bucket := func(name, description string, ttl time.Duration) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: up + "_" + name, Description: description, History: 1, TTL: ttl,
			Storage: jetstream.FileStorage, Replicas: replicas}
	}
	return Topology{
		Commands: jetstream.StreamConfig{
			Name:        up + "_COMMANDS",
			Description: "wxcancel commands",
			Subjects:    []string{p + ".cmd.>"},
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardNew,
			MaxMsgSize:  -1,
			MaxAge:      0,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  5 * time.Minute,
		},
		Events: jetstream.StreamConfig{
			Name:        up + "_EVENTS",
			Description: "wxcancel outcome and status-change events (CloudEvents)",
			Subjects:    []string{p + ".evt.>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      7 * 24 * time.Hour,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  EventsDuplicateWindow,
		},
		DLQ: jetstream.StreamConfig{
			Name:        up + "_DLQ",
			Description: "wxcancel dead-lettered commands",
			Subjects:    []string{p + ".dlq.>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxAge:      90 * 24 * time.Hour,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  2 * time.Minute,
		},
		Consumer: jetstream.ConsumerConfig{
			Durable:       durableName,
			Description:   "wxcancel command executors",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       c.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: 1000,
			FilterSubject: p + ".cmd.>",
			Replicas:      replicas,
		},
		Outcomes: bucket("OUTCOMES", "wxcancel outcome of each command id (idempotency)", c.OutcomeTTL),
		Status:   bucket("STATUS", "wxcancel last state seen of each resource", 0),
		Tracking: bucket("TRACKING", "wxcancel resources followed to their end, and when each is polled next", 0),
		Lease:    bucket("TRACK_LEASE", "wxcancel the instance that drives the tracking polls", TrackLeaseTTL),
	}
}

// ErrNotProvisioned is matched by the error of [Provision] with create false
// when a stream, the consumer or a bucket is missing.
var ErrNotProvisioned = errors.New("consumer: JetStream objects missing")

// Handles are the JetStream objects the service works with.
type Handles struct {
	Consumer                          jetstream.Consumer
	Events                            jetstream.Stream
	Outcomes, Status, Tracking, Lease jetstream.KeyValue
}

// Provision creates or updates every object of t when create is true; it is
// idempotent and safe with several instances starting at once (a lost race
// is retried). With create false it only checks that everything exists and
// reports all that is missing in one error matching [ErrNotProvisioned].
func Provision(ctx context.Context, js jetstream.JetStream, t Topology, create bool) (Handles, error) {
	if !create {
		return lookup(ctx, js, t)
	}
	var h Handles
	for _, sc := range t.Streams() {
		err := retryRace(ctx, func() error {
			s, err := js.CreateOrUpdateStream(ctx, sc)
			if sc.Name == t.Events.Name {
				h.Events = s
			}
			return err
		})
		if err != nil {
			return h, fmt.Errorf("consumer: provisioning stream %s: %w", sc.Name, err)
		}
	}
	err := retryRace(ctx, func() (err error) {
		h.Consumer, err = js.CreateOrUpdateConsumer(ctx, t.Commands.Name, t.Consumer)
		return err
	})
	if err != nil {
		return h, fmt.Errorf("consumer: provisioning consumer %s on %s: %w", t.Consumer.Durable, t.Commands.Name, err)
	}
	for _, kc := range []struct {
		cfg jetstream.KeyValueConfig
		dst *jetstream.KeyValue
	}{{t.Outcomes, &h.Outcomes}, {t.Status, &h.Status}, {t.Tracking, &h.Tracking}, {t.Lease, &h.Lease}} {
		err := retryRace(ctx, func() (err error) {
			*kc.dst, err = js.CreateOrUpdateKeyValue(ctx, kc.cfg)
			return err
		})
		if err != nil {
			return h, fmt.Errorf("consumer: provisioning bucket %s: %w", kc.cfg.Bucket, err)
		}
	}
	return h, nil
}

func lookup(ctx context.Context, js jetstream.JetStream, t Topology) (Handles, error) {
	var h Handles
	var missing []string
	var errs []error
	note := func(what string, err error, notFound error) {
		switch {
		case err == nil:
		case errors.Is(err, notFound):
			missing = append(missing, what)
		default:
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	for _, sc := range t.Streams() {
		s, err := js.Stream(ctx, sc.Name)
		if sc.Name == t.Events.Name {
			h.Events = s
		}
		note("stream "+sc.Name, err, jetstream.ErrStreamNotFound)
	}
	var err error
	h.Consumer, err = js.Consumer(ctx, t.Commands.Name, t.Consumer.Durable)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = jetstream.ErrConsumerNotFound
	}
	note("consumer "+t.Consumer.Durable, err, jetstream.ErrConsumerNotFound)
	h.Outcomes, err = js.KeyValue(ctx, t.Outcomes.Bucket)
	note("bucket "+t.Outcomes.Bucket, err, jetstream.ErrBucketNotFound)
	h.Status, err = js.KeyValue(ctx, t.Status.Bucket)
	note("bucket "+t.Status.Bucket, err, jetstream.ErrBucketNotFound)
	h.Tracking, err = js.KeyValue(ctx, t.Tracking.Bucket)
	note("bucket "+t.Tracking.Bucket, err, jetstream.ErrBucketNotFound)
	h.Lease, err = js.KeyValue(ctx, t.Lease.Bucket)
	note("bucket "+t.Lease.Bucket, err, jetstream.ErrBucketNotFound)
	if len(missing) > 0 {
		errs = append([]error{fmt.Errorf("%w (provisioning is off): %s", ErrNotProvisioned, strings.Join(missing, ", "))}, errs...)
	}
	return h, errors.Join(errs...)
}

// retryRace retries f a few times: two instances creating the same object at
// once can make one of them fail with "already in use" although the object
// then exists as wanted.
func retryRace(ctx context.Context, f func() error) error {
	var err error
	for i := range 5 {
		if err = f(); err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && !errors.Is(err, jetstream.ErrConsumerExists) &&
			!errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrConsumerCreate) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(50*(i+1)) * time.Millisecond):
		}
	}
	return err
}
