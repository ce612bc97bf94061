package consumer

// Lifecycle tracking (docs/interface.md, Lifecycle tracking): WeChat Pay
// sends no notification when a cancellation moves on, so the service polls
// every cancel-withdraw and cancel-application it has seen in a state that
// is not final until it is, and publishes each change as a status-change
// event.
//
// What is tracked lives in the tracking bucket, one record per resource:
// its last state, when it started, the wait between polls and when the next
// is due, and the claim of a poll in flight. Any instance creates, resets
// or ends a record by compare-and-set when a command's answer shows the
// resource (tracks.seen), and every instance watches the bucket. One
// instance at a time, holder of the lease, drives the polls (poller.go):
// it polls what is due, at most WXCANCEL_TRACK_RATE per second, each poll
// first claiming the record by compare-and-set so that no two polls of a
// resource are ever in flight. This file holds the records and the pure
// rules of the cadence.

import (
	"time"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// trackRecord is the tracking bucket's record of one resource.
type trackRecord struct {
	Resource schemas.Resource `json:"resource"`
	Key      string           `json:"key"`
	SubMchid string           `json:"sub_mchid,omitempty"`
	// State is the last state known ("" before any answer showed one).
	State string `json:"state,omitempty"`
	// ModifiedAt is the newest modification time WeChat Pay reported.
	ModifiedAt time.Time `json:"modified_at,omitzero"`
	// StartedAt is when this tracking started; it names it (the end
	// event's id).
	StartedAt time.Time `json:"started_at"`
	// Interval is the current wait between polls; Due when the next poll
	// comes.
	Interval time.Duration `json:"interval"`
	Due      time.Time     `json:"due"`
	Polls    int           `json:"polls"`
	// NotFound counts the polls in a row answered 404 NOT_FOUND.
	NotFound int `json:"not_found,omitempty"`
	// Claim is set while a poll is in flight: no other poll of the
	// resource starts before it expires.
	Claim *trackClaim `json:"claim,omitempty"`
	// Ended is set once tracking has ended; the record is deleted once its
	// event is published.
	Ended *trackEnd `json:"ended,omitempty"`
}

// trackClaim is a poll in flight.
type trackClaim struct {
	By    string    `json:"by"`    // the instance polling
	Until time.Time `json:"until"` // the poll's deadline, with a margin
}

// trackEnd is the end of a tracking, with its event built once.
type trackEnd struct {
	Reason schemas.EndReason `json:"reason"`
	At     time.Time         `json:"at"`
	Event  publisher.Message `json:"event"`
}

// horizon is when the tracking of r expires.
func (r *trackRecord) horizon(c trackConfig) time.Time { return r.StartedAt.Add(c.horizon) }

// actionAt is when the tracking of r needs its driver next: at once for an
// ended record (its event to publish), else at the next poll, no sooner
// than a claim allows, and no later than the horizon.
func (r *trackRecord) actionAt(c trackConfig) time.Time {
	if r.Ended != nil {
		return time.Time{}
	}
	at := r.Due
	if h := r.horizon(c); h.Before(at) {
		at = h
	}
	if r.Claim != nil && r.Claim.Until.After(at) {
		at = r.Claim.Until
	}
	return at
}

// trackConfig is the cadence of tracking.
type trackConfig struct {
	interval, maxInterval, horizon time.Duration
}

// wait is d with jitter: u in [0, 1) spreads it over ±10%.
func wait(d time.Duration, u float64) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*u))
}

// sighting is what a command's answer showed of a tracked kind of
// resource.
type sighting struct {
	resource   schemas.Resource
	key        string
	subMchid   string
	state      string    // "" when the answer has no state (a submission, a confirmation)
	modifiedAt time.Time // the answer's modification time, if any
	// changed: the answer proves a change without showing the new state
	// (a submission or a confirmation went through): the cadence restarts.
	changed bool
	// notFound: a track command's query was answered 404 NOT_FOUND; the
	// resource is tracked all the same. The query is not a poll (it has an
	// outcome event): the 3 polls in a row that end the tracking follow it.
	notFound bool
}

// onSighting returns the record after s (rec: the active record, nil when
// the resource is not tracked), or nil when s changes nothing. A resource
// seen in a state that is not final is tracked; a change restarts the
// cadence; a final state ends the tracking. u is the jitter draw.
func (c trackConfig) onSighting(rec *trackRecord, s sighting, now time.Time, u float64) *trackRecord {
	final := s.resource.Final(s.state)
	if rec == nil {
		if final {
			return nil
		}
		next := &trackRecord{Resource: s.resource, Key: s.key, SubMchid: s.subMchid, State: s.state, ModifiedAt: s.modifiedAt,
			StartedAt: now, Interval: c.interval, Due: now.Add(wait(c.interval, u))}
		if h := next.horizon(c); next.Due.After(h) {
			next.Due = h
		}
		return next
	}
	older := !s.modifiedAt.IsZero() && s.modifiedAt.Before(rec.ModifiedAt)
	switch {
	case s.notFound || older:
		return nil
	case s.state == "" && !s.changed:
		return nil
	case s.state != "" && s.state == rec.State:
		return nil
	}
	next := *rec
	if s.subMchid != "" {
		next.SubMchid = s.subMchid
	}
	if s.state != "" {
		next.State = s.state
	}
	if s.modifiedAt.After(next.ModifiedAt) {
		next.ModifiedAt = s.modifiedAt
	}
	if final {
		next.Ended = &trackEnd{Reason: schemas.EndFinal, At: now}
		return &next
	}
	next.Interval, next.Due, next.NotFound = c.interval, now.Add(wait(c.interval, u)), 0
	if h := next.horizon(c); next.Due.After(h) {
		next.Due = h
	}
	return &next
}

// pollResult is what one poll learnt.
type pollResult struct {
	state      string // the state found (success)
	modifiedAt time.Time
	subMchid   string
	notFound   bool // answered 404 NOT_FOUND
	failed     bool // no answer to trust after the retries
}

// notFoundLimit is how many polls in a row answered NOT_FOUND end tracking.
const notFoundLimit = 3

// onPoll returns the record after a poll of rec: a change restarts the
// cadence, an unchanged state (or NOT_FOUND) doubles the wait up to the
// longest, a failure keeps it; a final state or the third NOT_FOUND in a
// row ends the tracking. The next poll never comes after the horizon.
func (c trackConfig) onPoll(rec trackRecord, r pollResult, now time.Time, u float64) trackRecord {
	next := rec
	next.Polls++
	next.Claim = nil
	longer := min(2*rec.Interval, c.maxInterval)
	switch {
	case r.failed:
	case r.notFound:
		next.NotFound++
		if next.NotFound >= notFoundLimit {
			next.Ended = &trackEnd{Reason: schemas.EndNotFound, At: now}
			return next
		}
		next.Interval = longer
	default:
		next.NotFound = 0
		if r.subMchid != "" {
			next.SubMchid = r.subMchid
		}
		older := !r.modifiedAt.IsZero() && r.modifiedAt.Before(rec.ModifiedAt)
		switch {
		case older: // a newer state was recorded meanwhile
			next.Interval = longer
		case rec.Resource.Final(r.state):
			next.State, next.ModifiedAt = r.state, later(rec.ModifiedAt, r.modifiedAt)
			next.Ended = &trackEnd{Reason: schemas.EndFinal, At: now}
			return next
		case r.state != rec.State:
			next.State, next.ModifiedAt, next.Interval = r.state, later(rec.ModifiedAt, r.modifiedAt), c.interval
		default:
			next.ModifiedAt = later(rec.ModifiedAt, r.modifiedAt)
			next.Interval = longer
		}
	}
	next.Due = now.Add(wait(next.Interval, u))
	if h := next.horizon(c); next.Due.After(h) {
		next.Due = h
	}
	return next
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
