package consumer

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// tracks is the tracking bucket as one instance sees it: the records, by
// compare-and-set, and a copy of all of them kept by a watch, with the
// order in which they come due.
type tracks struct {
	kv      jetstream.KeyValue
	pub     *publisher.Publisher
	events  jetstream.Stream
	cfg     trackConfig
	clock   func() time.Time
	rand    func() float64
	log     *slog.Logger
	metrics *Metrics

	mu     sync.Mutex
	recs   map[string]trackEntry // the copy, by bucket key
	queue  dueQueue              // the copy's records by actionAt, stale entries included
	counts map[schemas.Resource]int
	synced bool          // the copy is followed: it held every record when its watch started, and the watch still runs
	wake   chan struct{} // told when a record may have come due sooner
}

// trackEntry is a record of the copy at its revision.
type trackEntry struct {
	rec *trackRecord
	rev uint64
}

func newTracks(kv jetstream.KeyValue, pub *publisher.Publisher, events jetstream.Stream, cfg Config, clock func() time.Time, rand func() float64, log *slog.Logger, m *Metrics) *tracks {
	return &tracks{kv: kv, pub: pub, events: events, clock: clock, rand: rand, log: log, metrics: m,
		cfg:  trackConfig{interval: cfg.TrackInterval, maxInterval: cfg.TrackMaxInterval, horizon: cfg.TrackHorizon},
		recs: map[string]trackEntry{}, counts: map[schemas.Resource]int{}, wake: make(chan struct{}, 1)}
}

// trackKey is the bucket key of resource r with key k.
func trackKey(r schemas.Resource, k string) string { return string(r) + "." + schemas.EncodeToken(k) }

// get returns the record of key and its revision (nil, 0 when absent).
func (t *tracks) get(ctx context.Context, key string) (*trackRecord, uint64, error) {
	e, err := t.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading tracking record %s: %w", key, err)
	}
	rec, err := decodeTrack(key, e.Value())
	if err != nil {
		return nil, 0, err
	}
	return rec, e.Revision(), nil
}

func decodeTrack(key string, b []byte) (*trackRecord, error) {
	var rec trackRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("tracking record %s is corrupt: %w", key, err)
	}
	if !rec.Resource.Tracked() || rec.Key == "" || rec.StartedAt.IsZero() {
		return nil, fmt.Errorf("tracking record %s is corrupt: resource, key or start missing", key)
	}
	return &rec, nil
}

// put writes rec under key if it is still at revision rev (0: absent, or
// deleted) and returns the new revision, or errChanged.
func (t *tracks) put(ctx context.Context, key string, rec *trackRecord, rev uint64) (uint64, error) {
	nrev, err := compareAndSet(ctx, t.kv, key, rec, rev)
	if err != nil && !errors.Is(err, errChanged) {
		return 0, fmt.Errorf("writing tracking record %s: %w", key, err)
	}
	return nrev, err
}

// maxTrackRounds bounds the read-decide-write rounds of one change.
const maxTrackRounds = 16

// seen applies what a command's answer showed of a resource: it starts
// tracking a resource seen in a state that is not final, restarts the
// cadence on a change, and ends the tracking on a final state, publishing
// the end (with ctx's trace context). Changes nothing for a resource that
// is not of a tracked kind.
func (t *tracks) seen(ctx context.Context, s sighting) error {
	if !s.resource.Tracked() || !schemas.ValidKey(s.key) {
		return nil
	}
	key := trackKey(s.resource, s.key)
	if t.changesNothing(key, s) {
		return nil
	}
	return t.change(ctx, key, func(rec *trackRecord, now time.Time) *trackRecord {
		return t.cfg.onSighting(rec, s, now, t.rand())
	})
}

// untrack ends the tracking of resource r with key k (reason untracked)
// and reports whether it was tracked.
func (t *tracks) untrack(ctx context.Context, r schemas.Resource, k string) (wasTracked bool, err error) {
	err = t.change(ctx, trackKey(r, k), func(rec *trackRecord, now time.Time) *trackRecord {
		wasTracked = rec != nil
		if rec == nil {
			return nil
		}
		next := *rec
		next.Ended = &trackEnd{Reason: schemas.EndUntracked, At: now}
		return &next
	})
	return wasTracked, err
}

// change reads the record of key and writes what decide makes of it (the
// active record, nil when there is none; nil back: nothing to write), by
// compare-and-set, reading again after a conflict. A record whose tracking
// ended is finished first (its event published, the record deleted), so
// decide never sees one. When the new record ends its tracking, the end is
// published before change returns, with ctx's trace context.
func (t *tracks) change(ctx context.Context, key string, decide func(rec *trackRecord, now time.Time) *trackRecord) error {
	for range maxTrackRounds {
		rec, rev, err := t.get(ctx, key)
		if err != nil {
			return err
		}
		if rec != nil && rec.Ended != nil {
			if err := t.finish(ctx, key, rec, rev); err != nil {
				return err
			}
			continue
		}
		next := decide(rec, t.clock())
		if next == nil {
			return nil
		}
		if err := t.prepareEnd(ctx, next); err != nil {
			return err
		}
		nrev, err := t.put(ctx, key, next, rev)
		if errors.Is(err, errChanged) {
			continue
		}
		if err != nil {
			return err
		}
		if next.Ended == nil {
			return nil
		}
		t.metrics.TrackEnded.WithLabelValues(string(next.Ended.Reason)).Inc()
		return t.finish(ctx, key, next, nrev)
	}
	return fmt.Errorf("tracking record %s kept changing concurrently", key)
}

// prepareEnd builds the event of an ending record, once, before it is
// written: whoever finishes the record publishes exactly that event, with
// the trace context of ctx (the command's or the poll's).
func (t *tracks) prepareEnd(ctx context.Context, rec *trackRecord) error {
	if rec.Ended == nil || rec.Ended.Event.ID != "" {
		return nil
	}
	msg, err := t.pub.NewTrackingEnded(publisher.TrackingEnded{Resource: rec.Resource, Key: rec.Key, SubMchid: rec.SubMchid,
		Reason: rec.Ended.Reason, State: rec.State, StartedAt: rec.StartedAt, Polls: rec.Polls}, traceOf(ctx))
	if err != nil {
		return err
	}
	rec.Ended.Event = msg
	return nil
}

// finish publishes the end of a tracking recorded in rec (at revision rev)
// and deletes the record, unless it changed meanwhile. A record that ended
// long enough ago for the events stream's duplicate window to have passed
// (an instance died after publishing) has its event looked up first, as the
// last message on its subject, so that it is not announced twice; a younger
// one is published again and dropped as a duplicate.
func (t *tracks) finish(ctx context.Context, key string, rec *trackRecord, rev uint64) error {
	ev := rec.Ended.Event
	published := false
	if t.clock().Sub(rec.Ended.At) >= EventsDuplicateWindow/2 {
		last, err := t.events.GetLastMsgForSubject(ctx, ev.Subject)
		published = err == nil && last.Header.Get(jetstream.MsgIDHeader) == ev.ID
	}
	if !published {
		if err := t.pub.Publish(ctx, ev); err != nil {
			return err
		}
	}
	err := t.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("deleting tracking record %s: %w", key, err)
	}
	return nil
}

// changesNothing reports whether the copy shows that s changes nothing:
// the resource is tracked in the state s shows (or s shows none), or it is
// not tracked and s shows a final state.
func (t *tracks) changesNothing(key string, s sighting) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.synced {
		return false
	}
	e, ok := t.recs[key]
	switch {
	case !ok:
		return s.resource.Final(s.state)
	case e.rec.Ended != nil:
		return false
	case s.notFound:
		return true
	case s.state == "":
		return !s.changed
	}
	return s.state == e.rec.State
}

// follow keeps the copy until ctx ends: it returns once the copy holds every
// record (or the watch's error), and a goroutine applies the changes after
// that; ended is closed when it stops.
func (t *tracks) follow(ctx context.Context) (ended <-chan struct{}, err error) {
	w, err := t.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching the tracking bucket: %w", err)
	}
	t.mu.Lock()
	t.recs, t.queue, t.synced = map[string]trackEntry{}, nil, false
	clear(t.counts)
	t.mu.Unlock()
	done := make(chan struct{})
	initial := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = w.Stop() }()
		defer func() {
			// Nobody updates the copy any more: commands read the
			// records until a new watch has caught up.
			t.mu.Lock()
			t.synced = false
			t.mu.Unlock()
		}()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					t.mu.Lock()
					t.synced = true
					t.mu.Unlock()
					close(initial)
					continue
				}
				t.apply(e)
			case <-ctx.Done():
				return
			}
		}
	}()
	select {
	case <-initial:
		return done, nil
	case <-done:
		return done, errors.New("watching the tracking bucket: the watch ended before it caught up")
	}
}

// apply takes one change of the bucket into the copy.
func (t *tracks) apply(e jetstream.KeyValueEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := e.Key()
	if old, ok := t.recs[key]; ok && old.rec.Ended == nil {
		t.counts[old.rec.Resource]--
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(t.recs, key)
		t.gauge()
		return
	}
	rec, err := decodeTrack(key, e.Value())
	if err != nil {
		t.log.Warn("a tracking record is not readable; it is left alone", "key", key, "err", err)
		delete(t.recs, key)
		t.gauge()
		return
	}
	t.recs[key] = trackEntry{rec: rec, rev: e.Revision()}
	if rec.Ended == nil {
		t.counts[rec.Resource]++
	}
	t.gauge()
	heap.Push(&t.queue, dueItem{at: rec.actionAt(t.cfg), key: key, rev: e.Revision()})
	if len(t.queue) > 2*len(t.recs)+1024 {
		t.compact()
	}
	t.poke()
}

// poke tells the driver that a record may have come due sooner.
func (t *tracks) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// gauge publishes the copy's counts (mu held).
func (t *tracks) gauge() {
	for _, r := range schemas.TrackedResources() {
		t.metrics.TrackedResources.WithLabelValues(string(r)).Set(float64(t.counts[r]))
	}
}

// compact drops the stale entries of the queue (mu held).
func (t *tracks) compact() {
	q := t.queue[:0]
	for _, it := range t.queue {
		if e, ok := t.recs[it.key]; ok && e.rev == it.rev {
			q = append(q, it)
		}
	}
	t.queue = q
	heap.Init(&t.queue)
}

// next returns the record that needs the driver first, skipping those in
// skip (polls in flight), and when: at or before now, it is to be acted
// on. ok is false when there is none.
func (t *tracks) next(skip map[string]bool) (key string, e trackEntry, at time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var held []dueItem
	defer func() {
		for _, it := range held {
			heap.Push(&t.queue, it)
		}
	}()
	for len(t.queue) > 0 {
		it := t.queue[0]
		cur, live := t.recs[it.key]
		if !live || cur.rev != it.rev {
			heap.Pop(&t.queue) // stale
			continue
		}
		if skip[it.key] {
			held = append(held, heap.Pop(&t.queue).(dueItem))
			continue
		}
		return it.key, cur, it.at, true
	}
	return "", trackEntry{}, time.Time{}, false
}

// dueItem is a record of the copy at a revision, and when it needs the
// driver.
type dueItem struct {
	at  time.Time
	key string
	rev uint64
}

// dueQueue is a min-heap of dueItem by at.
type dueQueue []dueItem

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueQueue) Push(x any)        { *q = append(*q, x.(dueItem)) }
func (q *dueQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// Tracked is one tracked resource, as `wxcancel track list` shows it.
type Tracked struct {
	Resource schemas.Resource `json:"resource"`
	Key      string           `json:"key"`
	SubMchid string           `json:"sub_mchid,omitempty"`
	// State is the last state known; empty before any answer showed one.
	State string `json:"state,omitempty"`
	// Since is when tracking started; Polls the polls made since.
	Since time.Time `json:"since"`
	Polls int       `json:"polls"`
	// NextPoll is when the next poll is due (it may be overdue).
	NextPoll time.Time `json:"next_poll"`
	// Polling: a poll is in flight.
	Polling bool `json:"polling,omitempty"`
}

// TrackedResources returns every resource tracked now, in the order of
// their keys in the tracking bucket.
func TrackedResources(ctx context.Context, js jetstream.JetStream, t Topology) ([]Tracked, error) {
	kv, err := js.KeyValue(ctx, t.Tracking.Bucket)
	if err != nil {
		return nil, fmt.Errorf("consumer: tracking bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("consumer: reading the tracking bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []Tracked
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return out, errors.New("consumer: reading the tracking bucket: the watch ended early")
			}
			if e == nil {
				return out, nil
			}
			rec, err := decodeTrack(e.Key(), e.Value())
			if err != nil || rec.Ended != nil {
				continue
			}
			out = append(out, Tracked{Resource: rec.Resource, Key: rec.Key, SubMchid: rec.SubMchid, State: rec.State,
				Since: rec.StartedAt, Polls: rec.Polls, NextPoll: rec.Due, Polling: rec.Claim != nil})
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// Tracking brings resources into lifecycle tracking from outside the
// service: applications under way elsewhere, without a request to WeChat
// Pay each (a track command queries the resource first). Open it with
// [OpenTracking]; it is safe for concurrent use.
type Tracking struct{ t *tracks }

// OpenTracking returns a Tracking that writes to the tracking bucket of the
// service configured by cfg (its prefix and merchant id, its cadence). It
// fails when the bucket or the events stream does not exist.
func OpenTracking(ctx context.Context, js jetstream.JetStream, cfg Config) (*Tracking, error) {
	topo := NewTopology(cfg)
	kv, err := js.KeyValue(ctx, topo.Tracking.Bucket)
	if err != nil {
		return nil, fmt.Errorf("consumer: tracking bucket: %w", err)
	}
	events, err := js.Stream(ctx, topo.Events.Name)
	if err != nil {
		return nil, fmt.Errorf("consumer: events stream: %w", err)
	}
	pub, err := publisher.New(js, publisher.Config{Prefix: cfg.Prefix, MchID: cfg.MchID})
	if err != nil {
		return nil, err
	}
	return &Tracking{t: newTracks(kv, pub, events, cfg, time.Now, mrand.Float64, slog.New(slog.DiscardHandler), NewMetrics(nil))}, nil
}

// Start tracks resource r with key k (of sub-merchant subMchid, when
// known) as if an answer had just shown it without its state: its first
// poll comes the configured TrackInterval from now. A resource tracked
// already is left as it is. It fails for a resource that is not tracked (a
// merchant, an applyment), a key that is not an identifier, or with the
// JetStream error.
func (tr *Tracking) Start(ctx context.Context, r schemas.Resource, k, subMchid string) error {
	if !r.Tracked() || !schemas.ValidKey(k) {
		return fmt.Errorf("consumer: %s/%s cannot be tracked", r, k)
	}
	t := tr.t
	s := sighting{resource: r, key: k, subMchid: subMchid, changed: true}
	return t.change(ctx, trackKey(r, k), func(rec *trackRecord, now time.Time) *trackRecord {
		if rec != nil {
			return nil
		}
		return t.cfg.onSighting(nil, s, now, t.rand())
	})
}
