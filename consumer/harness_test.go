package consumer_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/embeddednats"
	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// Keys are generated once per test binary: RSA-2048 generation is slow.
var testKeys struct {
	once     sync.Once
	merchant wxpaysim.Merchant
	wechat   *rsa.PrivateKey
	err      error
}

func keys(t *testing.T) (wxpaysim.Merchant, *rsa.PrivateKey) {
	t.Helper()
	testKeys.once.Do(func() {
		testKeys.merchant, testKeys.err = wxpaysim.NewMerchant("1900000001")
		if testKeys.err == nil {
			testKeys.wechat, testKeys.err = rsa.GenerateKey(rand.Reader, 2048)
		}
	})
	if testKeys.err != nil {
		t.Fatal(testKeys.err)
	}
	return testKeys.merchant, testKeys.wechat
}

// harness is one embedded JetStream server, one simulator over real HTTP,
// and the configuration of the services under test.
type harness struct {
	t        *testing.T
	storeDir string
	ns       *server.Server
	port     int
	sim      *wxpaysim.Server
	simURL   string
	requests *requestGauge // the simulator's requests in progress
	merchant wxpaysim.Merchant
	cfg      consumer.Config
	retry    wxpay.RetryPolicy // the instances' in-process retries
	attempt  time.Duration     // the instances' attempt timeout
	clock    func() time.Time  // the instances' clock; nil: time.Now
	// tracerProvider makes the instances' spans; nil: none.
	tracerProvider trace.TracerProvider
	nc             *nats.Conn // the test's own connection (sender and observer)
	js             jetstream.JetStream
	logs           *logSink
	probes         int // forget's probes so far
}

func newHarness(t *testing.T, simOpts wxpaysim.Options) *harness {
	t.Helper()
	m, wk := keys(t)
	h := &harness{t: t, storeDir: t.TempDir(), merchant: m, logs: &logSink{}}
	h.startNATS(-1)
	t.Cleanup(func() { h.ns.Shutdown(); h.ns.WaitForShutdown() })

	simOpts.Key = wk
	sim, err := wxpaysim.New(simOpts)
	if err != nil {
		t.Fatal(err)
	}
	sim.RegisterMerchant(m)
	h.requests = &requestGauge{next: sim}
	hs := httptest.NewServer(h.requests)
	t.Cleanup(hs.Close)
	h.sim, h.simURL = sim, hs.URL

	cfg := consumer.DefaultConfig()
	cfg.MchID = m.MchID
	h.retry = wxpay.RetryPolicy{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond, MaxElapsed: 150 * time.Millisecond}
	h.attempt = 2 * time.Second
	cfg.MaxDeliver = 3
	cfg.RedeliveryDelay = 20 * time.Millisecond
	cfg.Concurrency = 8
	cfg.AckWait = 3 * time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	h.cfg = cfg

	h.nc, h.js = h.connect("test")
	return h
}

// requestGauge passes requests to the simulator, counting those in
// progress, the most seen at once (in all, and for one path), and when
// each path was requested.
type requestGauge struct {
	next      http.Handler
	mu        sync.Mutex
	now, most int
	paths     map[string]int // in progress, by path
	mostPath  int
	at        map[string][]time.Time
}

func (g *requestGauge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	g.mu.Lock()
	if g.paths == nil {
		g.paths, g.at = map[string]int{}, map[string][]time.Time{}
	}
	g.now++
	g.most = max(g.most, g.now)
	g.paths[path]++
	g.mostPath = max(g.mostPath, g.paths[path])
	g.at[path] = append(g.at[path], time.Now())
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.now--
		g.paths[path]--
		g.mu.Unlock()
	}()
	g.next.ServeHTTP(w, r)
}

// peakPerPath returns the most requests seen in progress at once for one
// path (one resource).
func (g *requestGauge) peakPerPath() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mostPath
}

// times returns when each path was requested, by path.
func (g *requestGauge) times() map[string][]time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string][]time.Time, len(g.at))
	for p, ts := range g.at {
		out[p] = append([]time.Time(nil), ts...)
	}
	return out
}

// inProgress returns the requests in progress now.
func (g *requestGauge) inProgress() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.now
}

// peak returns the most requests seen in progress at once.
func (g *requestGauge) peak() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.most
}

func (h *harness) startNATS(port int) {
	h.t.Helper()
	ns, err := embeddednats.Start("127.0.0.1", port, h.storeDir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.ns = ns
	h.port = ns.Addr().(*net.TCPAddr).Port
}

func (h *harness) connect(name string) (*nats.Conn, jetstream.JetStream) {
	h.t.Helper()
	nc, err := nats.Connect(h.ns.ClientURL(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	return nc, js
}

// instance is one running service.
type instance struct {
	svc     *consumer.Service
	nc      *nats.Conn
	metrics *consumer.Metrics // its own, on a registry of its own
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returned
}

// stop shuts the instance down gracefully and waits for it.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cancel()
	select {
	case <-in.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the service did not stop within 30s")
	}
}

// crash kills the instance's NATS connection first, as a dying process
// would: nothing it does afterwards reaches JetStream.
func (in *instance) crash(t *testing.T) {
	t.Helper()
	in.nc.Close()
	in.stop(t)
}

// start runs one service instance until the test ends.
func (h *harness) start(name string) *instance {
	h.t.Helper()
	wcfg, err := h.sim.ClientConfig(h.merchant, h.simURL)
	if err != nil {
		h.t.Fatal(err)
	}
	wcfg.Retry = h.retry
	wcfg.AttemptTimeout = h.attempt
	client, err := wxpay.NewClient(wcfg)
	if err != nil {
		h.t.Fatal(err)
	}
	nc, js := h.connect(name)
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("instance", name)
	reg := prometheus.NewRegistry()
	metrics := consumer.NewMetrics(reg)
	svc, err := consumer.New(h.t.Context(), h.cfg, consumer.Options{JetStream: js, Client: client, Logger: log, Metrics: metrics, Clock: h.clock,
		TracerProvider: h.tracerProvider})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{svc: svc, nc: nc, metrics: metrics, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		svc.Run(ctx)
	}()
	h.t.Cleanup(func() {
		cancel()
		<-in.done
	})
	return in
}

// send publishes a command; id "" sends it without a Nats-Msg-Id.
func (h *harness) send(ctype, id string, body any) *jetstream.PubAck {
	h.t.Helper()
	return h.sendWith(ctype, id, body, nil)
}

// sendWith is send with extra headers.
func (h *harness) sendWith(ctype, id string, body any, header nats.Header) *jetstream.PubAck {
	h.t.Helper()
	var data []byte
	switch b := body.(type) {
	case []byte:
		data = b
	case string:
		data = []byte(b)
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	msg := nats.NewMsg("wxpay.cmd." + ctype)
	msg.Data = data
	for k, v := range header {
		msg.Header[k] = v
	}
	if id != "" {
		msg.Header.Set(jetstream.MsgIDHeader, id)
	}
	ack, err := h.js.PublishMsg(h.t.Context(), msg)
	if err != nil {
		h.t.Fatalf("publishing %s %s: %v", ctype, id, err)
	}
	return ack
}

// event is one stored event, checked and decoded.
type event struct {
	Subject string // NATS subject
	ID      string
	Type    string
	CESubj  string // the CloudEvent's subject
	Data    map[string]any
	Raw     []byte
	Header  nats.Header
}

// String is the event as stored, so that test failures show it as JSON.
func (e event) String() string { return e.Subject + " " + string(e.Raw) }

func (e event) outcome() string { return e.Type[strings.LastIndex(e.Type, ".")+1:] }

func (e event) errorCode() string {
	if m, ok := e.Data["error"].(map[string]any); ok {
		s, _ := m["code"].(string)
		return s
	}
	return ""
}

func (e event) attempts() int {
	f, _ := e.Data["attempts"].(float64)
	return int(f)
}

func (e event) result() map[string]any {
	m, _ := e.Data["result"].(map[string]any)
	return m
}

// events returns every event stored in the events stream, each checked as
// a CloudEvent against the project's schemas. A read that fails (a test
// restarting nats-server, JetStream not back yet) is made again.
func (h *harness) events() []event {
	h.t.Helper()
	var out []event
	poll.Until(h.t, time.Minute, "the events stream to be read", func() (err error) {
		out, err = h.readEvents()
		return err
	})
	return out
}

// readEvents reads the events stream once.
func (h *harness) readEvents() ([]event, error) {
	h.t.Helper()
	ctx := h.t.Context()
	s, err := h.js.Stream(ctx, "WXPAY_EVENTS")
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return nil, err
	}
	var out []event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(m.Subject, probeSubject) {
			continue
		}
		out = append(out, h.check(m))
	}
	return out, nil
}

func (h *harness) check(m *jetstream.RawStreamMsg) event {
	h.t.Helper()
	var ce cloudevent.Event
	if err := ce.UnmarshalJSON(m.Data); err != nil {
		h.t.Fatalf("event on %s is not a CloudEvent: %v\n%s", m.Subject, err, m.Data)
	}
	if err := ce.Validate(); err != nil {
		h.t.Errorf("event on %s: invalid CloudEvent: %v", m.Subject, err)
	}
	if err := schemas.ValidateEventJSON(m.Data); err != nil {
		h.t.Errorf("event on %s does not match its schema: %v\n%s", m.Subject, err, m.Data)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != ce.ID() {
		h.t.Errorf("event %s: Nats-Msg-Id %q", ce.ID(), got)
	}
	e := event{Subject: m.Subject, ID: ce.ID(), Type: ce.Type(), CESubj: ce.Subject(), Raw: m.Data, Header: m.Header}
	if err := json.Unmarshal(ce.Data(), &e.Data); err != nil {
		h.t.Fatalf("event %s data: %v", e.ID, err)
	}
	return e
}

// outcomes returns the outcome events by command id (all of them, so
// duplicates show).
func (h *harness) outcomes() map[string][]event {
	out := map[string][]event{}
	for _, e := range h.events() {
		if e.Type != "wxpay.status.changed" && e.Type != "wxpay.tracking.ended" {
			out[e.CESubj] = append(out[e.CESubj], e)
		}
	}
	return out
}

// statuses returns the status-change events by CloudEvent subject
// (resource/key).
func (h *harness) statuses() map[string][]event {
	out := map[string][]event{}
	for _, e := range h.events() {
		if e.Type == "wxpay.status.changed" {
			out[e.CESubj] = append(out[e.CESubj], e)
		}
	}
	return out
}

// eventually polls cond until it holds or the deadline passes (a generous
// one: the machines are shared, and only the end state is asserted).
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	poll.True(h.t, time.Minute, what, cond)
}

// waitOutcomes waits until every id has an outcome event and the consumer
// has nothing pending or unacknowledged, then returns the outcomes.
func (h *harness) waitOutcomes(ids ...string) map[string][]event {
	h.t.Helper()
	var got map[string][]event
	h.eventually(fmt.Sprintf("outcomes of %d commands", len(ids)), func() bool {
		got = h.outcomes()
		for _, id := range ids {
			if len(got[id]) == 0 {
				return false
			}
		}
		return true
	})
	h.waitIdle()
	return h.outcomes()
}

// waitSucceeded waits for the outcomes of ids, then fails the test for
// each command that did not succeed.
func (h *harness) waitSucceeded(ids ...string) {
	h.t.Helper()
	got := h.waitOutcomes(ids...)
	for _, id := range ids {
		if e := one(h.t, got, id); e.outcome() != "succeeded" {
			h.t.Errorf("%s: %s", id, e.Raw)
		}
	}
}

// waitIdle waits until the durable consumer has no pending and no
// unacknowledged command.
func (h *harness) waitIdle() {
	h.t.Helper()
	h.eventually("the consumer to be idle", func() bool {
		c, err := h.js.Consumer(h.t.Context(), "WXPAY_COMMANDS", consumer.NewTopology(h.cfg).Consumer.Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(h.t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// fillEvents makes the events stream refuse every new event (full, discard
// new) until the returned func opens it again. The stream must hold an
// event already.
func (h *harness) fillEvents() (open func()) {
	h.t.Helper()
	s, err := h.js.Stream(h.t.Context(), "WXPAY_EVENTS")
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		h.t.Fatal("fillEvents needs an event in the stream (MaxMsgs 0 is no limit)")
	}
	full := info.Config
	full.MaxMsgs, full.Discard = int64(info.State.Msgs), jetstream.DiscardNew
	if _, err := h.js.UpdateStream(h.t.Context(), full); err != nil {
		h.t.Fatal(err)
	}
	return func() {
		h.t.Helper()
		if _, err := h.js.UpdateStream(h.t.Context(), info.Config); err != nil {
			h.t.Fatal(err)
		}
	}
}

// waitRefused waits until command id has its outcome recorded and in has
// failed to publish an event, and checks that no outcome event of it is
// stored.
func (h *harness) waitRefused(in *instance, id string) {
	h.t.Helper()
	h.eventually("the outcome of "+id+" to be recorded and an event refused", func() bool {
		_, ok, _ := consumer.RecordedOutcome(h.t.Context(), h.js, consumer.NewTopology(h.cfg), id)
		return ok && count(in.metrics.JetStreamFailures) > 0
	})
	if got := h.outcomes(); len(got[id]) != 0 {
		h.t.Fatal("the event was stored by a full stream; the test would prove nothing")
	}
}

// recordUnpublished has in, the only instance running, record the outcome
// of validate-cancel id while the events stream refuses its event: a first
// command (id "first") records the merchant's status, so that id changes
// none and only its outcome event is refused. It returns what opens the
// stream again.
func (h *harness) recordUnpublished(in *instance, id string) (open func()) {
	h.t.Helper()
	body := map[string]any{"sub_mchid": subMchid}
	h.send("validate-cancel", "first", body)
	h.waitOutcomes("first")
	open = h.fillEvents()
	h.send("validate-cancel", id, body)
	h.waitRefused(in, id)
	return open
}

// count is the sum of a counter's values over all its labels.
func count(c *prometheus.CounterVec) int {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var n float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err == nil {
			n += pb.GetCounter().GetValue()
		}
	}
	return int(n)
}

// value is a counter's value.
func value(c prometheus.Counter) int {
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		panic(err) // a counter always writes itself
	}
	return int(pb.GetCounter().GetValue())
}

// probeSubject is where forget publishes its probes in the events stream;
// events leaves them out.
const probeSubject = "wxpay.evt.test-probe."

// forget makes the stream (the events stream, whose messages only tests
// read) forget every message id it remembers, so that a test can have an
// event republished past its duplicate window: a probe is published after
// them, and, with the window shortened, published again until the stream
// stores it again.
func (h *harness) forget(stream string) {
	h.t.Helper()
	h.probes++
	probe := nats.NewMsg(probeSubject + "forget")
	probe.Data = []byte("{}")
	id := fmt.Sprintf("probe-%d", h.probes)
	publish := func() bool {
		ack, err := h.js.PublishMsg(h.t.Context(), probe, jetstream.WithMsgID(id))
		if err != nil {
			h.t.Fatal(err)
		}
		return !ack.Duplicate
	}
	publish()
	h.untilAccepted(stream, publish)
}

// resend sends a command again with an id the commands stream stored
// before, once the stream no longer drops it as a duplicate.
func (h *harness) resend(ctype, id string, body any) {
	h.t.Helper()
	h.untilAccepted("WXPAY_COMMANDS", func() bool { return !h.send(ctype, id, body).Duplicate })
}

// untilAccepted shortens the duplicate window of stream and calls
// publish, which reports whether the stream stored its message rather than
// dropped it as a duplicate, until it does. (A publish dropped as a
// duplicate changes nothing.) nats-server forgets ids on a timer that an
// update changing the window fires at once, and the purge may still run
// with the old window and set the timer for as long: while the id is not
// forgotten, the window is changed again (100ms and 150ms in turn) every
// half second.
func (h *harness) untilAccepted(stream string, publish func() (stored bool)) {
	h.t.Helper()
	s, err := h.js.Stream(h.t.Context(), stream)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	var updated time.Time
	h.eventually(stream+" to forget the ids it stored", func() bool {
		if time.Since(updated) > 500*time.Millisecond {
			if cfg.Duplicates == 100*time.Millisecond {
				cfg.Duplicates = 150 * time.Millisecond
			} else {
				cfg.Duplicates = 100 * time.Millisecond
			}
			if _, err := h.js.UpdateStream(h.t.Context(), cfg); err != nil {
				h.t.Fatal(err)
			}
			updated = time.Now()
		}
		return publish()
	})
}

// one asserts that id has exactly one outcome event and returns it.
func one(t *testing.T, got map[string][]event, id string) event {
	t.Helper()
	evs := got[id]
	if len(evs) != 1 {
		t.Fatalf("command %s: %d outcome events, want exactly 1: %v", id, len(evs), evs)
	}
	return evs[0]
}

// logSink collects log output for assertions about what is never logged.
type logSink struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var _ io.Writer = (*logSink)(nil)
