package consumer

// Traces. Each delivery of a command is one span (kind consumer), a child
// of the producer's traceparent when the command carries one, with a child
// span for each step that waits on something: the outcome record's read
// and writes, every WeChat Pay attempt, every status compare-and-set, the
// outcome event's publication and the settlement. Each tracking poll is a
// span of its own, with its attempts and status write below it. The events
// published carry the trace context of the span they come from (the
// delivery's, or the status write's) in their traceparent and tracestate
// headers, so a subscriber's spans join the same trace.
//
// With no TracerProvider (the default) spans cost nothing, and the events
// carry the command's own traceparent and tracestate, as they always have.
//
// Attributes name the command (type, id, delivery count), the resource and
// state a status write is about, and the HTTP request's method, host,
// status and retry: never a command's body, a WeChat Pay answer, a path
// (it holds ids), a header or an error's text beyond its code.

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

// instrumentation names the tracer, as OpenTelemetry asks: the package.
const instrumentation = "github.com/wxcancel/wxcancel/consumer"

// Attribute keys of our own (the semantic conventions have none for them).
const (
	attrCommandType = attribute.Key("wxcancel.command.type")
	attrDelivery    = attribute.Key("wxcancel.delivery")
	attrOutcome     = attribute.Key("wxcancel.outcome")
	attrSettlement  = attribute.Key("wxcancel.settlement")
	attrDuplicate   = attribute.Key("wxcancel.duplicate")
	attrEndpoint    = attribute.Key("wxcancel.wxpay.endpoint")
	attrRetry       = attribute.Key("wxcancel.wxpay.retry")
	attrRetryIn     = attribute.Key("wxcancel.wxpay.retry_in_ms")
	attrResource    = attribute.Key("wxcancel.resource")
	attrState       = attribute.Key("wxcancel.state")
	attrChanged     = attribute.Key("wxcancel.changed")
	attrPollResult  = attribute.Key("wxcancel.poll.result")
	attrPolls       = attribute.Key("wxcancel.poll.count")
)

// traceContext is the W3C trace context propagator: the one the contract
// names (the traceparent header), whatever the process's global one is.
var traceContext = propagation.TraceContext{}

// headerCarrier reads and writes trace context in NATS headers by their
// exact names: nats.Header is case-sensitive, unlike http.Header, so the
// propagator's lower-case traceparent and tracestate are used as they are.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// traceOf is the trace context an event published under ctx carries: that
// of ctx's span, or of the command when tracing is off (the delivery's
// no-op span keeps its parent's context); empty without either.
func traceOf(ctx context.Context) publisher.TraceContext {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return publisher.TraceContext{}
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	tc := publisher.TraceContext{Traceparent: c["traceparent"], Tracestate: c["tracestate"]}
	if !schemas.ValidTracestate(tc.Tracestate) {
		// The propagator keeps a tracestate of any length; an event carries
		// one of 512 bytes at most (W3C's limit for propagators), else none:
		// a sender's oversized tracestate must not cost it its answer.
		tc.Tracestate = ""
	}
	return tc
}

// noSpan is the span of a step when tracing is off: it records nothing,
// and ending it ends nothing.
var noSpan = trace.SpanFromContext(context.Background())

// tracerOf returns the tracer of tp, or a no-op one when tp is nil, and
// whether spans are made at all: without, the attributes are not even
// built (the spans are still started, no-ops that carry the command's
// trace context on).
func tracerOf(tp trace.TracerProvider) (trace.Tracer, bool) {
	if tp == nil {
		return noop.NewTracerProvider().Tracer(instrumentation), false
	}
	return tp.Tracer(instrumentation), true
}

// startDelivery starts d's span, a child of the command's trace context
// when its headers carry a valid one.
func (s *Service) startDelivery(ctx context.Context, d *delivery) context.Context {
	ctx = traceContext.Extract(ctx, headerCarrier(d.msg.Headers()))
	if !s.tracing {
		// A no-op span, carrying the command's trace context (if any) on
		// to the events.
		ctx, d.span = s.tracer.Start(ctx, "")
		return ctx
	}
	ctx, d.span = s.tracer.Start(ctx, "process "+d.msg.Subject(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationName("process"),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(d.msg.Subject()),
			semconv.MessagingConsumerGroupName(s.topo.Consumer.Durable),
			semconv.MessagingMessageID(d.id),
			semconv.MessagingMessageBodySize(len(d.msg.Data())),
			attrCommandType.String(d.ctype),
			attrDelivery.Int64(int64(d.number)),
		))
	// The delivery's log lines name its span, so that a trace is found
	// from a log line and back, for a command without a traceparent too.
	if sc := d.span.SpanContext(); sc.IsValid() {
		d.log = d.log.With("trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
	}
	return ctx
}

// endDelivery ends d's span with how it was settled: a delivery handed
// back for anything but a shutdown is an error (a failed command was
// marked so when its outcome was recorded).
func (s *Service) endDelivery(d *delivery, st settlement) {
	if !s.tracing {
		return
	}
	d.span.SetAttributes(attrSettlement.String(st.kind.String()))
	if st.kind == ackRetry && st.reason != "shutdown" {
		d.span.SetStatus(codes.Error, "handed back for redelivery")
	}
	d.span.End()
}

// spanOutcome notes on d's span the outcome recorded (duplicate: by an
// earlier delivery); a failed command is an error.
func (s *Service) spanOutcome(d *delivery, o schemas.Outcome, duplicate bool) {
	if !s.tracing {
		return
	}
	d.span.SetAttributes(attrOutcome.String(string(o)), attrDuplicate.Bool(duplicate))
	if o == schemas.Failed {
		d.span.SetStatus(codes.Error, "the command failed")
	}
}

// step starts the span of one step of d (see the package comment); with
// tracing off, none: ctx as it is, and noSpan.
func (s *Service) step(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !s.tracing {
		return ctx, noSpan
	}
	return s.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// stepTook records a step that started at start and took took as a span
// under ctx, after the fact (the outcome read overlaps the execution of a
// read-only command, and its end is known only to the read).
func (s *Service) stepTook(ctx context.Context, name string, start time.Time, took time.Duration, err error) {
	if !s.tracing {
		return
	}
	_, span := s.tracer.Start(ctx, name, trace.WithTimestamp(start))
	if err != nil {
		span.SetStatus(codes.Error, "failed")
		span.SetAttributes(semconv.ErrorTypeKey.String(errorClass(err)))
	}
	span.End(trace.WithTimestamp(start.Add(took)))
}

// publishStep starts the span of publishing m (kind producer).
func (s *Service) publishStep(ctx context.Context, m publisher.Message) (context.Context, trace.Span) {
	if !s.tracing {
		return ctx, noSpan
	}
	return s.tracer.Start(ctx, "publish "+m.Subject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationName("publish"),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingDestinationName(m.Subject),
			semconv.MessagingMessageID(m.ID),
		))
}

// observeOne records and publishes the status change ob reveals (see
// publisher.StatusTracker.Observe) in a span of its own, whose trace
// context the status event carries.
func (s *Service) observeOne(ctx context.Context, ob publisher.Observation) (changed bool, err error) {
	span := noSpan
	if s.tracing {
		ctx, span = s.step(ctx, "status "+string(ob.Resource), attrResource.String(string(ob.Resource)), attrState.String(ob.State))
	}
	tc := traceOf(ctx)
	ob.Traceparent, ob.Tracestate = tc.Traceparent, tc.Tracestate
	start := time.Now()
	changed, err = s.tracker.Observe(ctx, ob)
	s.metrics.since(jsStatus, start)
	if s.tracing {
		span.SetAttributes(attrChanged.Bool(changed))
	}
	endStep(span, err)
	return changed, err
}

// endStep ends span, marking it failed with err's class when err is set.
func endStep(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, "failed")
		span.SetAttributes(semconv.ErrorTypeKey.String(errorClass(err)))
	}
	span.End()
}

// errorClass is what a span says of err: its sentinel's kind, never its
// text (which may quote a server's answer).
func errorClass(err error) string {
	switch {
	case errors.Is(err, errChanged):
		return "conflict"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "jetstream"
}

// attemptSpan records one WeChat Pay attempt that ended now as a client
// span under parent: the hook that reports attempts runs after each one.
func (s *Service) attemptSpan(parent context.Context, endpoint string, a wxpay.Attempt) {
	if !s.tracing {
		return
	}
	end := time.Now()
	host, port := a.Host, 443
	if h, p, err := net.SplitHostPort(a.Host); err == nil {
		host = h
		if n, err := strconv.Atoi(p); err == nil {
			port = n
		}
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(a.Method),
		semconv.ServerAddress(host),
		semconv.ServerPort(port),
		attrEndpoint.String(endpoint),
		attrRetry.Bool(a.Retry),
	}
	if a.Number > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(a.Number-1))
	}
	if a.StatusCode != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(a.StatusCode))
	}
	if a.Retry {
		attrs = append(attrs, attrRetryIn.Int64(a.Delay.Milliseconds()))
	}
	_, span := s.tracer.Start(parent, a.Method+" "+endpoint, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(end.Add(-a.Duration)), trace.WithAttributes(attrs...))
	if a.Err != nil {
		span.SetStatus(codes.Error, "WeChat Pay request failed")
		span.SetAttributes(semconv.ErrorTypeKey.String(attemptErrorType(a)))
	}
	span.End(trace.WithTimestamp(end))
}

// attemptErrorType is the error.type of a failed attempt: the HTTP status,
// or the class of a failure without one.
func attemptErrorType(a wxpay.Attempt) string {
	var sigErr *wxpay.SignatureError
	switch {
	case errors.As(a.Err, &sigErr):
		return "signature_" + string(sigErr.Reason)
	case a.StatusCode != 0:
		return strconv.Itoa(a.StatusCode)
	case a.Sent:
		return "no_answer"
	}
	return "not_sent"
}
