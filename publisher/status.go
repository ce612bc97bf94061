package publisher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/schemas"
)

// ErrContention is matched by the error of an Observe that lost the
// compare-and-set of a status record to other writers too many times in a
// row. Its observation was not recorded (an event it found pending may have
// been published); observing again is safe.
var ErrContention = errors.New("publisher: status record kept changing concurrently")

// maxRounds bounds the read-decide-write rounds of one Observe. Every lost
// round means another writer made progress, so it is only reached under
// pathological contention.
const maxRounds = 32

// Observation is the state of a resource as one WeChat Pay answer revealed
// it.
type Observation struct {
	// Resource is one of [schemas.Resources] (required).
	Resource schemas.Resource `json:"resource"`
	// Key identifies the resource (required): sub_mchid, applyment_id,
	// out_apply_no or business_code. Any text; it is encoded with
	// [schemas.EncodeToken] where it becomes a subject token or a KV key.
	Key string `json:"key"`
	// SubMchid is the sub-merchant the resource belongs to, when known.
	SubMchid string `json:"sub_mchid,omitempty"`
	// State is the resource's state (required).
	State string `json:"state"`
	// ModifiedAt is the answer's modify_time/update_time; zero when it has
	// none. It orders observations: one older than the recorded state never
	// replaces it.
	ModifiedAt time.Time `json:"modified_at,omitzero"`
	// Snapshot is the answer's body (JSON); empty means null.
	Snapshot json.RawMessage `json:"snapshot,omitempty"`
	// CommandID is the id of the command whose call made the observation
	// (required).
	CommandID string `json:"command_id,omitempty"`
	// Traceparent is the W3C traceparent the status event carries (the
	// command's, or the span's that made the observation), or empty.
	Traceparent string `json:"traceparent,omitempty"`
	// Tracestate is the W3C tracestate that goes with Traceparent, or empty.
	Tracestate string `json:"tracestate,omitempty"`
	// Before, when set, is a time the observation was made before (an
	// observation published late, from a record). Without ModifiedAt to
	// order it, a different state recorded after Before is newer and is
	// not replaced.
	Before time.Time `json:"-"`
}

// StatusData is the data of a status-change event.
type StatusData struct {
	Resource schemas.Resource `json:"resource"`
	Key      string           `json:"key"`
	// SubMchid is omitted when unknown.
	SubMchid string `json:"sub_mchid,omitempty"`
	// PreviousState is omitted when the resource is seen for the first time.
	PreviousState string `json:"previous_state,omitempty"`
	State         string `json:"state"`
	// ObservedAt is when the change was seen, in [TimeFormat].
	ObservedAt string `json:"observed_at"`
	CommandID  string `json:"command_id"`
	// Snapshot is the response body that revealed the state.
	Snapshot json.RawMessage `json:"snapshot"`
}

// StatusTracker remembers the last state seen of each resource in a
// JetStream KV bucket shared by all instances and publishes a
// wxpay.status.changed event on <prefix>.evt.status.<resource>.<key> (key
// encoded with [schemas.EncodeToken]) whenever an observation reveals a different
// one. Create it with [Publisher.StatusTracker]; it is safe for concurrent
// use, and any number of instances may share the bucket.
//
// # How a change is published exactly once
//
// The bucket holds one record per resource, under the key
// "<resource>.<encoded key>": the state, the newest modification time seen,
// the event announcing that state (complete but for its id) and a published
// flag. Its id is derived from the KV revision the record was written at:
// "status/<resource>/<encoded key>/<revision>". KV revisions are never
// reused, so the id names one change; and while a record is unpublished
// nothing but the "published" mark may replace it, so its revision still
// is the one its event id was derived from, and anyone reading it rebuilds
// exactly the same message.
//
// Observe reads the record and:
//
//  1. if it is not published (its writer crashed, failed to publish, or is
//     publishing right now), publishes its event and marks it published
//     first (below);
//  2. if the state is the one recorded, records a newer modification time
//     if the observation has one, and publishes nothing;
//  3. if the observation is older than the record (both have a
//     modification time and the observation's is earlier), ignores it;
//  4. otherwise writes the new state with its event, unpublished, by
//     compare-and-set: kv.Create when there is no record, kv.Update at the
//     revision read otherwise. One writer wins; a loser reads again and
//     decides again (now finding the winner's state: case 1 or 2). The
//     winner then publishes the event (Nats-Msg-Id = its id) and marks the
//     record published, again by compare-and-set at the revision it wrote.
//
// A crash at any point loses nothing and duplicates nothing: before the
// write nothing happened; between the write and the publish the record is
// unpublished, and the next Observe of the resource (on any instance) or
// [StatusTracker.PublishPending] publishes it; between the publish and the
// mark the next one publishes the same message again, which JetStream drops
// as a duplicate inside the stream's duplicate window, and, for a record left
// pending longer than that, it first looks the event up as the last message
// on its subject and only marks it when found. Two instances that see the
// same change concurrently both end up publishing the one event of the
// winning write, which JetStream stores once. Observe returns nil only after
// JetStream acknowledged the event of every change it wrote or found
// pending, so a command may be acknowledged after it.
//
// With [StatusTracker.Follow], an observation that the local copy of the
// bucket shows to change nothing returns at once, without the read.
//
// Observations of one resource through one tracker take turns (but for that
// shortcut): commands of one instance that see a resource at once do not
// race each other through the compare-and-set, each loser paying another
// read and write; the ones that waited usually find their state recorded.
// Across instances the compare-and-set decides, as above.
//
// Left open by design: an event that aged out of the events stream while its
// record stayed unpublished (no observation of the resource for the stream's
// whole retention after a crash between the publish and the mark) is
// published again.
type StatusTracker struct {
	p      *Publisher
	kv     jetstream.KeyValue
	events jetstream.Stream // nil: pending events are not looked up
	// copy is the local copy of the bucket kept by Follow; nil without.
	copy atomic.Pointer[statusCopy]
	// turns has the observations of a resource take turns.
	turns keyTurns
}

// keyTurns lets one caller at a time hold a key.
type keyTurns struct {
	mu   sync.Mutex
	busy map[string]chan struct{} // closed when the key's holder lets go
}

// take waits until no one holds key, then holds it until done is called.
// It fails only when ctx ends first.
func (k *keyTurns) take(ctx context.Context, key string) (done func(), err error) {
	for {
		k.mu.Lock()
		released, held := k.busy[key]
		if !held {
			if k.busy == nil {
				k.busy = map[string]chan struct{}{}
			}
			released = make(chan struct{})
			k.busy[key] = released
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.busy, key)
				k.mu.Unlock()
				close(released)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-released:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// StatusTracker returns a tracker keeping its records in kv, which the
// caller provisions (one record per resource, no TTL; history 1 suffices).
// With a nil kv, every call fails with [ErrInvalidConfig].
//
// events is the stream that stores the events. The event of a record found
// pending (its writer may have died after publishing it) is looked up there,
// as the last message on its subject, before it is published again; that
// takes one message get ($JS.API.STREAM.MSG.GET.<stream>). With nil events,
// or when the get fails, the event is published again and the stream's
// duplicate window alone keeps it from being stored twice.
func (p *Publisher) StatusTracker(kv jetstream.KeyValue, events jetstream.Stream) *StatusTracker {
	return &StatusTracker{p: p, kv: kv, events: events}
}

// statusRecord is the value of a resource's key in the status bucket.
type statusRecord struct {
	Resource schemas.Resource `json:"resource"`
	Key      string           `json:"key"`
	SubMchid string           `json:"sub_mchid,omitempty"`
	State    string           `json:"state"`
	// ModifiedAt is the newest modification time seen of the resource.
	ModifiedAt time.Time `json:"modified_at,omitzero"`
	// Event announces State; its id comes from the revision the record was
	// written at with Published false.
	Event pendingEvent `json:"event"`
	// Published: JetStream acknowledged Event.
	Published bool `json:"published"`

	// written is when the record read was written (the server's time); not
	// stored in it.
	written time.Time
}

// pendingEvent is a status event but for its id and the attributes that
// every event shares.
type pendingEvent struct {
	Time        string          `json:"time"`
	Traceparent string          `json:"traceparent,omitempty"`
	Tracestate  string          `json:"tracestate,omitempty"`
	Data        json.RawMessage `json:"data"`
}

// errConflict: the record's revision changed under a compare-and-set.
var errConflict = errors.New("publisher: status record changed concurrently")

// Observe records ob and, when it reveals a change, publishes the
// status-change event before it returns (see [StatusTracker] for how). It
// reports whether this call recorded a new state. An event found pending from
// an earlier, interrupted Observe of the same resource is published first.
//
// It fails with [ErrInvalidEvent] for an incomplete observation (unknown
// resource, empty key, state or command id, a snapshot that is not JSON, a
// malformed traceparent), with [ErrPublish] when an event was not
// acknowledged (the change stays recorded and is published by the next
// Observe of the resource or by PublishPending), with [ErrContention], or
// with the KV error. Errors never contain the snapshot.
func (t *StatusTracker) Observe(ctx context.Context, ob Observation) (changed bool, err error) {
	if t.kv == nil {
		return false, fmt.Errorf("%w: the status tracker has no bucket", ErrInvalidConfig)
	}
	if err := ob.check(); err != nil {
		return false, err
	}
	key := string(ob.Resource) + "." + schemas.EncodeToken(ob.Key)
	if t.copied(key, ob) {
		return false, nil
	}
	done, err := t.turns.take(ctx, key)
	if err != nil {
		return false, fmt.Errorf("publisher: waiting for another observation of %s/%s: %w", ob.Resource, ob.Key, err)
	}
	defer done()
	if t.copied(key, ob) { // the observation waited for recorded it
		return false, nil
	}
	for range maxRounds {
		rec, rev, err := t.load(ctx, key)
		if err != nil {
			return false, err
		}
		if rec != nil && !rec.Published {
			if err := t.publishRecorded(ctx, rec, rev, true); err != nil {
				return false, err
			}
			nrev, err := t.markPublished(ctx, key, rec, rev)
			if err != nil {
				return false, err
			}
			if nrev == 0 { // changed by another instance meanwhile
				continue
			}
			rec.Published, rev = true, nrev
		}
		switch {
		case rec != nil && ob.addsNothing(rec.State, rec.ModifiedAt, rec.SubMchid != ""):
			return false, nil
		case rec != nil && rec.State != ob.State && ob.ModifiedAt.IsZero() && !ob.Before.IsZero() && rec.written.After(ob.Before):
			return false, nil // recorded since: newer than ob
		case rec != nil && rec.State == ob.State: // a newer time or the sub_mchid to add
			upd := *rec
			upd.ModifiedAt = later(rec.ModifiedAt, ob.ModifiedAt)
			if upd.SubMchid == "" {
				upd.SubMchid = ob.SubMchid
			}
			if _, err := t.put(ctx, key, &upd, rev); errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return false, err
			}
			return false, nil
		}
		next, err := t.change(rec, ob)
		if err != nil {
			return false, err
		}
		nrev, err := t.put(ctx, key, next, rev)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return false, err
		}
		if err := t.publishRecorded(ctx, next, nrev, false); err != nil {
			return false, err
		}
		// A failed mark leaves the record pending: whoever reads it next
		// finds the event stored (or republishes a duplicate that JetStream
		// drops) and marks it. The event is stored, so this call succeeded.
		_, _ = t.markPublished(ctx, key, next, nrev)
		return true, nil
	}
	return false, fmt.Errorf("%w: %s/%s after %d attempts", ErrContention, ob.Resource, ob.Key, maxRounds)
}

// copied reports whether the local copy shows that ob changes nothing in
// the published record of key.
func (t *StatusTracker) copied(key string, ob Observation) bool {
	rec, ok := t.copy.Load().lookup(key)
	return ok && rec.published && ob.addsNothing(rec.state, rec.modifiedAt, rec.subMchid)
}

// PublishPending publishes every recorded change whose event is not known
// to be published (left by an instance that crashed or lost its connection
// between recording a change and publishing it) and marks it published. It
// reads the whole bucket, so run it at start-up or now and then, not per
// command; Observe already does the same for the resource it observes. It
// returns how many records it completed, and every error it met (joined).
func (t *StatusTracker) PublishPending(ctx context.Context) (int, error) {
	if t.kv == nil {
		return 0, fmt.Errorf("%w: the status tracker has no bucket", ErrInvalidConfig)
	}
	type pending struct {
		key string
		rec *statusRecord
		rev uint64
	}
	var todo []pending
	var errs []error
	w, err := t.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("publisher: reading the status bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
scan:
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				if err := context.Cause(ctx); err != nil {
					return 0, fmt.Errorf("publisher: reading the status bucket: %w", err)
				}
				return 0, errors.New("publisher: reading the status bucket: the watch ended early")
			}
			if e == nil { // every current value was delivered
				break scan
			}
			rec, err := decodeRecord(e.Key(), e.Value())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !rec.Published {
				todo = append(todo, pending{e.Key(), rec, e.Revision()})
			}
		case <-ctx.Done():
			return 0, fmt.Errorf("publisher: reading the status bucket: %w", context.Cause(ctx))
		}
	}
	_ = w.Stop()
	n := 0
	for _, p := range todo {
		if err := t.publishRecorded(ctx, p.rec, p.rev, true); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := t.markPublished(ctx, p.key, p.rec, p.rev); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (ob Observation) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: observation of %s/%s: %s", ErrInvalidEvent, ob.Resource, ob.Key, fmt.Sprintf(format, args...))
	}
	if !slices.Contains(schemas.Resources(), ob.Resource) {
		return bad("resource %q is not one of %v", ob.Resource, schemas.Resources())
	}
	for _, f := range []struct{ name, value string }{{"key", ob.Key}, {"state", ob.State}, {"command id", ob.CommandID}} {
		if problem := nameProblem(f.name, f.value); problem != "" {
			return bad("%s", problem)
		}
	}
	if err := (TraceContext{ob.Traceparent, ob.Tracestate}).check(); err != nil {
		return fmt.Errorf("%w (observation of %s/%s)", err, ob.Resource, ob.Key)
	}
	switch {
	case ob.SubMchid != "" && !schemas.HeaderSafe(ob.SubMchid):
		return bad("sub_mchid is not valid UTF-8 without control characters")
	case len(bytes.TrimSpace(ob.Snapshot)) > 0 && !json.Valid(ob.Snapshot):
		return bad("the snapshot is not JSON")
	}
	return nil
}

// addsNothing reports whether ob changes nothing in a record of the given
// state, newest modification time and sub_mchid (known or not): the same
// state with no newer time and no sub_mchid to add (case 2 of
// [StatusTracker]), or another state modified before the newest time seen,
// which never moves the record back (case 3).
func (ob Observation) addsNothing(state string, modifiedAt time.Time, subMchidKnown bool) bool {
	if ob.State == state {
		return !ob.ModifiedAt.After(modifiedAt) && (ob.SubMchid == "" || subMchidKnown)
	}
	return !ob.ModifiedAt.IsZero() && ob.ModifiedAt.Before(modifiedAt)
}

// change returns the record announcing ob's state after rec (nil: none).
func (t *StatusTracker) change(rec *statusRecord, ob Observation) (*statusRecord, error) {
	now := t.p.now()
	next := &statusRecord{Resource: ob.Resource, Key: ob.Key, SubMchid: ob.SubMchid, State: ob.State, ModifiedAt: ob.ModifiedAt}
	data := StatusData{Resource: ob.Resource, Key: ob.Key, State: ob.State, ObservedAt: now, CommandID: ob.CommandID, Snapshot: ob.Snapshot}
	if rec != nil {
		data.PreviousState = rec.State
		next.ModifiedAt = later(rec.ModifiedAt, ob.ModifiedAt)
		if next.SubMchid == "" {
			next.SubMchid = rec.SubMchid
		}
	}
	data.SubMchid = next.SubMchid
	if len(bytes.TrimSpace(data.Snapshot)) == 0 {
		data.Snapshot = json.RawMessage("null")
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding the status of %s/%s: %w", ErrInvalidEvent, ob.Resource, ob.Key, err)
	}
	next.Event = pendingEvent{Time: now, Traceparent: ob.Traceparent, Tracestate: ob.Tracestate, Data: b}
	return next, nil
}

// message is the event of rec, written at revision rev.
func (t *StatusTracker) message(rec *statusRecord, rev uint64) (Message, error) {
	token := schemas.EncodeToken(rec.Key)
	return t.p.message(t.p.prefix+".evt.status."+string(rec.Resource)+"."+token, Event{
		ID:      "status/" + string(rec.Resource) + "/" + token + "/" + strconv.FormatUint(rev, 10),
		Type:    schemas.EventTypeStatusChanged,
		Subject: string(rec.Resource) + "/" + rec.Key,
		Time:    rec.Event.Time,
		Data:    rec.Event.Data,
	}, TraceContext{rec.Event.Traceparent, rec.Event.Tracestate})
}

// publishRecorded publishes the event of rec, written at rev. With lookup,
// a record that may have been published long ago (found pending), it first
// checks whether the last message on the event's subject is that event, so
// that it is not stored again once the duplicate window has passed; when
// the check cannot be made (no events stream, no permission, stream
// unreachable) it publishes and relies on the duplicate window.
func (t *StatusTracker) publishRecorded(ctx context.Context, rec *statusRecord, rev uint64, lookup bool) error {
	msg, err := t.message(rec, rev)
	if err != nil {
		return err
	}
	if lookup && t.stored(ctx, msg) {
		return nil
	}
	_, err = t.p.publish(ctx, msg)
	return err
}

// stored reports whether the last message on msg's subject is msg.
func (t *StatusTracker) stored(ctx context.Context, msg Message) bool {
	if t.events == nil {
		return false
	}
	last, err := t.events.GetLastMsgForSubject(ctx, msg.Subject)
	return err == nil && last.Header.Get(jetstream.MsgIDHeader) == msg.ID
}

// markPublished records that rec's event (rec written at rev) is stored. It
// returns the new revision, or 0 when the record changed meanwhile (another
// instance marked it first).
func (t *StatusTracker) markPublished(ctx context.Context, key string, rec *statusRecord, rev uint64) (uint64, error) {
	done := *rec
	done.Published = true
	nrev, err := t.put(ctx, key, &done, rev)
	if errors.Is(err, errConflict) {
		return 0, nil
	}
	return nrev, err
}

// load returns the record of key and its revision; nil and 0 when there is
// none.
func (t *StatusTracker) load(ctx context.Context, key string) (*statusRecord, uint64, error) {
	c := t.copy.Load()
	gen := c.generation()
	e, err := t.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("publisher: reading status record %s: %w", key, err)
	}
	rec, err := decodeRecord(key, e.Value())
	if err != nil {
		return nil, 0, err
	}
	rec.written = e.Created()
	c.store(gen, key, rec, e.Revision())
	return rec, e.Revision(), nil
}

func decodeRecord(key string, value []byte) (*statusRecord, error) {
	var rec statusRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, fmt.Errorf("publisher: status record %s is corrupt: %w", key, err)
	}
	if rec.Resource == "" || rec.Key == "" || rec.State == "" || len(rec.Event.Data) == 0 {
		return nil, fmt.Errorf("publisher: status record %s is corrupt: resource, key, state or event missing", key)
	}
	return &rec, nil
}

// put writes rec under key by compare-and-set: created when rev is 0,
// updated at revision rev otherwise. It returns the new revision, or
// errConflict when the record is no longer at rev.
func (t *StatusTracker) put(ctx context.Context, key string, rec *statusRecord, rev uint64) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("publisher: encoding status record %s: %w", key, err)
	}
	c := t.copy.Load()
	gen := c.generation()
	var nrev uint64
	if rev == 0 {
		nrev, err = t.kv.Create(ctx, key, b)
	} else {
		nrev, err = t.kv.Update(ctx, key, b, rev)
	}
	// Create reports an existing key as ErrKeyExists; Update reports a stale
	// revision as ErrKeyRevisionMismatch, which on replicated buckets (code
	// 10164) ErrKeyExists does not match (nats.go v1.55 jetstream/kv.go).
	switch {
	case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, errConflict
	case err != nil:
		return 0, fmt.Errorf("publisher: writing status record %s: %w", key, err)
	}
	c.store(gen, key, rec, nrev)
	return nrev, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
