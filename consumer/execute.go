package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

// outcomeRetry is the verdict of an execution whose transient failures
// outlasted this delivery's retry budget: deliver again later.
const outcomeRetry schemas.Outcome = "retry"

// execution is what running one command in one delivery produced. Handlers
// fill it in and never acknowledge anything: process and settle decide.
type execution struct {
	outcome      schemas.Outcome
	result       json.RawMessage // succeeded: the response body (JSON null for 204)
	reconciled   bool
	err          *publisher.ErrorData
	attempts     int  // HTTP requests made in this delivery
	ambiguous    bool // a POST may have taken effect although it failed (wxpay.Result.Ambiguous)
	observations []publisher.Observation
}

func (ex *execution) add(res *wxpay.Result) {
	if res != nil {
		ex.attempts += res.Attempts
		ex.ambiguous = ex.ambiguous || res.Ambiguous
	}
}

// readOnly reports whether commands of type t only read from WeChat Pay and
// their handlers do not look at the outcome record: they can be parsed and
// their first request signed while the record is read (see
// Service.process), the request waiting at its send gate for the record.
func readOnly(t string) bool {
	switch schemas.Type(t) {
	case schemas.TypeValidateCancel, schemas.TypeQueryCancelWithdraw, schemas.TypeQueryCancelApplication:
		return true
	}
	return false
}

// execute validates the command of a delivery and runs it against WeChat Pay.
func (s *Service) execute(ctx context.Context, d *delivery, rec *record) execution {
	if d.idInvalid {
		return rejected("the Nats-Msg-Id header is not a valid command id",
			schemas.Violation{Field: "", Rule: "command_id", Message: "Nats-Msg-Id must be " + schemas.CommandIDRule})
	}
	cmd, err := schemas.Parse(d.ctype, d.msg.Data())
	if err != nil {
		var inv *schemas.InvalidError
		if errors.As(err, &inv) {
			return rejected(inv.Error(), inv.Violations...)
		}
		return rejected(err.Error(), schemas.Violation{Field: "", Rule: "invalid", Message: err.Error()})
	}
	d.log.Debug("executing", "command", cmd)
	switch c := cmd.(type) {
	case *schemas.ValidateCancel:
		return s.validateCancel(ctx, d, c)
	case *schemas.QueryCancelWithdraw:
		return s.queryCancelWithdraw(ctx, d, c)
	case *schemas.ConfirmCancel:
		return s.confirmCancel(ctx, d, rec, c)
	case *schemas.QueryCancelApplication:
		return s.queryCancelApplication(ctx, d, c)
	case *schemas.CancelApplyment:
		return s.cancelApplyment(ctx, d, rec, c)
	case *schemas.ApplyCancelWithdraw:
		return s.applyCancelWithdraw(ctx, d, rec, c)
	}
	return rejected("unsupported command type", schemas.Violation{Field: "", Rule: "unknown_type", Message: fmt.Sprintf("command type %q is not supported", d.ctype)})
}

func rejected(msg string, vs ...schemas.Violation) execution {
	return execution{outcome: schemas.Rejected, err: &publisher.ErrorData{Code: schemas.CodeInvalidCommand, Message: msg, Violations: vs}}
}

// call returns the options of one WeChat Pay call: its attempts are counted in
// metrics and logged, and it waits out its retry backoffs without holding a
// worker slot (waitOut).
func (s *Service) call(d *delivery, endpoint string) []wxpay.CallOption {
	return []wxpay.CallOption{wxpay.WithRetryWait(s.waitOut), wxpay.WithSendGate(d.gate), wxpay.WithAttemptHook(func(a wxpay.Attempt) {
		s.metrics.Requests.WithLabelValues(endpoint, statusLabel(a.StatusCode)).Inc()
		s.metrics.RequestDuration.WithLabelValues(endpoint).Observe(a.Duration.Seconds())
		if a.Retry {
			s.metrics.Retries.WithLabelValues(endpoint).Inc()
		}
		var sigErr *wxpay.SignatureError
		if errors.As(a.Err, &sigErr) {
			s.metrics.SignatureFailures.WithLabelValues(string(sigErr.Reason)).Inc()
		}
		if !a.Retry && !d.log.Enabled(context.Background(), slog.LevelDebug) {
			return // nothing to log: spare building the record
		}
		attrs := []any{"endpoint", endpoint, "attempt", a.Number, "host", a.Host, "status", a.StatusCode, "duration", a.Duration}
		if a.Err != nil {
			attrs = append(attrs, "err", a.Err.Error())
		}
		if a.Retry {
			attrs = append(attrs, "retry_in", a.Delay)
			d.log.Info("WeChat Pay request failed; retrying", attrs...)
			return
		}
		d.log.Debug("WeChat Pay request", attrs...)
	})}
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

func (s *Service) validateCancel(ctx context.Context, d *delivery, c *schemas.ValidateCancel) execution {
	resp, res, err := s.client.ValidateCancel(ctx, c.SubMchid, s.call(d, string(schemas.TypeValidateCancel))...)
	if err != nil {
		return verdict(ctx, res, err)
	}
	ex := succeeded(res)
	key := resp.SubMchid
	if key == "" {
		key = c.SubMchid
	}
	ex.observe(d, publisher.Observation{Resource: schemas.ResourceMerchant, Key: key, SubMchid: key,
		State: string(resp.MerchantState) + "/" + string(resp.ValidateResult), Snapshot: res.Body})
	return ex
}

func (s *Service) queryCancelWithdraw(ctx context.Context, d *delivery, c *schemas.QueryCancelWithdraw) execution {
	app, res, err := s.queryApplication(ctx, d, c.ApplymentID, c.OutRequestNo)
	if err != nil {
		return verdict(ctx, res, err)
	}
	ex := succeeded(res)
	ex.observeApplication(d, app, res)
	return ex
}

// queryApplication queries a cancel-withdraw application by applyment_id
// when given, else by out_request_no.
func (s *Service) queryApplication(ctx context.Context, d *delivery, applymentID, outRequestNo string) (wxpay.CancelWithdrawApplication, *wxpay.Result, error) {
	opts := s.call(d, string(schemas.TypeQueryCancelWithdraw))
	if applymentID != "" {
		return s.client.QueryCancelWithdrawByApplymentID(ctx, applymentID, opts...)
	}
	return s.client.QueryCancelWithdrawByOutRequestNo(ctx, outRequestNo, opts...)
}

func (ex *execution) observeApplication(d *delivery, app wxpay.CancelWithdrawApplication, res *wxpay.Result) {
	if app.ApplymentID == "" || app.CancelState == "" {
		return
	}
	ex.observe(d, publisher.Observation{Resource: schemas.ResourceCancelWithdraw, Key: app.ApplymentID, SubMchid: app.SubMchid,
		State: string(app.CancelState), ModifiedAt: parseTime(app.ModifyTime), Snapshot: res.Body})
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

func (s *Service) queryCancelApplication(ctx context.Context, d *delivery, c *schemas.QueryCancelApplication) execution {
	app, res, err := s.client.QueryCancelApplication(ctx, c.OutApplyNo, s.call(d, string(schemas.TypeQueryCancelApplication))...)
	if err != nil {
		return verdict(ctx, res, err)
	}
	ex := succeeded(res)
	if app.CancelState != "" {
		key := app.OutApplyNo
		if key == "" {
			key = c.OutApplyNo
		}
		ex.observe(d, publisher.Observation{Resource: schemas.ResourceCancelApplication, Key: key, SubMchid: app.SubMchid,
			State: string(app.CancelState), ModifiedAt: parseTime(app.UpdateTime), Snapshot: res.Body})
	}
	return ex
}

// confirmCancel confirms a cancel-withdraw application. When an earlier
// attempt of the confirmation may have taken effect (its answer was lost, or
// was a server error) and
// WeChat Pay now refuses it as not awaiting confirmation, or the answer is
// still missing when the retries run out, the application is queried: a
// cancel_state past WAITING_MERCHANT_CONFIRM proves the confirmation
// (succeeded, reconciled); REJECTED or REVOKED fail it; still waiting means
// it did not take and is tried again.
func (s *Service) confirmCancel(ctx context.Context, d *delivery, rec *record, c *schemas.ConfirmCancel) execution {
	req := wxpay.ConfirmCancelRequest{
		ApplymentID: c.ApplymentID, OutRequestNo: c.OutRequestNo, SubMchid: c.SubMchid,
		OperatorIdentification: c.OperatorIdentification, ConfirmTime: c.ConfirmTime, CancelContractVersion: c.CancelContractVersion,
	}
	_, res, err := s.client.ConfirmCancel(ctx, req, s.call(d, string(schemas.TypeConfirmCancel))...)
	if err == nil {
		return succeeded(res)
	}
	ex := verdict(ctx, res, err)
	if !(maybeSent(d, rec) || ex.ambiguous) || ctx.Err() != nil {
		return ex
	}
	refusedAsDone := ex.err != nil && (ex.err.Code == wxpay.CodeRuleLimit || ex.err.Code == wxpay.CodeNoAuth)
	if !refusedAsDone && ex.outcome != outcomeRetry {
		return ex
	}
	app, qres, qerr := s.queryApplication(ctx, d, c.ApplymentID, c.OutRequestNo)
	ex.add(qres)
	if qerr != nil {
		s.reconciled(d, "unknown")
		q := verdict(ctx, qres, qerr)
		if q.outcome == outcomeRetry {
			ex.outcome, ex.err = outcomeRetry, q.err
		}
		return ex
	}
	ex.observeApplication(d, app, qres)
	switch {
	case app.CancelState.Confirmed():
		ex = s.provenBy(d, ex, qres)
	case app.CancelState == wxpay.CancelRejected || app.CancelState == wxpay.CancelRevoked:
		s.reconciled(d, "refused")
		ex.outcome = schemas.Failed
		code, status := wxpay.CodeRuleLimit, 403
		if ex.err != nil && ex.err.Code != schemas.CodeTransportError {
			code, status = ex.err.Code, ex.err.HTTPStatus
		}
		ex.err = &publisher.ErrorData{Code: code, HTTPStatus: status, RequestID: qres.RequestID,
			Message: "the application is " + string(app.CancelState) + " and cannot be confirmed"}
	case app.CancelState == wxpay.CancelWaitingMerchantConfirm:
		s.reconciled(d, "not_taken")
		ex.outcome = outcomeRetry
		if ex.err == nil || ex.err.Code != schemas.CodeTransportError {
			ex.err = &publisher.ErrorData{Code: schemas.CodeTransportError, Message: "the confirmation did not take effect; it will be sent again"}
		}
	default:
		s.reconciled(d, "unproven")
	}
	return ex
}

// applyCancelWithdraw submits a cancel-withdraw application. out_request_no
// makes it idempotent at WeChat Pay; when an attempt's answer was lost, the
// application is looked up by out_request_no to learn whether it exists.
func (s *Service) applyCancelWithdraw(ctx context.Context, d *delivery, rec *record, c *schemas.ApplyCancelWithdraw) execution {
	_, res, err := s.client.ApplyCancelWithdraw(ctx, applyRequest(c), s.call(d, string(schemas.TypeApplyCancelWithdraw))...)
	if err == nil {
		return succeeded(res)
	}
	ex := verdict(ctx, res, err)
	if !(maybeSent(d, rec) || ex.ambiguous) || ctx.Err() != nil || ex.outcome == schemas.Succeeded {
		return ex
	}
	app, qres, qerr := s.queryApplication(ctx, d, "", c.OutRequestNo)
	ex.add(qres)
	switch {
	case qerr == nil && !ownApplication(app, c.SubMchid):
		s.reconciled(d, "unproven")
	case qerr == nil:
		ex.observeApplication(d, app, qres)
		ex = s.provenBy(d, ex, qres)
	case wxpay.HasCode(qerr, wxpay.CodeNotFound):
		s.reconciled(d, "not_taken")
	default:
		s.reconciled(d, "unknown")
		if q := verdict(ctx, qres, qerr); q.outcome == outcomeRetry {
			ex.outcome, ex.err = outcomeRetry, q.err
		}
	}
	return ex
}

func applyRequest(c *schemas.ApplyCancelWithdraw) wxpay.ApplyCancelWithdrawRequest {
	req := wxpay.ApplyCancelWithdrawRequest{
		SubMchid: c.SubMchid, OutRequestNo: c.OutRequestNo, Withdraw: wxpay.WithdrawChoice(c.Withdraw),
		AdditionalMaterials: c.AdditionalMaterials, Remark: c.Remark,
	}
	if p := c.PayeeInfo; p != nil {
		req.PayeeInfo = &wxpay.PayeeInfo{AccountType: wxpay.AccountType(p.AccountType)}
		if b := p.BankAccountInfo; b != nil {
			req.PayeeInfo.BankAccountInfo = &wxpay.BankAccountInfo{AccountName: b.AccountName, AccountBank: b.AccountBank,
				BankBranchID: b.BankBranchID, BankBranchName: b.BankBranchName, BankName: b.BankName, AccountNumber: b.AccountNumber}
		}
		if i := p.IdentityInfo; i != nil {
			req.PayeeInfo.IdentityInfo = &wxpay.IdentityInfo{IDDocType: i.IDDocType, IdentificationName: i.IdentificationName, IdentificationNo: i.IdentificationNo}
		}
	}
	for _, m := range c.ProofMedias {
		req.ProofMedias = append(req.ProofMedias, wxpay.ProofMedia{ProofMediaType: m.ProofMediaType, ProofMedia: m.ProofMedia})
	}
	return req
}

// cancelApplyment cancels an apply4subject application (204 on success).
func (s *Service) cancelApplyment(ctx context.Context, d *delivery, rec *record, c *schemas.CancelApplyment) execution {
	res, err := s.client.CancelApplyment(ctx, wxpay.CancelApplymentRequest{BusinessCode: c.BusinessCode, ApplymentID: c.ApplymentID},
		s.call(d, string(schemas.TypeCancelApplyment))...)
	if err != nil {
		ex := verdict(ctx, res, err)
		if (maybeSent(d, rec) || ex.ambiguous) && ex.err != nil && ex.outcome == schemas.Failed {
			// No query endpoint tells whether an applyment was cancelled, so
			// an ambiguous earlier attempt cannot be proven: say so.
			ex.err.Message += " (an earlier attempt may have taken effect: its answer was lost or a server error)"
		}
		return ex
	}
	ex := succeeded(res)
	key := c.BusinessCode
	if key == "" {
		key = strconv.FormatInt(c.ApplymentID, 10)
	}
	ex.observe(d, publisher.Observation{Resource: schemas.ResourceApplyment, Key: key, State: "CANCELED", Snapshot: json.RawMessage("null")})
	return ex
}

// tookEffect queries whether the request of a confirm-cancel or
// apply-cancel-withdraw whose last allowed delivery ended without a
// decision (its instance died, or its shutdown timed out) took effect:
// succeeded, reconciled, when the query proves it. Nothing is sent but the
// query; any other answer, or another command type, leaves the command to
// be dead-lettered (the execution then counts the query's requests only).
func (s *Service) tookEffect(ctx context.Context, d *delivery) (execution, bool) {
	if d.idInvalid {
		return execution{}, false
	}
	cmd, err := schemas.Parse(d.ctype, d.msg.Data())
	if err != nil {
		return execution{}, false
	}
	var app wxpay.CancelWithdrawApplication
	var res *wxpay.Result
	proven := false
	switch c := cmd.(type) {
	case *schemas.ConfirmCancel:
		app, res, err = s.queryApplication(ctx, d, c.ApplymentID, c.OutRequestNo)
		proven = err == nil && app.CancelState.Confirmed()
	case *schemas.ApplyCancelWithdraw:
		app, res, err = s.queryApplication(ctx, d, "", c.OutRequestNo)
		proven = err == nil && ownApplication(app, c.SubMchid)
	default:
		return execution{}, false
	}
	var ex execution
	ex.add(res)
	switch {
	case err != nil:
		s.reconciled(d, "unknown")
		return ex, false
	case !proven:
		s.reconciled(d, "unproven")
		return ex, false
	}
	ex.observeApplication(d, app, res)
	return s.provenBy(d, ex, res), true
}

// provenBy makes ex a success that the query answered by qres proved:
// succeeded, reconciled, with the query's answer as the result.
func (s *Service) provenBy(d *delivery, ex execution, qres *wxpay.Result) execution {
	s.reconciled(d, "took_effect")
	ex.outcome, ex.err, ex.reconciled = schemas.Succeeded, nil, true
	ex.result = json.RawMessage(qres.Body)
	return ex
}

// ownApplication reports whether app, a cancel-withdraw application found
// by out_request_no, is the sub-merchant's (an answer without sub_mchid is
// taken as its).
func ownApplication(app wxpay.CancelWithdrawApplication, subMchid string) bool {
	return app.SubMchid == "" || app.SubMchid == subMchid
}

// maybeSent reports whether an earlier attempt of a POST command may have
// taken effect: one of this command's answers was lost, or an earlier
// delivery ended without recording an outcome (its instance may have died
// after WeChat Pay acted on the request and before the record was written).
func maybeSent(d *delivery, rec *record) bool { return rec.Ambiguous || d.number > 1 }

func (s *Service) reconciled(d *delivery, verdict string) {
	s.metrics.Reconciliations.WithLabelValues(metricType(d.ctype), verdict).Inc()
	d.log.Info("reconciled an ambiguous outcome by query", "verdict", verdict)
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
