// Package publisher builds and publishes wxcancel's events: CloudEvents 1.0
// in structured JSON mode on JetStream (docs/interface.md, Events). It makes the outcome
// event of a command ([Publisher.NewOutcome], [Publisher.Publish]) and tracks
// the states of WeChat Pay resources across all instances, publishing a
// status-change event exactly once per change ([StatusTracker]).
//
// Every event is published with the header Content-Type:
// application/cloudevents+json and with Nats-Msg-Id set to the event's id,
// and every publish waits for JetStream's acknowledgement: when Publish or
// Observe returns nil, the event is stored. Event ids are deterministic, so a
// republish of the same event inside the stream's duplicate window is
// dropped by JetStream.
package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/schemas"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrInvalidConfig is matched by every problem [Config.Validate] reports.
	ErrInvalidConfig = errors.New("publisher: invalid configuration")
	// ErrInvalidEvent is matched by the error of a builder or of Observe
	// given data that cannot make a valid event (an unknown outcome, an
	// error on a succeeded outcome, a malformed traceparent, JSON that does
	// not parse, …). Retrying with the same input fails the same way.
	ErrInvalidEvent = errors.New("publisher: invalid event")
	// ErrPublish is matched by the error of a publish that JetStream did not
	// acknowledge (no stream captures the subject, timeout, connection
	// closed, …); the error also wraps the cause. The event may or may not
	// be stored: publish the same message again, its id makes a second copy
	// a duplicate.
	ErrPublish = errors.New("publisher: publishing an event failed")
)

// TimeFormat is the layout of the time attribute and of observed_at: RFC
// 3339 in UTC with nanoseconds, always written with nine digits.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// typeNamespace is the first part of every event type. It is fixed: the
// subject prefix is a deployment choice, the event type is part of the
// contract.
const typeNamespace = "wxpay"

// headerContentType is the NATS header carrying the event's content type.
const headerContentType = "Content-Type"

// DefaultPrefix is the subject prefix used when [Config.Prefix] is empty.
const DefaultPrefix = "wxpay"

// Config configures a [Publisher].
type Config struct {
	// Prefix is the first token of every subject (WXCANCEL_SUBJECT_PREFIX):
	// 1-32 characters of [A-Za-z0-9_-]. Default [DefaultPrefix].
	Prefix string
	// MchID is the platform's merchant id (WXPAY_MCHID), up to 32 digits;
	// events carry source "wxcancel/<MchID>". Required.
	MchID string
	// Clock is the time source of the events' time; default time.Now.
	Clock func() time.Time
}

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// Validate reports every problem of c (after defaults) at once; each matches
// [ErrInvalidConfig].
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if !prefixPattern.MatchString(c.Prefix) {
		errs = append(errs, fmt.Errorf("%w: Prefix %q must be 1-32 characters of [A-Za-z0-9_-]", ErrInvalidConfig, c.Prefix))
	}
	switch {
	case c.MchID == "":
		errs = append(errs, fmt.Errorf("%w: MchID is required", ErrInvalidConfig))
	case len(c.MchID) > 32 || !allDigits(c.MchID):
		errs = append(errs, fmt.Errorf("%w: MchID %q must be up to 32 digits", ErrInvalidConfig, c.MchID))
	}
	return errors.Join(errs...)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Publisher builds wxcancel's events and publishes them to JetStream. It is
// safe for concurrent use.
type Publisher struct {
	js     jetstream.JetStream
	prefix string
	source string
	clock  func() time.Time
}

// New returns a Publisher publishing through js. It fails, with every
// problem at once, when js is nil or cfg does not validate.
func New(js jetstream.JetStream, cfg Config) (*Publisher, error) {
	err := cfg.Validate()
	if js == nil {
		err = errors.Join(err, fmt.Errorf("%w: a JetStream context is required", ErrInvalidConfig))
	}
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Publisher{js: js, prefix: cfg.Prefix, source: "wxcancel/" + cfg.MchID, clock: cfg.Clock}, nil
}

// Event is a CloudEvents 1.0 event in structured JSON mode, as wxcancel
// publishes it. Decode a received message's data into it to read an event.
type Event struct {
	// SpecVersion is always "1.0".
	SpecVersion string `json:"specversion"`
	// ID is unique per event and deterministic: "outcome/<command id>" or
	// "status/<resource>/<encoded key>/<revision>". It is also the message's
	// Nats-Msg-Id.
	ID string `json:"id"`
	// Source is "wxcancel/<merchant id>".
	Source string `json:"source"`
	// Type is "wxpay.<command type>.<outcome>" or "wxpay.status.changed".
	Type string `json:"type"`
	// Subject is the command id (outcome events) or "<resource>/<key>"
	// (status events).
	Subject string `json:"subject"`
	// Time is when the event was made, in [TimeFormat].
	Time string `json:"time"`
	// DataContentType is always "application/json".
	DataContentType string `json:"datacontenttype"`
	// Traceparent is the W3C traceparent of the command that led to the
	// event (CloudEvents distributed-tracing extension); empty when the
	// command had none.
	Traceparent string `json:"traceparent,omitempty"`
	// Data is the event's payload ([OutcomeData] or [StatusData] shaped).
	Data json.RawMessage `json:"data"`
}

// Outcome returns the outcome an outcome event announces (the last token of
// its type), or "" for a status-change or tracking-ended event.
func (e Event) Outcome() schemas.Outcome {
	if e.Type == schemas.EventTypeStatusChanged || e.Type == schemas.EventTypeTrackingEnded {
		return ""
	}
	return schemas.Outcome(e.Type[strings.LastIndexByte(e.Type, '.')+1:])
}

// TraceContext is the W3C trace context an event carries: its traceparent
// header (also the event's traceparent attribute) and tracestate header
// (https://www.w3.org/TR/trace-context/). The zero value carries none; a
// Tracestate needs a Traceparent.
type TraceContext struct {
	Traceparent string
	Tracestate  string
}

// Message is a finished event, ready to publish and to republish: store it
// (it encodes to JSON and back byte for byte, Data being compact JSON) and
// pass it to [Publisher.Publish] again to get exactly the same message, which
// JetStream drops as a duplicate inside its duplicate window.
type Message struct {
	// Subject is the NATS subject to publish on.
	Subject string `json:"subject"`
	// ID is the event id, sent as Nats-Msg-Id.
	ID string `json:"id"`
	// Data is the whole CloudEvent, JSON.
	Data json.RawMessage `json:"data"`
	// Traceparent, when not empty, is sent as the traceparent header.
	Traceparent string `json:"traceparent,omitempty"`
	// Tracestate, when not empty, is sent as the tracestate header (W3C
	// trace context, https://www.w3.org/TR/trace-context/#tracestate-header);
	// it goes with a Traceparent.
	Tracestate string `json:"tracestate,omitempty"`
}

// Publish publishes m with the headers Content-Type
// (application/cloudevents+json), Nats-Msg-Id (m.ID), traceparent and
// tracestate (when m.Traceparent and m.Tracestate are set) and waits for JetStream's acknowledgement. A message
// JetStream already holds (same id, inside the stream's duplicate window)
// is acknowledged as a duplicate and not stored again; that is a success. It
// fails with [ErrInvalidEvent] for an incomplete message and with
// [ErrPublish] when the message is not acknowledged.
func (p *Publisher) Publish(ctx context.Context, m Message) error {
	_, err := p.publish(ctx, m)
	return err
}

func (p *Publisher) publish(ctx context.Context, m Message) (*jetstream.PubAck, error) {
	switch {
	case m.Subject == "" || m.ID == "" || len(m.Data) == 0:
		return nil, fmt.Errorf("%w: a message needs a subject, an id and data", ErrInvalidEvent)
	case !schemas.HeaderSafe(m.ID):
		return nil, fmt.Errorf("%w: event id %q cannot be sent as a header", ErrInvalidEvent, m.ID)
	}
	if err := (TraceContext{m.Traceparent, m.Tracestate}).check(); err != nil {
		return nil, err
	}
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Data
	msg.Header.Set(headerContentType, schemas.EventContentType)
	if m.Traceparent != "" {
		msg.Header.Set(schemas.HeaderTraceparent, m.Traceparent)
	}
	if m.Tracestate != "" {
		msg.Header.Set(schemas.HeaderTracestate, m.Tracestate)
	}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.ID))
	if err != nil {
		return nil, fmt.Errorf("%w: %s (id %s): %w", ErrPublish, m.Subject, m.ID, err)
	}
	return ack, nil
}

// message completes ev with the attributes every event shares and encodes
// it, with the tracestate header when not empty (tracestate, unlike
// traceparent, is not an attribute of the events' schema).
func (p *Publisher) message(subject string, ev Event, tc TraceContext) (Message, error) {
	ev.Traceparent = tc.Traceparent
	ev.SpecVersion = schemas.SpecVersion
	ev.Source = p.source
	ev.DataContentType = schemas.DataContentType
	if err := tc.check(); err != nil {
		return Message{}, err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return Message{}, fmt.Errorf("%w: encoding event %s: %w", ErrInvalidEvent, ev.ID, err)
	}
	return Message{Subject: subject, ID: ev.ID, Data: b, Traceparent: tc.Traceparent, Tracestate: tc.Tracestate}, nil
}

// now is the event time: the clock in UTC, in TimeFormat.
func (p *Publisher) now() string { return p.clock().UTC().Format(TimeFormat) }

// Stored reports whether events, the events stream, holds m, an event first
// published at or after since. Nothing indexes a stream by message id past
// its duplicate window, so it reads the stream's messages on m's subject
// from since on, in order, looking for m's id, to the end of the stream or
// for maxScan messages: it answers false when it did not find it, and
// ErrLookupBounded when it stopped at maxScan (at a high rate of events on
// the subject). Each request waits for its answer at most requestTimeout
// within ctx. It needs a server that reads messages by start time
// (nats-server 2.11 or later), and only the right to get messages from the
// stream.
func (p *Publisher) Stored(ctx context.Context, events jetstream.Stream, m Message, since time.Time) (bool, error) {
	seq, id, found, err := p.firstSince(ctx, events.CachedInfo().Config.Name, m.Subject, since)
	switch {
	case err != nil || !found:
		return false, err
	case id == m.ID:
		return true, nil
	}
	for range maxScan {
		seq++
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		sm, err := events.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(m.Subject))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("publisher: reading the events stream: %w", err)
		}
		if sm.Header.Get(jetstream.MsgIDHeader) == m.ID {
			return true, nil
		}
		seq = sm.Sequence
	}
	return false, ErrLookupBounded
}

// ErrLookupBounded is returned by [Publisher.Stored] when it read maxScan
// messages without reaching the end of the stream.
var ErrLookupBounded = errors.New("publisher: too many events on the subject to look one up")

// The bounds of Stored's reading.
const (
	maxScan        = 10_000
	requestTimeout = 5 * time.Second
)

// firstSince returns the sequence and Nats-Msg-Id of the first message on
// subject stored at or after since in stream; found is false when there is
// none.
func (p *Publisher) firstSince(ctx context.Context, stream, subject string, since time.Time) (seq uint64, id string, found bool, err error) {
	req, err := json.Marshal(struct {
		StartTime time.Time `json:"start_time"`
		NextFor   string    `json:"next_by_subj"`
	}{since.UTC(), subject})
	if err != nil {
		return 0, "", false, err
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	msg, err := p.js.Conn().RequestWithContext(rctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return 0, "", false, fmt.Errorf("publisher: reading the events stream: %w", err)
	}
	var resp struct {
		Message *struct {
			Seq     uint64 `json:"seq"`
			Headers []byte `json:"hdrs"`
		} `json:"message"`
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, "", false, fmt.Errorf("publisher: reading the events stream: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return 0, "", false, nil
	case resp.Error != nil:
		return 0, "", false, fmt.Errorf("publisher: reading the events stream: %s (%d)", resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return 0, "", false, errors.New("publisher: reading the events stream: an answer without a message")
	}
	if len(resp.Message.Headers) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Headers)
		if err != nil {
			return 0, "", false, fmt.Errorf("publisher: reading the events stream: %w", err)
		}
		id = h.Get(jetstream.MsgIDHeader)
	}
	return resp.Message.Seq, id, true, nil
}

// check fails with [ErrInvalidEvent] unless tc is empty or a valid W3C
// traceparent, with a valid tracestate or none.
func (tc TraceContext) check() error {
	switch {
	case tc.Traceparent != "" && !schemas.ValidTraceparent(tc.Traceparent):
		return fmt.Errorf("%w: traceparent %q is not a W3C traceparent", ErrInvalidEvent, tc.Traceparent)
	case tc.Tracestate != "" && (tc.Traceparent == "" || !schemas.ValidTracestate(tc.Tracestate)):
		return fmt.Errorf("%w: tracestate %q is not a W3C tracestate of a traceparent", ErrInvalidEvent, tc.Tracestate)
	}
	return nil
}
