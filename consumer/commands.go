package consumer

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

// command is what the service knows of one command type. A new type needs
// its types, schema and rules in schemas, its call in wxpay (and the
// simulator's endpoint), and one entry here.
type command struct {
	// readOnly: the command only reads from WeChat Pay and its run does not
	// look at the outcome record, so it is executed while the record is read
	// (lookup), its request held until the record allows it.
	readOnly bool
	// endpoint names the WeChat Pay endpoint the command calls, as metrics
	// and the simulator name it; "" for a command that sends no request.
	endpoint string
	// run executes a valid command (rec: its record, nil when it has none;
	// always nil for a read-only command).
	run func(s *Service, ctx context.Context, d *delivery, rec *record, cmd schemas.Command) execution
	// reconcile, when set, queries whether the request of a delivery that
	// ended without a decision took effect (see Service.reconcile). Nil:
	// nothing can prove it, and the command is dead-lettered.
	reconcile func(s *Service, ctx context.Context, d *delivery, cmd schemas.Command) execution
}

// claimed reports whether a delivery claims the command in its record
// before executing it: it asks WeChat Pay to change something.
func (c command) claimed() bool { return !c.readOnly && c.endpoint != "" }

// commands is the command table: one entry per type of schemas.Types().
var commands = map[schemas.Type]*command{
	schemas.TypeValidateCancel: {readOnly: true, endpoint: string(schemas.TypeValidateCancel),
		run: runs((*Service).validateCancel)},
	schemas.TypeQueryCancelWithdraw: {readOnly: true, endpoint: string(schemas.TypeQueryCancelWithdraw),
		run: runs((*Service).queryCancelWithdraw)},
	schemas.TypeConfirmCancel: {endpoint: string(schemas.TypeConfirmCancel),
		run: runs((*Service).confirmCancel), reconcile: reconciles((*Service).confirmTookEffect)},
	schemas.TypeQueryCancelApplication: {readOnly: true, endpoint: string(schemas.TypeQueryCancelApplication),
		run: runs((*Service).queryCancelApplication)},
	schemas.TypeCancelApplyment: {endpoint: string(schemas.TypeCancelApplyment),
		run: runs((*Service).cancelApplyment)},
	schemas.TypeApplyCancelWithdraw: {endpoint: string(schemas.TypeApplyCancelWithdraw),
		run: runs((*Service).applyCancelWithdraw), reconcile: reconciles((*Service).applyTookEffect)},
	// track calls the query of the resource it names: query-cancel-withdraw
	// (the endpoint named here) for an applyment_id, query-cancel-application
	// for an out_apply_no; each request is counted under its own endpoint.
	schemas.TypeTrack: {readOnly: true, endpoint: string(schemas.TypeQueryCancelWithdraw),
		run: runs((*Service).track)},
	schemas.TypeUntrack: {run: runs((*Service).untrack)},
}

// runs adapts a handler of one command type to the table.
func runs[C schemas.Command](f func(*Service, context.Context, *delivery, *record, C) execution) func(*Service, context.Context, *delivery, *record, schemas.Command) execution {
	return func(s *Service, ctx context.Context, d *delivery, rec *record, cmd schemas.Command) execution {
		c, ok := cmd.(C)
		if !ok { // schemas.Parse returned another type than its name says
			return rejected("unsupported command type", unsupportedType(d.ctype))
		}
		return f(s, ctx, d, rec, c)
	}
}

// reconciles adapts a reconciliation of one command type to the table.
func reconciles[C schemas.Command](f func(*Service, context.Context, *delivery, C) execution) func(*Service, context.Context, *delivery, schemas.Command) execution {
	return func(s *Service, ctx context.Context, d *delivery, cmd schemas.Command) execution {
		c, ok := cmd.(C)
		if !ok {
			return execution{}
		}
		return f(s, ctx, d, c)
	}
}

func unsupportedType(t string) schemas.Violation {
	return schemas.Violation{Field: "", Rule: schemas.RuleUnknownType, Message: "command type " + strconv.Quote(t) + " is not supported"}
}

func (s *Service) validateCancel(ctx context.Context, d *delivery, _ *record, c *schemas.ValidateCancel) execution {
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

func (s *Service) queryCancelWithdraw(ctx context.Context, d *delivery, _ *record, c *schemas.QueryCancelWithdraw) execution {
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
	if ob, ok := withdrawObservation(app, res.Body); ok {
		ex.observe(d, ob)
	}
}

// withdrawObservation is what a query answer shows of a cancel-withdraw
// application: its cancel_state, with the withdraw_state when the answer
// has one.
func withdrawObservation(app wxpay.CancelWithdrawApplication, body []byte) (publisher.Observation, bool) {
	if app.ApplymentID == "" || app.CancelState == "" {
		return publisher.Observation{}, false
	}
	state := string(app.CancelState)
	if app.WithdrawState != "" {
		state += "/" + string(app.WithdrawState)
	}
	return publisher.Observation{Resource: schemas.ResourceCancelWithdraw, Key: app.ApplymentID, SubMchid: app.SubMchid,
		State: state, ModifiedAt: parseTime(app.ModifyTime), Snapshot: body}, true
}

func (s *Service) queryCancelApplication(ctx context.Context, d *delivery, _ *record, c *schemas.QueryCancelApplication) execution {
	app, res, err := s.client.QueryCancelApplication(ctx, c.OutApplyNo, s.call(d, string(schemas.TypeQueryCancelApplication))...)
	if err != nil {
		return verdict(ctx, res, err)
	}
	ex := succeeded(res)
	if ob, ok := applicationObservation(app, c.OutApplyNo, res.Body); ok {
		ex.observe(d, ob)
	}
	return ex
}

// applicationObservation is what a query answer shows of an old-flow
// cancel application (outApplyNo: the one asked for).
func applicationObservation(app wxpay.CancelApplication, outApplyNo string, body []byte) (publisher.Observation, bool) {
	if app.CancelState == "" {
		return publisher.Observation{}, false
	}
	key := app.OutApplyNo
	if key == "" {
		key = outApplyNo
	}
	return publisher.Observation{Resource: schemas.ResourceCancelApplication, Key: key, SubMchid: app.SubMchid,
		State: string(app.CancelState), ModifiedAt: parseTime(app.UpdateTime), Snapshot: body}, true
}

// confirmCancel confirms a cancel-withdraw application. When an earlier
// attempt of the confirmation may have taken effect (its answer was lost, or
// was a server error) and WeChat Pay now refuses it as not awaiting
// confirmation, or the answer is still missing when the retries run out,
// the application is queried: a cancel_state past WAITING_MERCHANT_CONFIRM
// proves the confirmation (succeeded, reconciled); REJECTED or REVOKED fail
// it; still waiting means it did not take and is tried again.
func (s *Service) confirmCancel(ctx context.Context, d *delivery, rec *record, c *schemas.ConfirmCancel) execution {
	req := wxpay.ConfirmCancelRequest{
		ApplymentID: c.ApplymentID, OutRequestNo: c.OutRequestNo, SubMchid: c.SubMchid,
		OperatorIdentification: c.OperatorIdentification, ConfirmTime: c.ConfirmTime, CancelContractVersion: c.CancelContractVersion,
	}
	resp, res, err := s.client.ConfirmCancel(ctx, req, s.call(d, string(schemas.TypeConfirmCancel))...)
	if err == nil {
		ex := succeeded(res)
		id := resp.ApplymentID
		if id == "" {
			id = c.ApplymentID
		}
		ex.track(trackStart{Resource: schemas.ResourceCancelWithdraw, Key: id, SubMchid: c.SubMchid, Changed: true})
		return ex
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

// confirmTookEffect: a cancel_state past WAITING_MERCHANT_CONFIRM proves a
// confirmation.
func (s *Service) confirmTookEffect(ctx context.Context, d *delivery, c *schemas.ConfirmCancel) execution {
	app, res, err := s.queryApplication(ctx, d, c.ApplymentID, c.OutRequestNo)
	return s.proven(d, app, res, err, err == nil && app.CancelState.Confirmed())
}

// applyCancelWithdraw submits a cancel-withdraw application. out_request_no
// makes it idempotent at WeChat Pay; when an attempt's answer was lost, the
// application is looked up by out_request_no to learn whether it exists.
func (s *Service) applyCancelWithdraw(ctx context.Context, d *delivery, rec *record, c *schemas.ApplyCancelWithdraw) execution {
	resp, res, err := s.client.ApplyCancelWithdraw(ctx, applyRequest(c), s.call(d, string(schemas.TypeApplyCancelWithdraw))...)
	if err == nil {
		ex := succeeded(res)
		ex.track(trackStart{Resource: schemas.ResourceCancelWithdraw, Key: resp.ApplymentID, SubMchid: c.SubMchid, Changed: true})
		return ex
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

// applyTookEffect: the sub-merchant's application found by out_request_no
// proves a submission.
func (s *Service) applyTookEffect(ctx context.Context, d *delivery, c *schemas.ApplyCancelWithdraw) execution {
	app, res, err := s.queryApplication(ctx, d, "", c.OutRequestNo)
	return s.proven(d, app, res, err, err == nil && ownApplication(app, c.SubMchid))
}

// proven is the execution of a reconciliation's query: succeeded,
// reconciled, when ok (the query proved the request took effect);
// otherwise only the requests are counted.
func (s *Service) proven(d *delivery, app wxpay.CancelWithdrawApplication, res *wxpay.Result, err error, ok bool) execution {
	var ex execution
	ex.add(res)
	switch {
	case err != nil:
		s.reconciled(d, "unknown")
		return ex
	case !ok:
		s.reconciled(d, "unproven")
		return ex
	}
	ex.observeApplication(d, app, res)
	return s.provenBy(d, ex, res)
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

// track queries the resource a track command names, as the matching query
// command does; the answer's state starts its tracking unless it is final
// (in commit, as every observation does). A resource WeChat Pay does not
// know (yet) is tracked all the same, its first NOT_FOUND counted: three in
// a row end the tracking.
func (s *Service) track(ctx context.Context, d *delivery, _ *record, c *schemas.Track) execution {
	if s.tracks == nil {
		return trackingOff()
	}
	resource, key := c.Target()
	var ex execution
	if resource == schemas.ResourceCancelWithdraw {
		ex = s.queryCancelWithdraw(ctx, d, nil, &schemas.QueryCancelWithdraw{ApplymentID: key})
	} else {
		ex = s.queryCancelApplication(ctx, d, nil, &schemas.QueryCancelApplication{OutApplyNo: key})
	}
	if ex.outcome == schemas.Failed && ex.err != nil && ex.err.Code == wxpay.CodeNotFound {
		ex.track(trackStart{Resource: resource, Key: key, NotFound: true})
	}
	return ex
}

// untrack ends the tracking of the resource an untrack command names; it
// sends no request.
func (s *Service) untrack(ctx context.Context, d *delivery, _ *record, c *schemas.Untrack) execution {
	if s.tracks == nil {
		return trackingOff()
	}
	resource, key := c.Target()
	was, err := s.tracks.untrack(ctx, resource, key)
	if err != nil {
		return execution{jetstream: err}
	}
	result, err := json.Marshal(struct {
		Resource   schemas.Resource `json:"resource"`
		Key        string           `json:"key"`
		WasTracked bool             `json:"was_tracked"`
	}{resource, key, was})
	if err != nil {
		return execution{jetstream: err}
	}
	return execution{outcome: schemas.Succeeded, result: result}
}

// trackingOff rejects a track or untrack command while tracking is off:
// nothing is sent.
func trackingOff() execution {
	return rejected("lifecycle tracking is off (WXCANCEL_TRACK=false)",
		schemas.Violation{Field: "", Rule: schemas.RuleTrackingOff, Message: "lifecycle tracking is off in this service (WXCANCEL_TRACK=false)"})
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
// after WeChat Pay acted on the request and before the record was written),
// or the record (read before this delivery claimed it) holds the claim of
// another delivery, which may still be sending.
func maybeSent(d *delivery, rec *record) bool {
	return rec != nil && (rec.Ambiguous || rec.Running != nil) || d.number > 1
}
