package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/internal/embeddednats"
	"github.com/wxcancel/wxcancel/internal/poll"
)

// queue is a work-queue stream with a durable pull consumer on an embedded
// server, for the workers' tests.
type queue struct {
	t    *testing.T
	js   jetstream.JetStream
	cons jetstream.Consumer
}

func newQueue(t *testing.T) *queue {
	t.Helper()
	ns, err := embeddednats.Start("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "Q", Subjects: []string{"q.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(t.Context(), "Q", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &queue{t: t, js: js, cons: cons}
}

// put publishes messages q.0 … q.<n-1>.
func (q *queue) put(n int) {
	q.t.Helper()
	for i := range n {
		if _, err := q.js.Publish(q.t.Context(), fmt.Sprintf("q.%d", i), nil); err != nil {
			q.t.Fatal(err)
		}
	}
}

// info is the consumer's state now.
func (q *queue) info() *jetstream.ConsumerInfo {
	q.t.Helper()
	info, err := q.cons.Info(q.t.Context())
	if err != nil {
		q.t.Fatal(err)
	}
	return info
}

// until polls cond until it holds, failing the test after a minute.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.True(t, time.Minute, what, cond)
}

// run starts w pulling until the returned stop is called; stop drains
// (without a deadline), ends the work context and waits for the worker
// goroutines.
func run(w *workers) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	workCtx, cancelWork := context.WithCancel(context.Background())
	pulled := make(chan struct{})
	go func() {
		defer close(pulled)
		w.pull(ctx, workCtx)
	}()
	return func() {
		cancel()
		<-pulled
		w.drain(time.Hour, cancelWork)
		cancelWork()
		w.wait()
	}
}

// gauge counts the handlers running at once.
type gauge struct {
	mu        sync.Mutex
	now, most int
	done      int
}

func (g *gauge) enter() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now++
	g.most = max(g.most, g.now)
}

func (g *gauge) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now--
	g.done++
}

func (g *gauge) read() (now, most, done int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.now, g.most, g.done
}

// TestWorkersPullOnlyForFreePlaces: with a backlog, exactly size handlers
// run at once, and no message is taken from the stream beyond them: the
// others stay pending, for other instances.
func TestWorkersPullOnlyForFreePlaces(t *testing.T) {
	q := newQueue(t)
	q.put(30)
	var g gauge
	release := make(chan struct{})
	w := newWorkers(q.cons, 3, func(ctx context.Context, msg jetstream.Msg, _ *slot) {
		g.enter()
		<-release
		g.leave()
		_ = msg.Ack()
	}, slog.New(slog.DiscardHandler), nil)
	stop := run(w)
	until(t, "three handlers to run", func() bool { now, _, _ := g.read(); return now == 3 })
	if info := q.info(); info.NumAckPending != 3 || info.NumPending != 27 {
		t.Errorf("with three handlers blocked: %d messages delivered, %d pending; want 3 and 27", info.NumAckPending, info.NumPending)
	}
	close(release)
	until(t, "every message to be handled", func() bool { _, _, done := g.read(); return done == 30 })
	stop()
	if _, most, _ := g.read(); most != 3 {
		t.Errorf("%d handlers ran at once, want 3", most)
	}
}

// TestWorkersWaitOutGivesThePlaceUp: a handler waiting out a backoff does
// not hold its place: with one place, the next message is handled during
// the wait.
func TestWorkersWaitOutGivesThePlaceUp(t *testing.T) {
	q := newQueue(t)
	q.put(2)
	secondDone := make(chan struct{})
	var order []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	w := newWorkers(q.cons, 1, func(ctx context.Context, msg jetstream.Msg, sl *slot) {
		defer func() { _ = msg.Ack() }()
		if msg.Subject() == "q.1" {
			note("second handled")
			close(secondDone)
			return
		}
		waitCtx, cancel := context.WithCancel(ctx)
		go func() { <-secondDone; cancel() }() // the wait ends once the second is done
		_ = sl.waitOut(waitCtx, time.Hour)
		note("first back from its wait")
	}, slog.New(slog.DiscardHandler), nil)
	stop := run(w)
	until(t, "both messages to be handled", func() bool { return q.info().NumAckPending == 0 && q.info().NumPending == 0 })
	stop()
	if got := strings.Join(order, ", "); got != "second handled, first back from its wait" {
		t.Errorf("order: %s", got)
	}
}

// TestWorkersHandOver: a finishing handler's promise lets the next message
// be pulled before it returns, and that message still waits for the place:
// one handler at a time.
func TestWorkersHandOver(t *testing.T) {
	q := newQueue(t)
	q.put(1)
	var g gauge
	var order []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	handedOver := false // only the handler touches it, one at a time
	w := newWorkers(q.cons, 1, func(ctx context.Context, msg jetstream.Msg, sl *slot) {
		g.enter()
		defer g.leave()
		note("start " + msg.Subject())
		if msg.Subject() == "q.0" && !handedOver {
			handedOver = true
			sl.handOver()
			for i := range 2 {
				if _, err := q.js.Publish(ctx, fmt.Sprintf("q.%d", i), nil); err != nil {
					t.Error(err)
				}
			}
			pulled := poll.Within(time.Minute, func() bool {
				info, err := q.cons.Info(ctx)
				return err == nil && info.NumAckPending == 2
			})
			if !pulled {
				t.Error("the next message was not pulled during the hand-over")
			}
		}
		_ = msg.Ack()
		note("end " + msg.Subject())
	}, slog.New(slog.DiscardHandler), nil)
	stop := run(w)
	until(t, "every message to be handled", func() bool { _, _, done := g.read(); return done == 3 })
	stop()
	if _, most, _ := g.read(); most != 1 {
		t.Errorf("%d handlers ran at once with one place", most)
	}
	if got := strings.Join(order, ", "); !strings.HasPrefix(got, "start q.0, end q.0, start ") {
		t.Errorf("order: %s", got)
	}
}

// TestWorkersDrain: draining lets a running handler finish; past the
// timeout it cancels the handlers' context and waits for them.
func TestWorkersDrain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		finishes  bool // the handler returns by itself once released
		cancelled bool // drain must cancel
	}{
		{"finishes within the timeout", true, false},
		{"cancelled at the timeout", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue(t)
			q.put(1)
			started, release := make(chan struct{}), make(chan struct{})
			sawCancel := false
			w := newWorkers(q.cons, 2, func(ctx context.Context, msg jetstream.Msg, _ *slot) {
				close(started)
				select {
				case <-release:
				case <-ctx.Done():
					sawCancel = true
				}
				_ = msg.Nak()
			}, slog.New(slog.DiscardHandler), nil)
			ctx, cancel := context.WithCancel(context.Background())
			workCtx, cancelWork := context.WithCancel(context.Background())
			defer cancelWork()
			pulled := make(chan struct{})
			go func() { defer close(pulled); w.pull(ctx, workCtx) }()
			<-started
			cancel()
			<-pulled
			timeout := time.Hour
			if tc.finishes {
				close(release)
			} else {
				timeout = time.Millisecond
			}
			if got := w.drain(timeout, cancelWork); got != tc.cancelled || sawCancel != tc.cancelled {
				t.Errorf("drain cancelled: %v, the handler saw its context end: %v; want %v", got, sawCancel, tc.cancelled)
			}
			cancelWork()
			w.wait()
		})
	}
}

// workerGoroutines counts the goroutines of this process that are worker
// goroutines, busy or idle.
func workerGoroutines(t *testing.T) int {
	t.Helper()
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "consumer.(*workers).worker(") {
			n++
		}
	}
	return n
}

// TestWorkersReusedAndBounded: the goroutines that handle messages are kept
// between messages, are never more than twice the places, and none outlives
// the work context.
func TestWorkersReusedAndBounded(t *testing.T) {
	q := newQueue(t)
	q.put(200)
	var g gauge
	w := newWorkers(q.cons, 4, func(ctx context.Context, msg jetstream.Msg, _ *slot) {
		g.enter()
		g.leave()
		_ = msg.Ack()
	}, slog.New(slog.DiscardHandler), nil)
	if n := workerGoroutines(t); n != 0 {
		t.Fatalf("%d worker goroutines before the workers started", n)
	}
	stop := run(w)
	until(t, "every message to be handled", func() bool { _, _, done := g.read(); return done == 200 })
	if n := workerGoroutines(t); n == 0 || n > 8 {
		t.Errorf("%d worker goroutines after 200 messages with 4 places, want 1 to 8 waiting for the next", n)
	}
	stop()
	if n := workerGoroutines(t); n != 0 {
		t.Errorf("%d worker goroutines outlived the work context", n)
	}
}
