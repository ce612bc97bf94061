package consumer

import (
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/schemas"
)

// TestOnSighting holds what a command's answer does to the tracking of a
// resource (docs/interface.md, Lifecycle tracking), row by row.
func TestOnSighting(t *testing.T) {
	c := trackConfig{interval: time.Minute, maxInterval: time.Hour, horizon: 60 * 24 * time.Hour}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	started := now.Add(-3 * time.Hour)
	t9 := now.Add(-time.Minute) // a modification time
	tracked := &trackRecord{Resource: schemas.ResourceCancelWithdraw, Key: "A1", SubMchid: "1900000109", State: "REVIEWING", ModifiedAt: t9,
		StartedAt: started, Interval: 8 * time.Minute, Due: now.Add(5 * time.Minute), Polls: 4, NotFound: 1}
	cw := func(state string) sighting {
		return sighting{resource: schemas.ResourceCancelWithdraw, key: "A1", subMchid: "1900000109", state: state}
	}
	type want struct {
		none     bool // nothing changes
		state    string
		interval time.Duration
		due      time.Time
		ended    schemas.EndReason
		notFound int
	}
	restarted := func(state string) want {
		return want{state: state, interval: time.Minute, due: now.Add(time.Minute)}
	}
	tests := []struct {
		name string
		rec  *trackRecord
		s    sighting
		want want
	}{
		{"not tracked, seen in a state that is not final: tracked", nil, cw("REVIEWING"), restarted("REVIEWING")},
		{"not tracked, final: nothing", nil, cw("FINISH"), want{none: true}},
		{"not tracked, final with a withdrawal state: nothing", nil, cw("FINISH/WITHDRAW_SUCCEED"), want{none: true}},
		{"not tracked, submitted (no state yet): tracked", nil, sighting{resource: schemas.ResourceCancelWithdraw, key: "A1", changed: true}, restarted("")},
		{"not tracked, track command answered NOT_FOUND: tracked, not counted (not a poll)", nil, sighting{resource: schemas.ResourceCancelWithdraw, key: "A1", notFound: true},
			want{interval: time.Minute, due: now.Add(time.Minute), notFound: 0}},
		{"old-flow application, not final: tracked", nil, sighting{resource: schemas.ResourceCancelApplication, key: "OA1", state: "REVIEWING"}, restarted("REVIEWING")},
		{"old-flow application, CANCEL_SUCCESS: nothing", nil, sighting{resource: schemas.ResourceCancelApplication, key: "OA1", state: "CANCEL_SUCCESS"}, want{none: true}},
		{"tracked, same state: nothing (the cadence goes on)", tracked, cw("REVIEWING"), want{none: true}},
		{"tracked, another state: the cadence restarts", tracked, cw("WAITING_MERCHANT_CONFIRM"), restarted("WAITING_MERCHANT_CONFIRM")},
		{"tracked, a withdrawal state is another state", &trackRecord{Resource: schemas.ResourceCancelWithdraw, Key: "A1", State: "FUND_PROCESSING/WITHDRAW_PROCESSING",
			StartedAt: started, Interval: time.Hour}, cw("FUND_PROCESSING/WITHDRAW_EXCEPTION"), restarted("FUND_PROCESSING/WITHDRAW_EXCEPTION")},
		{"tracked, final: ended", tracked, cw("REJECTED"), want{state: "REJECTED", interval: 8 * time.Minute, due: now.Add(5 * time.Minute), ended: schemas.EndFinal, notFound: 1}},
		{"tracked, an older answer: nothing", tracked, sighting{resource: schemas.ResourceCancelWithdraw, key: "A1", state: "ACCEPTED", modifiedAt: t9.Add(-time.Hour)}, want{none: true}},
		{"tracked, confirmed (no state shown): the cadence restarts", tracked, sighting{resource: schemas.ResourceCancelWithdraw, key: "A1", changed: true}, restarted("REVIEWING")},
		{"tracked, shown without a state or a change: nothing", tracked, sighting{resource: schemas.ResourceCancelWithdraw, key: "A1"}, want{none: true}},
		{"tracked, track command answered NOT_FOUND: nothing", tracked, sighting{resource: schemas.ResourceCancelWithdraw, key: "A1", notFound: true}, want{none: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.onSighting(tt.rec, tt.s, now, 0.5) // 0.5: no jitter
			if tt.want.none {
				if got != nil {
					t.Fatalf("changed the record: %+v", got)
				}
				return
			}
			if got == nil {
				t.Fatal("changed nothing")
			}
			var ended schemas.EndReason
			if got.Ended != nil {
				ended = got.Ended.Reason
			}
			if got.State != tt.want.state || got.Interval != tt.want.interval || !got.Due.Equal(tt.want.due) || ended != tt.want.ended || got.NotFound != tt.want.notFound {
				t.Errorf("state %q interval %s due %s ended %q not_found %d; want %+v", got.State, got.Interval, got.Due, ended, got.NotFound, tt.want)
			}
			if tt.rec == nil && (!got.StartedAt.Equal(now) || got.Polls != 0 || got.Resource != tt.s.resource || got.Key != tt.s.key) {
				t.Errorf("a new tracking: %+v", got)
			}
			if tt.rec != nil && (!got.StartedAt.Equal(tt.rec.StartedAt) || got.Polls != tt.rec.Polls) {
				t.Errorf("the tracking's start or polls changed: %+v", got)
			}
		})
	}
}

// TestOnPoll holds the cadence of the polls: doubling while nothing
// changes, back to the first interval on a change, the ends.
func TestOnPoll(t *testing.T) {
	c := trackConfig{interval: time.Minute, maxInterval: time.Hour, horizon: 24 * time.Hour}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	started := now.Add(-3 * time.Hour)
	rec := trackRecord{Resource: schemas.ResourceCancelWithdraw, Key: "A1", State: "REVIEWING", StartedAt: started,
		Interval: 4 * time.Minute, Due: now, Polls: 2, NotFound: 0, Claim: &trackClaim{By: "i1", Until: now.Add(time.Minute)}}
	with := func(f func(*trackRecord)) trackRecord { r := rec; f(&r); return r }
	tests := []struct {
		name     string
		rec      trackRecord
		r        pollResult
		interval time.Duration
		state    string
		notFound int
		ended    schemas.EndReason
		due      time.Time // zero: now + interval
	}{
		{"unchanged: the wait doubles", rec, pollResult{state: "REVIEWING"}, 8 * time.Minute, "REVIEWING", 0, "", time.Time{}},
		{"unchanged at the longest wait: it stays", with(func(r *trackRecord) { r.Interval = 40 * time.Minute }), pollResult{state: "REVIEWING"}, time.Hour, "REVIEWING", 0, "", time.Time{}},
		{"changed: back to the first interval", rec, pollResult{state: "WAITING_MERCHANT_CONFIRM"}, time.Minute, "WAITING_MERCHANT_CONFIRM", 0, "", time.Time{}},
		{"final: ended", rec, pollResult{state: "REVOKED"}, 4 * time.Minute, "REVOKED", 0, schemas.EndFinal, now},
		{"failed: tried again at the same interval", rec, pollResult{failed: true}, 4 * time.Minute, "REVIEWING", 0, "", time.Time{}},
		{"first NOT_FOUND: counted, the wait doubles", rec, pollResult{notFound: true}, 8 * time.Minute, "REVIEWING", 1, "", time.Time{}},
		{"third NOT_FOUND in a row: ended", with(func(r *trackRecord) { r.NotFound = 2 }), pollResult{notFound: true}, 4 * time.Minute, "REVIEWING", 3, schemas.EndNotFound, now},
		{"an answer after NOT_FOUNDs: the count starts again", with(func(r *trackRecord) { r.NotFound = 2 }), pollResult{state: "REVIEWING"}, 8 * time.Minute, "REVIEWING", 0, "", time.Time{}},
		{"a failure between NOT_FOUNDs does not clear them", with(func(r *trackRecord) { r.NotFound = 2 }), pollResult{failed: true}, 4 * time.Minute, "REVIEWING", 2, "", time.Time{}},
		{"the next poll never comes after the horizon", with(func(r *trackRecord) { r.StartedAt = now.Add(-24*time.Hour + 5*time.Minute) }), pollResult{state: "REVIEWING"},
			8 * time.Minute, "REVIEWING", 0, "", now.Add(5 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.onPoll(tt.rec, tt.r, now, 0.5)
			var ended schemas.EndReason
			if got.Ended != nil {
				ended = got.Ended.Reason
			}
			due := tt.due
			if due.IsZero() {
				due = now.Add(tt.interval)
			}
			if got.Interval != tt.interval || got.State != tt.state || got.NotFound != tt.notFound || ended != tt.ended || got.Polls != tt.rec.Polls+1 || got.Claim != nil {
				t.Errorf("interval %s state %q not_found %d ended %q polls %d claim %v", got.Interval, got.State, got.NotFound, ended, got.Polls, got.Claim)
			}
			if ended == "" && !got.Due.Equal(due) {
				t.Errorf("due %s, want %s", got.Due, due)
			}
		})
	}
}

// TestWaitJitter: every wait is within ±10% of the interval.
func TestWaitJitter(t *testing.T) {
	for _, tt := range []struct {
		u    float64
		want time.Duration
	}{{0, 54 * time.Second}, {0.5, time.Minute}, {0.999999, 65999988 * time.Microsecond}} {
		if got := wait(time.Minute, tt.u).Round(time.Microsecond); got != tt.want {
			t.Errorf("wait(1m, %g) = %s, want %s", tt.u, got, tt.want)
		}
	}
}

// TestActionAt: a record needs its driver at its due time, never past the
// horizon, never before a claim expires, and at once once ended.
func TestActionAt(t *testing.T) {
	c := trackConfig{interval: time.Minute, maxInterval: time.Hour, horizon: time.Hour}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := trackRecord{StartedAt: t0, Due: t0.Add(10 * time.Minute)}
	if got := r.actionAt(c); !got.Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("due: %s", got)
	}
	r.Due = t0.Add(2 * time.Hour)
	if got := r.actionAt(c); !got.Equal(t0.Add(time.Hour)) {
		t.Errorf("past the horizon: %s", got)
	}
	r.Claim = &trackClaim{Until: t0.Add(90 * time.Minute)}
	if got := r.actionAt(c); !got.Equal(t0.Add(90 * time.Minute)) {
		t.Errorf("claimed: %s", got)
	}
	r.Ended = &trackEnd{Reason: schemas.EndFinal}
	if got := r.actionAt(c); !got.IsZero() {
		t.Errorf("ended: %s", got)
	}
}
