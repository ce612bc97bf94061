package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// workers runs a handler on the messages of one JetStream pull consumer,
// at most size at once. It is the mechanics of consumption and knows
// nothing of what the messages mean:
//
//   - Pulling only for free workers. A puller asks the server for one
//     message, and only while it holds a free place (or the promise of one,
//     below), so no message waits in a client-side buffer while its ack
//     timer runs.
//   - Giving a place up while waiting. A handler waiting out a backoff
//     (slot.waitOut) frees its place for the next message, and takes one
//     again when it is back, over the bound if it must, until as many
//     handlers have finished.
//   - Hand-over. A handler about to finish (slot.handOver) promises its
//     place to a waiting puller, which pulls at once; the pulled message
//     starts only once the handler has returned.
//   - Drain. pull returns when its context ends, handing back at once
//     what is on its way; drain waits for the handlers still running,
//     bounded, and stop ends the worker goroutines.
//
// Handlers run on kept goroutines rather than one per message: a handler
// here needs a deep stack (signing, HTTP, JetStream), which a new goroutine
// grows copy by copy for every message and a kept one once.
type workers struct {
	cons   jetstream.Consumer
	handle func(ctx context.Context, msg jetstream.Msg, sl *slot)
	log    *slog.Logger
	busy   prometheus.Gauge // handlers running or waiting out a backoff

	// sem holds a token per message being handled (and per puller waiting
	// for a message to give a worker): size at most, but for the overdraft
	// of handlers back from a wait while every place was taken.
	sem       chan struct{}
	overdraft atomic.Int64
	// parked holds a token per handler waiting without a place: size at
	// most.
	parked chan struct{}
	// handoff passes the place of a finishing handler to a puller waiting
	// for one.
	handoff chan *handover
	// idle passes a message to a worker goroutine waiting for its next.
	idle chan jetstream.Msg

	running    sync.WaitGroup // messages handed to a worker and not yet returned
	handling   atomic.Int64   // the same, counted
	size       int
	goroutines sync.WaitGroup // worker goroutines, busy or idle
}

// handover is the place of a finishing handler, promised to a puller: the
// puller asks for the next message at once, and the place itself is passed
// on the channel once the handler has returned.
type handover struct{ place chan struct{} }

// slot is a message's place among the workers, given to its handler.
type slot struct {
	w        *workers
	promised *handover // set by handOver when a puller took the promise
}

// newWorkers returns workers handling the messages of cons, size at once.
// busy, when not nil, counts the handlers running.
func newWorkers(cons jetstream.Consumer, size int, handle func(context.Context, jetstream.Msg, *slot), log *slog.Logger, busy prometheus.Gauge) *workers {
	if busy == nil {
		busy = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})
	}
	return &workers{
		cons: cons, handle: handle, log: log, busy: busy, size: size,
		sem:     make(chan struct{}, size),
		parked:  make(chan struct{}, size),
		handoff: make(chan *handover),
		idle:    make(chan jetstream.Msg),
	}
}

// maxPullers bounds the pull requests one instance keeps open: each puller
// holds at most one, for one message. A few pullers keep every worker busy
// (a pull takes one round trip, a message's handling many), and few keep the
// consumer's queue of waiting pull requests, shared by every instance and
// bounded by the server (MaxWaiting, 512 by default), short.
const maxPullers = 16

// pullExpiry is how long one pull request waits on the server for a
// message before the puller asks again.
const pullExpiry = 30 * time.Second

// closeWait bounds the wait for a message already on its way to a puller
// when pulling stops (once the server has the unsubscription, it assigns no
// more: a message can only be on the wire).
const closeWait = 200 * time.Millisecond

// pull runs the pullers until ctx ends; handlers run under workCtx, which
// only the caller ends (after drain). Every puller owns its own iterator, a
// long-lived subscription: no subscription is made per pull.
func (w *workers) pull(ctx, workCtx context.Context) {
	var wg sync.WaitGroup
	for range min(cap(w.sem), maxPullers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.puller(ctx, workCtx)
		}()
	}
	wg.Wait()
}

// drain waits for the handlers still running, at most timeout; then it
// calls cancel (which must end their context) and waits for them. It
// reports whether it had to cancel.
func (w *workers) drain(timeout time.Duration, cancel func()) (cancelled bool) {
	done := make(chan struct{})
	go func() {
		w.running.Wait()
		close(done)
	}()
	select {
	case <-done:
		return false
	case <-time.After(timeout):
		cancel()
		<-done
		return true
	}
}

// saturated reports whether as many messages are being handled as there
// are places (or more, back from waits): other work yields to them.
func (w *workers) saturated() bool { return w.handling.Load() >= int64(w.size) }

// wait waits for the worker goroutines, which end with the work context.
func (w *workers) wait() { w.goroutines.Wait() }

// puller pulls messages for free workers until ctx ends, making its iterator
// again after a terminal error (consumer deleted, connection closed).
func (w *workers) puller(ctx, workCtx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		it, err := w.cons.Messages(jetstream.PullMaxMessages(1), jetstream.PullExpiry(pullExpiry))
		if err == nil {
			err = w.pullWith(ctx, workCtx, it, &failures)
		}
		if err == nil {
			return
		}
		failures++
		w.logPullError(err, failures)
		select {
		case <-time.After(min(time.Duration(failures)*100*time.Millisecond, 2*time.Second)):
		case <-ctx.Done():
		}
	}
}

// pullWith pulls through it until ctx ends (nil) or it fails for good.
func (w *workers) pullWith(ctx, workCtx context.Context, it jetstream.MessagesContext, failures *int) error {
	for {
		// Wait for a free place before asking for a message, or for the
		// promise of one: the pull then overlaps the finishing handler's
		// last round trip, and the message waits for the place no longer.
		var promise *handover
		select {
		case w.sem <- struct{}{}:
		case promise = <-w.handoff:
		case <-ctx.Done():
			w.stopPulling(it)
			return nil
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if promise != nil {
			<-promise.place
		}
		if err != nil {
			w.release()
			switch {
			case ctx.Err() != nil:
				w.stopPulling(it)
				return nil
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				// The pull request was lost (a server restart, a
				// leadership change): the iterator asks again.
				*failures++
				w.logPullError(err, *failures)
				continue
			default:
				it.Stop()
				return err
			}
		}
		*failures = 0
		w.dispatch(workCtx, msg)
	}
}

// dispatch hands msg to a worker goroutine waiting for its next message if
// there is one, else to a new one. There are never more worker goroutines
// than twice the most handlers running at once (one that has just freed its
// place may miss the next message); they end with the work context.
func (w *workers) dispatch(workCtx context.Context, msg jetstream.Msg) {
	w.running.Add(1)
	w.handling.Add(1)
	w.busy.Inc()
	select {
	case w.idle <- msg:
	default:
		w.goroutines.Add(1)
		go w.worker(workCtx, msg)
	}
}

// worker handles msg, then each message dispatch gives it, until the work
// context ends.
func (w *workers) worker(workCtx context.Context, msg jetstream.Msg) {
	defer w.goroutines.Done()
	for {
		w.work(workCtx, msg)
		select {
		case msg = <-w.idle:
		case <-workCtx.Done():
			return
		}
	}
}

// work handles one message, then passes its place on: to the puller it was
// promised to, or back to the free places.
func (w *workers) work(workCtx context.Context, msg jetstream.Msg) {
	sl := &slot{w: w}
	w.handle(workCtx, msg, sl)
	w.busy.Dec()
	w.handling.Add(-1)
	if sl.promised != nil {
		sl.promised.place <- struct{}{}
	} else {
		w.release()
	}
	w.running.Done()
}

// handOver promises the slot's place to a puller waiting for one, if one
// is: its pull's round trip then overlaps what the handler still does. The
// place itself follows when the handler returns. Calling it again does
// nothing.
func (sl *slot) handOver() {
	if sl.promised != nil {
		return
	}
	h := &handover{place: make(chan struct{}, 1)}
	select {
	case sl.w.handoff <- h:
		sl.promised = h
	default:
	}
}

// waitOut waits d, or until ctx ends (its error), without holding the
// slot's place: a puller takes the place for the next message. Back from
// the wait, the handler takes a free place or, when there is none, goes
// over the bound until as many handlers have finished (it never queues
// behind new messages, nor behind a puller idling for one). At most size
// handlers wait this way at once; beyond that one waits holding its place.
func (sl *slot) waitOut(ctx context.Context, d time.Duration) error {
	w := sl.w
	select {
	case w.parked <- struct{}{}:
	default:
		return sleepContext(ctx, d)
	}
	w.release()
	err := sleepContext(ctx, d)
	select {
	case w.sem <- struct{}{}:
	default:
		w.overdraft.Add(1)
	}
	<-w.parked
	return err
}

// release gives a place up. The overdraft of handlers that came back from
// a wait while every place was taken is paid off first, so that the pullers
// wait until the handlers running are within the bound again. (Tokens plus
// overdraft always count the places held, so the receive never blocks.)
func (w *workers) release() {
	for {
		n := w.overdraft.Load()
		if n == 0 {
			<-w.sem
			return
		}
		if w.overdraft.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// stopPulling ends an iterator when pulling stops: a message that the
// server sent for the pull under way (it can be on the wire) is handed back
// at once for another instance, rather than left to its ack timeout.
func (w *workers) stopPulling(it jetstream.MessagesContext) {
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(closeWait))
		if err != nil {
			it.Stop()
			return
		}
		if err := msg.Nak(); err != nil {
			w.log.Debug("handing back a message pulled during shutdown failed", "err", err)
		}
	}
}

// logPullError logs a failed pull: quietly while NATS reconnects or a
// stream leader is elected, loudly when it persists.
func (w *workers) logPullError(err error, failures int) {
	if failures < 10 {
		w.log.Debug("pull failed; retrying", "err", err, "failures", failures)
		return
	}
	w.log.Warn("pull failing repeatedly", "err", err, "failures", failures)
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
