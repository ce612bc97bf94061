package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

// outcomeRetry is the verdict of an execution whose transient failures
// outlasted this delivery's retry budget: deliver again later.
const outcomeRetry schemas.Outcome = "retry"

// execution is what running one command in one delivery produced. Handlers
// fill it in and never acknowledge anything: decide and settle do.
type execution struct {
	outcome      schemas.Outcome // Succeeded, Failed, Rejected, outcomeRetry; "" for an unproven reconciliation
	result       json.RawMessage // succeeded: the response body (JSON null for 204)
	reconciled   bool
	err          *publisher.ErrorData
	attempts     int  // HTTP requests made in this delivery
	ambiguous    bool // a POST may have taken effect although it failed (wxpay.Result.Ambiguous)
	observations []publisher.Observation
	// tracks are tracked resources the answers showed without a state.
	tracks []trackStart
	// jetstream is a JetStream failure of a command that works on
	// JetStream only (untrack): nothing is decided, the delivery is handed
	// back.
	jetstream error
}

// trackStart is an answer that shows a tracked kind of resource without
// its state: a submission or a confirmation that went through (Changed: the
// cadence restarts), or a track command's query answered NOT_FOUND.
type trackStart struct {
	Resource schemas.Resource `json:"resource"`
	Key      string           `json:"key"`
	SubMchid string           `json:"sub_mchid,omitempty"`
	Changed  bool             `json:"changed,omitempty"`
	NotFound bool             `json:"not_found,omitempty"`
}

func (ex *execution) add(res *wxpay.Result) {
	if res != nil {
		ex.attempts += res.Attempts
		ex.ambiguous = ex.ambiguous || res.Ambiguous
	}
}

// run validates the command of d and executes it by its entry in the
// command table.
func (s *Service) run(ctx context.Context, d *delivery, rec *record) execution {
	if ex, invalid := d.rejection(); invalid {
		return ex
	}
	d.log.Debug("executing", "command", d.cmd)
	return d.def.run(s, ctx, d, rec, d.cmd)
}

// reconcile sends nothing but the query that can prove that the request of
// d's command, whose last allowed delivery ended without a decision (its
// instance died, or its shutdown timed out), took effect: succeeded,
// reconciled, when it does. Any other answer leaves the outcome empty (the
// command is then dead-lettered), the execution counting the query's
// requests only.
func (s *Service) reconcile(ctx context.Context, d *delivery) execution {
	if _, invalid := d.rejection(); invalid {
		return execution{}
	}
	if r := d.def.reconcile; r != nil {
		return r(s, ctx, d, d.cmd)
	}
	return execution{}
}

func rejected(msg string, vs ...schemas.Violation) execution {
	return execution{outcome: schemas.Rejected, err: &publisher.ErrorData{Code: schemas.CodeInvalidCommand, Message: msg, Violations: vs}}
}

// call returns the options of one WeChat Pay call of a command: its
// attempts are counted and logged, it waits out its retry backoffs without
// holding a worker's place, and its requests wait at d's send gate, if any.
func (s *Service) call(d *delivery, endpoint string) []wxpay.CallOption {
	parent := context.Background()
	if s.tracing {
		parent = trace.ContextWithSpan(parent, d.span)
	}
	return []wxpay.CallOption{wxpay.WithRetryWait(d.slot.waitOut), wxpay.WithSendGate(d.gate), s.countAttempts(parent, d.log, endpoint)}
}

// countAttempts counts every attempt of a call to endpoint in metrics,
// traces it as a span under parent's and logs the retries (every attempt at
// debug level) to log.
func (s *Service) countAttempts(parent context.Context, log *slog.Logger, endpoint string) wxpay.CallOption {
	return wxpay.WithAttemptHook(func(a wxpay.Attempt) {
		s.attemptSpan(parent, endpoint, a)
		s.metrics.Requests.WithLabelValues(endpoint, statusLabel(a.StatusCode)).Inc()
		s.metrics.RequestDuration.WithLabelValues(endpoint).Observe(a.Duration.Seconds())
		if a.Retry {
			s.metrics.Retries.WithLabelValues(endpoint).Inc()
		}
		var sigErr *wxpay.SignatureError
		if errors.As(a.Err, &sigErr) {
			s.metrics.SignatureFailures.WithLabelValues(string(sigErr.Reason)).Inc()
		}
		if !a.Retry && !log.Enabled(context.Background(), slog.LevelDebug) {
			return // nothing to log: spare building the record
		}
		attrs := []any{"endpoint", endpoint, "attempt", a.Number, "host", a.Host, "status", a.StatusCode, "duration", a.Duration}
		if a.Err != nil {
			attrs = append(attrs, "err", a.Err.Error())
		}
		if a.Retry {
			attrs = append(attrs, "retry_in", a.Delay)
			log.Info("WeChat Pay request failed; retrying", attrs...)
			return
		}
		log.Debug("WeChat Pay request", attrs...)
	})
}

// verdict turns a call's error into an execution: retry for what
// wxpay.Retryable says may succeed when repeated (5xx, 429, 202, no answer)
// and for a call cut short by shutdown, failed for everything else.
func verdict(ctx context.Context, res *wxpay.Result, err error) execution {
	var ex execution
	ex.add(res)
	status := 0
	if res != nil {
		status = res.StatusCode
	}
	var apiErr *wxpay.APIError
	var sigErr *wxpay.SignatureError
	switch {
	case errors.As(err, &sigErr):
		ex.err = &publisher.ErrorData{Code: schemas.CodeResponseSignatureInvalid, Message: sigErr.Error(), HTTPStatus: status}
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		// Checked before the API error: a call cancelled after a 5xx
		// answer carries that answer, and must not fail the command.
		ex.outcome = outcomeRetry
		ex.err = &publisher.ErrorData{Code: schemas.CodeTransportError, Message: "cancelled by shutdown", HTTPStatus: status}
		return ex
	case errors.As(err, &apiErr):
		ex.err = &publisher.ErrorData{Code: apiErr.Code, Message: apiErr.Message, HTTPStatus: apiErr.StatusCode, Detail: apiErr.Detail, RequestID: apiErr.RequestID}
	case status >= 200 && status < 300 && !errors.Is(err, wxpay.ErrResponseTooLarge):
		// A verified answer that does not decode into the documented
		// shape: WeChat Pay did what was asked, so the command succeeded
		// and the body is the result; only a body that is not JSON at all
		// cannot be reported.
		if json.Valid(res.Body) {
			ex.outcome, ex.result = schemas.Succeeded, json.RawMessage(res.Body)
			return ex
		}
		ex.err = &publisher.ErrorData{Code: schemas.CodeTransportError, Message: "WeChat Pay answered " + strconv.Itoa(status) + " with a body that is not JSON", HTTPStatus: status}
	case errors.Is(err, wxpay.ErrInvalidArgument):
		// Validation runs before any request, so this is a bug; failing
		// loudly beats retrying forever.
		ex.err = &publisher.ErrorData{Code: schemas.CodeInvalidCommand, Message: err.Error(), HTTPStatus: status}
	default: // no usable answer: lost, cut short, too large
		ex.err = &publisher.ErrorData{Code: schemas.CodeTransportError, Message: err.Error(), HTTPStatus: status}
	}
	ex.outcome = schemas.Failed
	if wxpay.Retryable(err) {
		ex.outcome = outcomeRetry
	}
	return ex
}

func succeeded(res *wxpay.Result) execution {
	ex := execution{outcome: schemas.Succeeded, result: json.RawMessage("null")}
	ex.add(res)
	if res != nil && len(res.Body) > 0 {
		ex.result = json.RawMessage(res.Body)
	}
	return ex
}

// provenBy makes ex a success that the query answered by qres proved:
// succeeded, reconciled, with the query's answer as the result.
func (s *Service) provenBy(d *delivery, ex execution, qres *wxpay.Result) execution {
	s.reconciled(d, "took_effect")
	ex.outcome, ex.err, ex.reconciled = schemas.Succeeded, nil, true
	ex.result = json.RawMessage(qres.Body)
	return ex
}

func (s *Service) reconciled(d *delivery, verdict string) {
	s.metrics.Reconciliations.WithLabelValues(metricType(d.ctype), verdict).Inc()
	d.log.Info("reconciled an ambiguous outcome by query", "verdict", verdict)
}

// observe adds a status observation unless its key could not be a subject
// token (WeChat Pay's ids are alphanumeric; anything else is not trusted
// into a subject).
func (ex *execution) observe(d *delivery, ob publisher.Observation) {
	if !schemas.ValidKey(ob.Key) {
		d.log.Warn("status not tracked: the resource key is not an identifier", "resource", ob.Resource)
		return
	}
	ex.observations = append(ex.observations, ob)
}

// track adds a tracked resource shown without its state, under the same
// condition.
func (ex *execution) track(t trackStart) {
	if schemas.ValidKey(t.Key) {
		ex.tracks = append(ex.tracks, t)
	}
}

// parseTime reads an RFC 3339 time from a response; zero when absent or
// malformed (the observation then carries no ordering).
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func logOutcome(d *delivery, ex execution, attempts int) {
	attrs := []any{"outcome", ex.outcome, "attempts", attempts}
	if ex.reconciled {
		attrs = append(attrs, "reconciled", true)
	}
	if ex.err != nil {
		attrs = append(attrs, "error_code", ex.err.Code, "error", ex.err.Message)
	}
	switch ex.outcome {
	case schemas.Succeeded:
		d.log.Info("command succeeded", attrs...)
	default:
		d.log.Warn("command "+string(ex.outcome), attrs...)
	}
}
