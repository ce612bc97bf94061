package publisher_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	cloudevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

const (
	testPrefix = "wxt"
	testMchID  = "1900000109"
	testBucket = "WXT_STATUS"
	testTrace  = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

// testNow is the fixed clock of every test publisher: nanoseconds and a
// non-UTC zone, to see both handled.
var testNow = time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.FixedZone("CST", 8*3600))

const testNowText = "2025-03-03T21:06:07.123456000Z"

// env is one embedded JetStream server with an events stream capturing
// <testPrefix>.evt.> and a status bucket.
type env struct {
	srv    *server.Server
	opts   server.Options
	url    string
	js     jetstream.JetStream
	events jetstream.Stream
	kv     jetstream.KeyValue
}

// newEnv starts a server whose events stream has the given duplicate window
// (0: the server's default, 2 minutes).
func newEnv(t testing.TB, duplicates time.Duration) *env {
	t.Helper()
	e := &env{}
	e.start(t, &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	t.Cleanup(func() { e.srv.Shutdown(); e.srv.WaitForShutdown() })
	e.url = e.srv.ClientURL()
	e.js = e.connect(t)
	ctx := t.Context()
	var err error
	e.events, err = e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WXT_EVENTS", Subjects: []string{testPrefix + ".evt.>"}, Duplicates: duplicates, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("creating the events stream: %v", err)
	}
	e.kv, err = e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: testBucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("creating the status bucket: %v", err)
	}
	return e
}

func (e *env) start(t testing.TB, opts *server.Options) {
	t.Helper()
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	e.srv, e.opts = srv, *opts
}

// restart stops the server and starts it again on the same port and store.
func (e *env) restart(t *testing.T) {
	t.Helper()
	opts := e.opts
	opts.Port = e.srv.Addr().(*net.TCPAddr).Port
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.start(t, &opts)
}

// connect opens a new connection (another instance of the service).
func (e *env) connect(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(e.url, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// instance is one service instance: its own connection, publisher and
// tracker on the shared bucket. A nil js connects anew.
type instance struct {
	js      *flakyJS
	pub     *publisher.Publisher
	events  jetstream.Stream
	tracker *publisher.StatusTracker
}

func (e *env) instance(t testing.TB) *instance {
	t.Helper()
	js := &flakyJS{JetStream: e.connect(t)}
	pub, err := publisher.New(js, publisher.Config{Prefix: testPrefix, MchID: testMchID, Clock: func() time.Time { return testNow }})
	if err != nil {
		t.Fatalf("publisher.New: %v", err)
	}
	kv, err := js.KeyValue(t.Context(), testBucket)
	if err != nil {
		t.Fatalf("opening the bucket: %v", err)
	}
	events, err := js.Stream(t.Context(), e.events.CachedInfo().Config.Name)
	if err != nil {
		t.Fatalf("opening the events stream: %v", err)
	}
	return &instance{js: js, pub: pub, events: events, tracker: pub.StatusTracker(kv, events)}
}

// Failure modes of flakyJS, standing for a process killed around a publish.
const (
	publishWorks         int32 = iota
	publishFailsBefore         // dies before the event reaches JetStream
	publishFailsAfterAck       // dies after JetStream stored the event, before seeing the ack
)

var errKilled = errors.New("test: process killed")

// flakyJS is a real JetStream context whose event publishes can be made to
// fail before or after they reach the server. KV operations do not go
// through it.
type flakyJS struct {
	jetstream.JetStream
	mode      atomic.Int32
	publishes atomic.Int32 // publishes that reached the server
}

func (f *flakyJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	mode := f.mode.Load()
	if mode == publishFailsBefore {
		return nil, errKilled
	}
	ack, err := f.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil {
		f.publishes.Add(1)
	}
	if mode == publishFailsAfterAck && err == nil {
		return nil, errKilled
	}
	return ack, err
}

// stored returns the messages of the events stream on subject (all of them
// when subject is empty), in order.
func (e *env) stored(t *testing.T, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := t.Context()
	info, err := e.events.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := e.events.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("reading message %d: %v", seq, err)
		}
		if subject == "" || m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// checkEvent checks what every stored event must be: headers, a valid
// CloudEvent with the common attributes. It returns the parsed event.
func checkEvent(t *testing.T, m *jetstream.RawStreamMsg, wantTraceparent string) cloudevent.Event {
	t.Helper()
	if got := m.Header.Get("Content-Type"); got != "application/cloudevents+json" {
		t.Errorf("Content-Type header = %q", got)
	}
	if got := m.Header.Get("traceparent"); got != wantTraceparent {
		t.Errorf("traceparent header = %q, want %q", got, wantTraceparent)
	}
	var ev cloudevent.Event
	if err := ev.UnmarshalJSON(m.Data); err != nil {
		t.Fatalf("not a CloudEvent: %v\n%s", err, m.Data)
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("invalid CloudEvent: %v", err)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.ID() {
		t.Errorf("Nats-Msg-Id = %q, event id %q", got, ev.ID())
	}
	if ev.SpecVersion() != "1.0" || ev.Source() != "wxcancel/"+testMchID || ev.DataContentType() != "application/json" {
		t.Errorf("specversion %q, source %q, datacontenttype %q", ev.SpecVersion(), ev.Source(), ev.DataContentType())
	}
	var raw map[string]any
	if err := json.Unmarshal(m.Data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["time"] != testNowText {
		t.Errorf("time = %v, want %s", raw["time"], testNowText)
	}
	tp, has := ev.Extensions()["traceparent"]
	switch {
	case wantTraceparent == "" && has:
		t.Errorf("traceparent attribute %v on an event without one", tp)
	case wantTraceparent != "" && tp != wantTraceparent:
		t.Errorf("traceparent attribute = %v, want %s", tp, wantTraceparent)
	}
	validateSchema(t, m.Data)
	return ev
}

// validateSchema checks a whole event against the project's JSON Schemas.
func validateSchema(t *testing.T, event []byte) {
	t.Helper()
	if err := schemas.ValidateEventJSON(event); err != nil {
		t.Errorf("event does not match its JSON Schema: %v\n%s", err, event)
	}
}

// sameJSON reports whether a and b are the same JSON value (same keys
// present, same nulls), and fails the test otherwise.
func sameJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad expectation: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		var cg bytes.Buffer
		_ = json.Compact(&cg, got)
		t.Errorf("%s:\n got %s\nwant %s", what, cg.String(), want)
	}
}
