package consumer

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

// Metrics are the service's Prometheus metrics. Label values are bounded:
// command types outside the known set are reported as "unknown".
type Metrics struct {
	// Commands counts finished commands by type and outcome.
	Commands *prometheus.CounterVec
	// Requests counts WeChat Pay HTTP requests by endpoint and status
	// ("transport" when no HTTP answer came).
	Requests *prometheus.CounterVec
	// RequestDuration observes WeChat Pay request latency by endpoint.
	RequestDuration *prometheus.HistogramVec
	// Retries counts requests that were followed by a retry, by endpoint.
	Retries *prometheus.CounterVec
	// SignatureFailures counts refused response signatures by reason.
	SignatureFailures *prometheus.CounterVec
	// InFlight is the number of commands being worked on.
	InFlight prometheus.Gauge
	// Redeliveries counts commands handed back for a later delivery.
	Redeliveries *prometheus.CounterVec
	// DeadLetters counts commands copied to the dead-letter stream.
	DeadLetters *prometheus.CounterVec
	// Reconciliations counts ambiguous outcomes settled by a query, by
	// command type and verdict.
	Reconciliations *prometheus.CounterVec
	// JetStreamDuration observes how long each JetStream step of a command
	// takes: outcome_read (reading the outcome record before executing;
	// read-only commands sign their request meanwhile),
	// status (recording what a WeChat Pay answer revealed, status event
	// included), outcome_write (recording the outcome) and event_publish
	// (publishing the outcome event). Their sum is most of what a command
	// costs beyond WeChat Pay's own latency.
	JetStreamDuration *prometheus.HistogramVec
	// JetStreamFailures counts JetStream operations that failed, by step
	// (those of JetStreamDuration, dead_letter for the copy to the
	// dead-letter stream, settle for the acknowledgement, tracking for the
	// tracking records): a command is handed back and its redelivery starts
	// over from the record; a poll is made again.
	JetStreamFailures *prometheus.CounterVec
	// Duplicates counts deliveries answered from the outcome record without
	// executing the command: a re-sent command id, or a redelivery after
	// the outcome was recorded.
	Duplicates *prometheus.CounterVec
	// ClaimWaits counts deliveries that found another message with the
	// same command id being executed (its claim in the record) and waited
	// for it, by type: the id was sent again past the commands stream's
	// duplicate window.
	ClaimWaits *prometheus.CounterVec
	// EventLookups counts recorded outcome events looked up in the events
	// stream before they are published again, by result (found, not_found,
	// failed): done only for a redelivery that comes past the duplicate
	// window, after an outage.
	EventLookups *prometheus.CounterVec
	// TrackedResources is the number of resources tracked now, by resource
	// (all instances together; every instance reports the same from its
	// copy of the tracking bucket).
	TrackedResources *prometheus.GaugeVec
	// TrackPolls counts the tracking polls this instance made, by resource
	// and result: changed, unchanged, not_found, failed.
	TrackPolls *prometheus.CounterVec
	// TrackEnded counts the trackings this instance ended, by reason.
	TrackEnded *prometheus.CounterVec

	// service is the Service these metrics are of, for the values read
	// when scraped (see serviceCollector); nil until New.
	service atomic.Pointer[Service]
}

// JetStream steps observed by Metrics.JetStreamDuration.
const (
	jsOutcomeRead  = "outcome_read"
	jsStatus       = "status"
	jsOutcomeWrite = "outcome_write"
	jsEventPublish = "event_publish"
	jsDeadLetter   = "dead_letter"
	jsSettle       = "settle"
	jsTracking     = "tracking"
)

// NewMetrics creates the metrics and registers them with reg (none when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_commands_total", Help: "Commands finished, by type and outcome.",
		}, []string{"type", "outcome"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_wxpay_requests_total", Help: "WeChat Pay HTTP requests, by endpoint and HTTP status (transport: no answer).",
		}, []string{"endpoint", "status"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wxcancel_wxpay_request_duration_seconds", Help: "WeChat Pay HTTP request latency, by endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"endpoint"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_wxpay_retries_total", Help: "WeChat Pay requests retried in process, by endpoint.",
		}, []string{"endpoint"}),
		SignatureFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_wxpay_signature_failures_total", Help: "WeChat Pay responses whose signature was refused, by reason (probe: WECHATPAY/SIGNTEST/).",
		}, []string{"reason"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wxcancel_commands_in_flight", Help: "Commands being worked on by this instance.",
		}),
		Redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_redeliveries_total", Help: "Commands handed back to JetStream for a later delivery, by type.",
		}, []string{"type"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_dead_letters_total", Help: "Commands copied to the dead-letter stream, by type.",
		}, []string{"type"}),
		Reconciliations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_reconciliations_total", Help: "Ambiguous outcomes settled by querying WeChat Pay, by type and verdict.",
		}, []string{"type", "verdict"}),
		JetStreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxcancel_jetstream_duration_seconds",
			Help:    "How long each JetStream step of a command takes (outcome_read, outcome_write, status, event_publish).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"step"}),
		JetStreamFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_jetstream_failures_total", Help: "JetStream operations of a command that failed, by step; the command is handed back.",
		}, []string{"step"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_duplicates_total", Help: "Deliveries answered from the outcome record without executing the command, by type.",
		}, []string{"type"}),
		ClaimWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_claim_waits_total", Help: "Deliveries that waited for another message with the same command id to be executed, by type.",
		}, []string{"type"}),
		EventLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_event_lookups_total", Help: "Recorded outcome events looked up in the events stream before publishing them again, by result.",
		}, []string{"result"}),
		TrackedResources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxcancel_tracked_resources", Help: "Resources tracked now, by resource (all instances together).",
		}, []string{"resource"}),
		TrackPolls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_track_polls_total", Help: "Tracking polls made, by resource and result (changed, unchanged, not_found, failed).",
		}, []string{"resource", "result"}),
		TrackEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxcancel_track_ended_total", Help: "Trackings ended, by reason (final, not_found, untracked, expired).",
		}, []string{"reason"}),
	}
	m.initLabels()
	if reg != nil {
		reg.MustRegister(m.Commands, m.Requests, m.RequestDuration, m.Retries, m.SignatureFailures,
			m.InFlight, m.Redeliveries, m.DeadLetters, m.Reconciliations, m.JetStreamDuration,
			m.JetStreamFailures, m.Duplicates, m.ClaimWaits, m.EventLookups, m.TrackedResources, m.TrackPolls, m.TrackEnded,
			serviceCollector{m})
	}
	return m
}

// verdicts are the verdicts of a reconciliation (Service.reconciled).
var verdicts = []string{"took_effect", "not_taken", "refused", "unproven", "unknown"}

// initLabels creates the series of every label value known in advance, at
// zero, so that each family is in /metrics from the start and a rate over
// a series' first increase is not lost (WeChat Pay's answers: status 200
// only; the others appear when they first happen).
func (m *Metrics) initLabels() {
	for _, t := range schemas.Types() {
		for _, o := range []schemas.Outcome{schemas.Succeeded, schemas.Failed, schemas.Rejected} {
			m.Commands.WithLabelValues(string(t), string(o))
		}
		for _, v := range []*prometheus.CounterVec{m.Redeliveries, m.DeadLetters, m.Duplicates, m.ClaimWaits} {
			v.WithLabelValues(string(t))
		}
		if e := commands[t].endpoint; e != "" {
			m.Requests.WithLabelValues(e, "200")
			m.RequestDuration.WithLabelValues(e)
			m.Retries.WithLabelValues(e)
		}
		if commands[t].reconcile != nil {
			for _, v := range verdicts {
				m.Reconciliations.WithLabelValues(string(t), v)
			}
		}
	}
	for _, r := range schemas.TrackedResources() {
		m.TrackedResources.WithLabelValues(string(r))
		for _, res := range []string{"changed", "unchanged", "not_found", "failed"} {
			m.TrackPolls.WithLabelValues(string(r), res)
		}
	}
	for _, r := range []wxpay.SignatureReason{wxpay.SignatureMissing, wxpay.SignatureMalformed, wxpay.SignatureUnknownSerial,
		wxpay.SignatureExpired, wxpay.SignatureProbe, wxpay.SignatureMismatch, wxpay.SignatureCertificateExpired} {
		m.SignatureFailures.WithLabelValues(string(r))
	}
	for _, step := range []string{jsOutcomeRead, jsStatus, jsOutcomeWrite, jsEventPublish} {
		m.JetStreamDuration.WithLabelValues(step)
	}
	for _, step := range []string{jsOutcomeRead, jsStatus, jsOutcomeWrite, jsEventPublish, jsDeadLetter, jsSettle, jsTracking} {
		m.JetStreamFailures.WithLabelValues(step)
	}
	for _, r := range []string{"found", "not_found", "failed"} {
		m.EventLookups.WithLabelValues(r)
	}
	for _, r := range schemas.EndReasons() {
		m.TrackEnded.WithLabelValues(string(r))
	}
}

// Metrics read from the service when scraped.
var (
	readyDesc = prometheus.NewDesc("wxcancel_ready",
		"1 when this instance is consuming commands and connected to NATS (its /readyz answer), else 0.", nil, nil)
	pendingDesc = prometheus.NewDesc("wxcancel_consumer_pending_messages",
		"Commands stored in the commands stream and not yet delivered: the shared durable consumer's lag (every instance reports the same).", nil, nil)
	ackPendingDesc = prometheus.NewDesc("wxcancel_consumer_ack_pending_messages",
		"Commands delivered by the shared durable consumer and not yet acknowledged, by any instance (every instance reports the same).", nil, nil)
)

// consumerInfoTimeout bounds the consumer info request of a scrape.
const consumerInfoTimeout = 2 * time.Second

// serviceCollector reports the service's readiness and the durable
// consumer's counts, read when scraped: the counts cost one request to
// JetStream per scrape, and are left out when it does not answer within
// consumerInfoTimeout (the instance is then not ready either).
type serviceCollector struct{ m *Metrics }

func (c serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- pendingDesc
	ch <- ackPendingDesc
}

func (c serviceCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.service.Load()
	ready := 0.0
	if s != nil && s.Ready() && s.js.Conn().IsConnected() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), consumerInfoTimeout)
	defer cancel()
	info, err := s.consumer.Info(ctx)
	if err != nil {
		s.log.Debug("metrics: reading the consumer's counts failed", "err", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(info.NumPending))
	ch <- prometheus.MustNewConstMetric(ackPendingDesc, prometheus.GaugeValue, float64(info.NumAckPending))
}

// observe observes d under step.
func (m *Metrics) observe(step string, d time.Duration) {
	m.JetStreamDuration.WithLabelValues(step).Observe(d.Seconds())
}

// since observes the time since start under step.
func (m *Metrics) since(step string, start time.Time) {
	m.JetStreamDuration.WithLabelValues(step).Observe(time.Since(start).Seconds())
}

// metricType bounds the type label to the known command types.
func metricType(t string) string {
	if schemas.Type(t).Known() {
		return t
	}
	return "unknown"
}

func statusLabel(code int) string {
	if code == 0 {
		return "transport"
	}
	return strconv.Itoa(code)
}
