package consumer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

// poller drives the tracking polls while its instance holds the lease:
// only one instance polls at a time, so that all the polls together keep
// to WXCANCEL_TRACK_RATE, and each poll claims its record first, so that no
// two polls of one resource are ever in flight, across a change of hands
// too. Commands come first: polls run on goroutines of their own, never in
// a command's worker place, and wait while every worker of the instance is
// busy.
type poller struct {
	s       *Service
	tracks  *tracks
	lease   jetstream.KeyValue
	id      string // this instance, in the lease and in claims
	limiter *rate.Limiter
	// callTimeout bounds one poll's call; claimTTL, a little longer, how
	// long its claim stands.
	callTimeout, claimTTL time.Duration
	log                   *slog.Logger
}

// leaseKey is the one key of the lease bucket.
const leaseKey = "poller"

// pollConcurrency is how many polls one driver has in flight at most.
const pollConcurrency = 8

// claimMargin is what a claim adds to a poll's deadline, for the clocks of
// the instances to differ by.
const claimMargin = 5 * time.Second

func newPoller(s *Service, t *tracks, lease jetstream.KeyValue) *poller {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	call := s.client.MaxCallDuration()
	return &poller{s: s, tracks: t, lease: lease, id: hex.EncodeToString(b),
		limiter:     rate.NewLimiter(rate.Limit(s.cfg.TrackRate), 1),
		callTimeout: call, claimTTL: call + claimMargin, log: s.log.With("component", "tracking")}
}

// run takes the lease whenever it is free and drives the polls while it
// holds it, until ctx ends; polls run under workCtx, and run returns once
// the last has ended. It gives the lease up on its way out, so that another
// instance takes over at once.
func (p *poller) run(ctx, workCtx context.Context) {
	var polls sync.WaitGroup
	defer polls.Wait()
	renew := TrackLeaseTTL / 3
	for ctx.Err() == nil {
		sent := time.Now()
		rev, err := p.lease.Create(ctx, leaseKey, []byte(p.id))
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
				p.log.Debug("the tracking lease cannot be taken", "err", err)
			}
			if sleepContext(ctx, renew) != nil {
				return
			}
			continue
		}
		p.log.Info("driving the tracking polls")
		p.hold(ctx, workCtx, rev, sent, &polls)
	}
}

// hold drives the polls while the lease (at revision rev, written at sent)
// is held: it renews it every third of its TTL and stops at once when a
// renewal is refused, or when none succeeded for long enough that the
// lease may have expired.
func (p *poller) hold(ctx, workCtx context.Context, rev uint64, sent time.Time, polls *sync.WaitGroup) {
	term, endTerm := context.WithCancel(ctx)
	driven := make(chan struct{})
	go func() {
		defer close(driven)
		p.drive(term, workCtx, polls)
	}()
	defer func() {
		endTerm()
		<-driven
		if ctx.Err() != nil { // leaving: let another instance take over now
			_ = p.lease.Delete(context.WithoutCancel(ctx), leaseKey, jetstream.LastRevision(rev))
		}
	}()
	validUntil := sent.Add(TrackLeaseTTL - TrackLeaseTTL/6)
	t := time.NewTicker(TrackLeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		nrev, err := p.lease.Update(ctx, leaseKey, []byte(p.id), rev)
		switch {
		case err == nil:
			rev, validUntil = nrev, sent.Add(TrackLeaseTTL-TrackLeaseTTL/6)
		case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
			p.log.Warn("the tracking lease was lost; another instance drives the polls")
			return
		case time.Now().After(validUntil):
			p.log.Warn("the tracking lease could not be renewed in time", "err", err)
			return
		}
	}
}

// drive runs the polls that come due, and completes the ends of tracking
// found pending, until term ends.
func (p *poller) drive(term, workCtx context.Context, polls *sync.WaitGroup) {
	var mu sync.Mutex
	inFlight := map[string]bool{}
	places := make(chan struct{}, pollConcurrency)
	snapshot := func() map[string]bool {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(inFlight)
	}
	for term.Err() == nil {
		key, e, at, ok := p.tracks.next(snapshot())
		now := p.s.clock()
		if !ok || at.After(now) {
			p.await(term, ok, at.Sub(now))
			continue
		}
		rec := e.rec
		switch {
		case rec.Ended != nil:
			p.pause(term, p.tracks.finish(term, key, rec, e.rev))
			continue
		case !now.Before(rec.horizon(p.tracks.cfg)):
			p.pause(term, p.tracks.change(term, key, func(cur *trackRecord, now time.Time) *trackRecord {
				if cur == nil || now.Before(cur.horizon(p.tracks.cfg)) { // gone, or tracked anew meanwhile
					return nil
				}
				next := *cur
				next.Ended = &trackEnd{Reason: schemas.EndExpired, At: now}
				return &next
			}))
			continue
		}
		if !p.commandsLeaveRoom(term) || p.limiter.Wait(term) != nil {
			continue
		}
		select {
		case places <- struct{}{}:
		case <-term.Done():
			continue
		}
		claimed := *rec
		claimed.Claim = &trackClaim{By: p.id, Until: p.s.clock().Add(p.claimTTL)}
		rev, err := p.tracks.put(term, key, &claimed, e.rev)
		if err != nil {
			<-places
			if !errors.Is(err, errChanged) { // a conflict: the copy will show what changed
				p.pause(term, err)
			}
			continue
		}
		mu.Lock()
		inFlight[key] = true
		mu.Unlock()
		polls.Add(1)
		go func() {
			defer polls.Done()
			p.poll(workCtx, key, claimed, rev)
			mu.Lock()
			delete(inFlight, key)
			mu.Unlock()
			<-places
			p.tracks.poke() // the record's next poll may be the driver's next
		}()
	}
}

// await waits until term ends, the copy changes, or (when timed) d passed.
func (p *poller) await(term context.Context, timed bool, d time.Duration) {
	var timer <-chan time.Time
	if timed {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-term.Done():
	case <-p.tracks.wake:
	case <-timer:
	}
}

// pause logs err, when not nil, and waits a second before the next
// record: a JetStream that refuses one thing refuses the next too.
func (p *poller) pause(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	p.log.Warn("tracking: JetStream operation failed", "err", err)
	p.s.metrics.JetStreamFailures.WithLabelValues(jsTracking).Inc()
	_ = sleepContext(ctx, time.Second)
}

// commandsLeaveRoom waits while every worker of the instance is busy with
// a command; false when term ended first.
func (p *poller) commandsLeaveRoom(term context.Context) bool {
	for p.s.workers.saturated() {
		if sleepContext(term, 20*time.Millisecond) != nil {
			return false
		}
	}
	return true
}

// poll queries the resource of rec (claimed at revision rev), publishes
// the status change it reveals, and records what it learnt.
func (p *poller) poll(workCtx context.Context, key string, rec trackRecord, rev uint64) {
	ctx, cancel := context.WithTimeout(workCtx, p.callTimeout)
	defer cancel()
	span := noSpan
	if p.s.tracing {
		ctx, span = p.s.tracer.Start(ctx, "poll "+string(rec.Resource), trace.WithNewRoot(),
			trace.WithAttributes(attrResource.String(string(rec.Resource)), attrPolls.Int(rec.Polls)))
	}
	log := p.log.With("resource", rec.Resource, "key", rec.Key)
	r, ob := p.query(ctx, log, rec)
	defer func() {
		if p.s.tracing {
			span.SetAttributes(attrPollResult.String(pollLabel(rec, r)))
			if r.failed {
				span.SetStatus(codes.Error, "the poll failed")
			}
			span.End()
		}
	}()
	if ob != nil {
		ob.CommandID = "track:" + string(rec.Resource) + ":" + rec.Key
		changed, err := p.s.observeOne(ctx, *ob)
		if err != nil {
			log.Warn("tracking: recording the state polled failed; polling again at the next interval", "err", err)
			p.s.metrics.JetStreamFailures.WithLabelValues(jsStatus).Inc()
			r = pollResult{failed: true}
		} else if changed {
			log.Info("tracking: a poll found a change", "state", ob.State)
		}
	}
	p.s.metrics.TrackPolls.WithLabelValues(string(rec.Resource), pollLabel(rec, r)).Inc()
	// Recorded even when shutdown cut the poll short: the claim goes.
	err := p.tracks.change(context.WithoutCancel(ctx), key, func(cur *trackRecord, now time.Time) *trackRecord {
		if cur == nil || !cur.StartedAt.Equal(rec.StartedAt) {
			return nil // untracked meanwhile (and perhaps tracked anew)
		}
		next := p.tracks.cfg.onPoll(*cur, r, now, p.tracks.rand())
		return &next
	})
	if err != nil {
		log.Warn("tracking: recording a poll failed; its claim expires", "err", err)
		p.s.metrics.JetStreamFailures.WithLabelValues(jsTracking).Inc()
	}
}

// query makes the poll's request, and returns what it learnt and the
// status observation of the answer (nil without one).
func (p *poller) query(ctx context.Context, log *slog.Logger, rec trackRecord) (pollResult, *publisher.Observation) {
	var (
		ob  publisher.Observation
		ok  bool
		err error
	)
	if rec.Resource == schemas.ResourceCancelWithdraw {
		var app wxpay.CancelWithdrawApplication
		var res *wxpay.Result
		app, res, err = p.s.client.QueryCancelWithdrawByApplymentID(ctx, rec.Key, p.s.countAttempts(ctx, log, string(schemas.TypeQueryCancelWithdraw)))
		if err == nil {
			ob, ok = withdrawObservation(app, res.Body)
		}
	} else {
		var app wxpay.CancelApplication
		var res *wxpay.Result
		app, res, err = p.s.client.QueryCancelApplication(ctx, rec.Key, p.s.countAttempts(ctx, log, string(schemas.TypeQueryCancelApplication)))
		if err == nil {
			ob, ok = applicationObservation(app, rec.Key, res.Body)
		}
	}
	switch {
	case wxpay.HasCode(err, wxpay.CodeNotFound):
		return pollResult{notFound: true}, nil
	case err != nil:
		log.Info("tracking: a poll failed; polling again at the next interval", "err", err)
		return pollResult{failed: true}, nil
	case !ok || !schemas.ValidKey(ob.Key) || ob.Key != rec.Key:
		log.Warn("tracking: the answer does not show the resource's state; polling again at the next interval")
		return pollResult{failed: true}, nil
	}
	return pollResult{state: ob.State, modifiedAt: ob.ModifiedAt, subMchid: ob.SubMchid}, &ob
}

// pollLabel is the result label of a poll of rec that learnt r.
func pollLabel(rec trackRecord, r pollResult) string {
	switch {
	case r.failed:
		return "failed"
	case r.notFound:
		return "not_found"
	case r.state != rec.State:
		return "changed"
	}
	return "unchanged"
}
