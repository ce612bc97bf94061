package consumer_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// Producer's trace context, as a command carries it.
const (
	producerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	producerSpan  = "00f067aa0ba902b7"
	producerState = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
)

// recorder traces the harness's instances into memory.
func recorder(h *harness) *tracetest.SpanRecorder {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	h.t.Cleanup(func() { _ = tp.Shutdown(h.t.Context()) })
	h.tracerProvider = tp
	return sr
}

// spanTree indexes ended spans.
type spanTree []sdktrace.ReadOnlySpan

func (st spanTree) named(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range st {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (st spanTree) children(parent sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range st {
		if s.Parent().SpanID() == parent.SpanContext().SpanID() && s.SpanContext().TraceID() == parent.SpanContext().TraceID() {
			out = append(out, s.Name())
		}
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[kv.Key] = kv.Value
	}
	return out
}

// traceparent is the event's traceparent attribute (CloudEvents
// distributed-tracing extension).
func (e event) traceparent() string {
	var ce struct {
		Traceparent string `json:"traceparent"`
	}
	_ = json.Unmarshal(e.Raw, &ce)
	return ce.Traceparent
}

// waitSpan waits until a span named name has ended and returns the ended
// spans.
func waitSpan(h *harness, sr *tracetest.SpanRecorder, name string) spanTree {
	h.t.Helper()
	var st spanTree
	h.eventually("span "+name, func() bool {
		st = spanTree(sr.Ended())
		return len(st.named(name)) > 0
	})
	return st
}

// A confirmation whose first request meets SYSTEM_ERROR: one trace, under
// the producer's, from the delivery down to each WeChat Pay attempt, the
// record's writes, the status write, the event's publication and the ack;
// the events carry the trace onward; no attribute holds the command's
// personal data.
func TestTraceOfACommand(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	sr := recorder(h)
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	app := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm, OutRequestNo: "P700"})
	if err := h.sim.AddFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: "confirm-cancel", Times: 1}); err != nil {
		t.Fatal(err)
	}
	h.start("a")
	header := nats.Header{}
	header.Set("traceparent", "00-"+producerTrace+"-"+producerSpan+"-01")
	header.Set("tracestate", producerState)
	body := confirmBody(app.ApplymentID)
	h.sendWith("confirm-cancel", "trace-1", body, header)
	outcome := one(t, h.waitOutcomes("trace-1"), "trace-1")
	st := waitSpan(h, sr, "process wxpay.cmd.confirm-cancel")

	del := st.named("process wxpay.cmd.confirm-cancel")[0]
	if got := del.SpanContext().TraceID().String(); got != producerTrace {
		t.Errorf("delivery span: trace %s, want the producer's %s", got, producerTrace)
	}
	if got := del.Parent().SpanID().String(); got != producerSpan || !del.Parent().IsRemote() {
		t.Errorf("delivery span: parent %s (remote %v), want the producer's %s", got, del.Parent().IsRemote(), producerSpan)
	}
	if del.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("delivery span kind %v", del.SpanKind())
	}
	a := attrs(del)
	for k, want := range map[attribute.Key]string{
		"messaging.system": "nats", "messaging.destination.name": "wxpay.cmd.confirm-cancel", "messaging.message.id": "trace-1",
		"messaging.operation.type": "process", "wxcancel.command.type": "confirm-cancel", "wxcancel.outcome": "succeeded",
		"wxcancel.settlement": "ack",
	} {
		if got := a[k].Emit(); got != want {
			t.Errorf("delivery span: %s = %q, want %q", k, got, want)
		}
	}

	kids := st.children(del)
	for _, want := range []string{"outcome read", "outcome claim", "POST confirm-cancel", "outcome write",
		"publish wxpay.evt.confirm-cancel.succeeded", "ack"} {
		if !slices.Contains(kids, want) {
			t.Errorf("delivery span: no child %q; children %q", want, kids)
		}
	}
	// The two attempts: the first answered 500 and retried, the second a
	// resend that succeeded.
	var attempts []sdktrace.ReadOnlySpan
	for _, s := range st.named("POST confirm-cancel") {
		if s.Parent().SpanID() == del.SpanContext().SpanID() {
			attempts = append(attempts, s)
		}
	}
	slices.SortFunc(attempts, func(x, y sdktrace.ReadOnlySpan) int { return x.StartTime().Compare(y.StartTime()) })
	if len(attempts) != 2 {
		t.Fatalf("%d attempt spans, want 2", len(attempts))
	}
	first, second := attrs(attempts[0]), attrs(attempts[1])
	if first["http.response.status_code"].AsInt64() != 500 || !first["wxcancel.wxpay.retry"].AsBool() ||
		attempts[0].Status().Code != codes.Error || first["error.type"].Emit() != "500" {
		t.Errorf("first attempt: %v, status %v", first, attempts[0].Status())
	}
	if second["http.response.status_code"].AsInt64() != 200 || second["http.request.resend_count"].AsInt64() != 1 ||
		second["wxcancel.wxpay.retry"].AsBool() || attempts[1].Status().Code == codes.Error {
		t.Errorf("second attempt: %v, status %v", second, attempts[1].Status())
	}
	if first["http.request.method"].Emit() != "POST" || first["server.address"].Emit() != "127.0.0.1" || attempts[0].SpanKind() != trace.SpanKindClient {
		t.Errorf("first attempt: method %s, server %s, kind %v", first["http.request.method"].Emit(), first["server.address"].Emit(), attempts[0].SpanKind())
	}
	if !attempts[0].EndTime().Before(attempts[1].StartTime()) && !attempts[0].EndTime().Equal(attempts[1].StartTime()) {
		t.Errorf("the attempts overlap: %v–%v and %v–%v", attempts[0].StartTime(), attempts[0].EndTime(), attempts[1].StartTime(), attempts[1].EndTime())
	}

	// The events carry the trace onward: the outcome event as a child of
	// the delivery, each status event of its status write.
	wantParent := fmt.Sprintf("00-%s-%s-01", producerTrace, del.SpanContext().SpanID())
	if got := outcome.Header.Get("traceparent"); got != wantParent {
		t.Errorf("outcome event traceparent %q, want %q", got, wantParent)
	}
	if got := outcome.Header.Get("tracestate"); got != producerState {
		t.Errorf("outcome event tracestate %q, want the producer's %q", got, producerState)
	}
	if got := outcome.traceparent(); got != wantParent {
		t.Errorf("outcome event's traceparent attribute %q, want %q", got, wantParent)
	}

	// A query reveals the application's state: its status event is a
	// child of the status write under the query's delivery.
	h.sendWith("query-cancel-withdraw", "trace-2", map[string]any{"applyment_id": app.ApplymentID}, header)
	h.waitOutcomes("trace-2")
	st = waitSpan(h, sr, "process wxpay.cmd.query-cancel-withdraw")
	query := st.named("process wxpay.cmd.query-cancel-withdraw")[0]
	statusIDs := map[string]bool{}
	for _, s := range st {
		if s.Name() == "status cancel-withdraw" && s.Parent().SpanID() == query.SpanContext().SpanID() {
			statusIDs[s.SpanContext().SpanID().String()] = true
			if a := attrs(s); a["wxcancel.resource"].Emit() != "cancel-withdraw" || a["wxcancel.state"].Emit() == "" {
				t.Errorf("status span attributes %v", a)
			}
		}
	}
	if len(statusIDs) == 0 {
		t.Fatalf("no status write under the query's delivery: children %q", st.children(query))
	}
	var published int
	for _, e := range h.statuses()["cancel-withdraw/"+app.ApplymentID] {
		tp := e.Header.Get("traceparent")
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != producerTrace || !statusIDs[parts[2]] {
			continue // an earlier status event, of the confirmation's answer
		}
		if got := e.Header.Get("tracestate"); got != producerState {
			t.Errorf("status event %s: tracestate %q", e.ID, got)
		}
		published++
	}
	if published != 1 {
		t.Errorf("%d status events of %s under the query's status write, want 1: %v", published, app.ApplymentID, h.statuses()["cancel-withdraw/"+app.ApplymentID])
	}

	// Nothing personal or secret in any attribute.
	for _, s := range st {
		for _, kv := range s.Attributes() {
			v := kv.Value.Emit()
			for _, secret := range []string{body["operator_identification"].(string), "Authorization", "PRIVATE KEY", "WECHATPAY2-SHA256"} {
				if strings.Contains(v, secret) {
					t.Errorf("span %s: attribute %s holds %q", s.Name(), kv.Key, secret)
				}
			}
		}
	}
}

// Without tracing, the events carry the producer's trace context unchanged.
func TestTraceContextWithoutTracing(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	h.start("a")
	header := nats.Header{}
	header.Set("traceparent", "00-"+producerTrace+"-"+producerSpan+"-01")
	header.Set("tracestate", producerState)
	h.sendWith("validate-cancel", "plain-1", map[string]any{"sub_mchid": subMchid}, header)
	e := one(t, h.waitOutcomes("plain-1"), "plain-1")
	if got, want := e.Header.Get("traceparent"), "00-"+producerTrace+"-"+producerSpan+"-01"; got != want {
		t.Errorf("traceparent %q, want the producer's %q", got, want)
	}
	if got := e.Header.Get("tracestate"); got != producerState {
		t.Errorf("tracestate %q, want the producer's %q", got, producerState)
	}
}

// A tracestate longer than W3C's 512 bytes (the propagator keeps it) is
// left off the events, and costs the command nothing: it is answered, with
// its traceparent carried.
func TestOversizedTracestateIsDropped(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	h.start("a")
	var members []string
	for i := range 20 {
		members = append(members, fmt.Sprintf("vendor%02d=%s", i, strings.Repeat("x", 25)))
	}
	long := strings.Join(members, ",") // 20 valid members, 699 bytes
	header := nats.Header{}
	header.Set("traceparent", "00-"+producerTrace+"-"+producerSpan+"-01")
	header.Set("tracestate", long)
	h.sendWith("validate-cancel", "long-state", map[string]any{"sub_mchid": subMchid}, header)
	e := one(t, h.waitOutcomes("long-state"), "long-state")
	if e.outcome() != "succeeded" || e.Header.Get("traceparent") == "" || e.Header.Get("tracestate") != "" {
		t.Errorf("outcome %s, traceparent %q, tracestate %q; want succeeded, carried, none",
			e.outcome(), e.Header.Get("traceparent"), e.Header.Get("tracestate"))
	}
}

// Without a traceparent, the delivery starts a trace of its own, and the
// events carry it.
func TestTraceStartsWithoutTraceparent(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	sr := recorder(h)
	h.start("a")
	h.send("validate-cancel", "root-1", map[string]any{"sub_mchid": subMchid})
	e := one(t, h.waitOutcomes("root-1"), "root-1")
	st := waitSpan(h, sr, "process wxpay.cmd.validate-cancel")
	del := st.named("process wxpay.cmd.validate-cancel")[0]
	if del.Parent().IsValid() {
		t.Errorf("delivery span has parent %v, want a root", del.Parent())
	}
	want := fmt.Sprintf("00-%s-%s-01", del.SpanContext().TraceID(), del.SpanContext().SpanID())
	if got := e.Header.Get("traceparent"); got != want {
		t.Errorf("outcome event traceparent %q, want the delivery's %q", got, want)
	}
	if got := e.Header.Get("tracestate"); got != "" {
		t.Errorf("tracestate %q, want none", got)
	}
	if ids := fmt.Sprintf(`"trace_id":"%s","span_id":"%s"`, del.SpanContext().TraceID(), del.SpanContext().SpanID()); !strings.Contains(h.logs.String(), ids) {
		t.Errorf("no log line of the delivery names its span (%s)", ids)
	}
	if kids := st.children(del); !slices.Contains(kids, "GET validate-cancel") || !slices.Contains(kids, "outcome read") {
		t.Errorf("children %q", kids)
	}
}

// A tracking poll is a trace of its own: its WeChat Pay attempt and, when
// the state changed, the status write, whose trace context the status event
// carries.
func TestTraceOfAPoll(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{Step: 300 * time.Millisecond})
	h.trackFast(100)
	sr := recorder(h)
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	h.start("a")
	id := h.applied(false, subMchid)[0]

	var st spanTree
	var changed sdktrace.ReadOnlySpan
	h.eventually("a poll that found a change", func() bool {
		st = spanTree(sr.Ended())
		for _, s := range st.named("poll cancel-withdraw") {
			if attrs(s)["wxcancel.poll.result"].Emit() == "changed" {
				changed = s
				return true
			}
		}
		return false
	})
	if changed.Parent().IsValid() {
		t.Errorf("poll span has a parent %v, want a root", changed.Parent())
	}
	kids := st.children(changed)
	if !slices.Contains(kids, "GET query-cancel-withdraw") || !slices.Contains(kids, "status cancel-withdraw") {
		t.Fatalf("poll span children %q", kids)
	}
	var write sdktrace.ReadOnlySpan
	for _, s := range st.named("status cancel-withdraw") {
		if s.Parent().SpanID() == changed.SpanContext().SpanID() {
			write = s
		}
	}
	want := fmt.Sprintf("00-%s-%s-01", write.SpanContext().TraceID(), write.SpanContext().SpanID())
	var found bool
	for _, e := range h.statuses()["cancel-withdraw/"+id] {
		found = found || e.Header.Get("traceparent") == want
	}
	if !found {
		t.Errorf("no status event of cancel-withdraw/%s carries the poll's status write %s", id, want)
	}
}
