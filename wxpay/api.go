package wxpay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// API paths (docs/interface.md, Commands).
const (
	pathCancelWithdraw     = "/v3/ecommerce/account/apply-cancel-withdraw"
	pathValidateCancel     = pathCancelWithdraw + "/validate-cancel/"
	pathByApplymentID      = pathCancelWithdraw + "/applyment-id/"
	pathByOutRequestNo     = pathCancelWithdraw + "/out-request-no/"
	pathConfirmCancel      = pathCancelWithdraw + "/confirm"
	pathCancelApplications = "/v3/ecommerce/account/cancel-applications/out-apply-no/"
	pathApplyment          = "/v3/apply4subject/applyment/"
)

// MaxPathParam is the longest path parameter accepted, in bytes.
const MaxPathParam = 128

// pathParam validates one path parameter and returns it escaped as a single
// path segment, so that no input can change the host or the path structure.
// The value itself never appears in the error.
func pathParam(name, v string) (string, error) {
	switch {
	case v == "":
		return "", invalidArgument("%s is empty", name)
	case len(v) > MaxPathParam:
		return "", invalidArgument("%s is %d bytes long; at most %d are allowed", name, len(v), MaxPathParam)
	case v == "." || v == "..":
		return "", invalidArgument("%s must not be a dot segment", name)
	}
	return url.PathEscape(v), nil
}

// decodeInto decodes the verified body of a successful call.
func decodeInto[T any](res *Result, err error, method, path string) (T, *Result, error) {
	var v T
	if err != nil {
		return v, res, err
	}
	if len(res.Body) == 0 {
		return v, res, fmt.Errorf("wxpay: %s %s: HTTP %d with an empty body where JSON was expected", method, path, res.StatusCode)
	}
	if err := json.Unmarshal(res.Body, &v); err != nil {
		return v, res, fmt.Errorf("wxpay: %s %s: decoding the response: %w", method, path, err)
	}
	return v, res, nil
}

func (c *Client) get(ctx context.Context, name, prefix, param string, opts []CallOption) (*Result, string, error) {
	seg, err := pathParam(name, param)
	if err != nil {
		return &Result{}, prefix + "{" + name + "}", err
	}
	res, err := c.do(ctx, request{method: http.MethodGet, path: prefix + seg}, opts)
	return res, prefix + seg, err
}

// ValidateCancel checks whether sub-merchant subMchid may apply for
// cancellation (GET …/apply-cancel-withdraw/validate-cancel/{sub_mchid}).
func (c *Client) ValidateCancel(ctx context.Context, subMchid string, opts ...CallOption) (ValidateCancelResponse, *Result, error) {
	res, path, err := c.get(ctx, "sub_mchid", pathValidateCancel, subMchid, opts)
	return decodeInto[ValidateCancelResponse](res, err, http.MethodGet, path)
}

// QueryCancelWithdrawByApplymentID queries a cancel-withdraw application by
// WeChat Pay's applyment_id (GET …/apply-cancel-withdraw/applyment-id/{applyment_id}).
func (c *Client) QueryCancelWithdrawByApplymentID(ctx context.Context, applymentID string, opts ...CallOption) (CancelWithdrawApplication, *Result, error) {
	res, path, err := c.get(ctx, "applyment_id", pathByApplymentID, applymentID, opts)
	return decodeInto[CancelWithdrawApplication](res, err, http.MethodGet, path)
}

// QueryCancelWithdrawByOutRequestNo queries a cancel-withdraw application by
// the platform's out_request_no (GET …/apply-cancel-withdraw/out-request-no/{out_request_no}).
func (c *Client) QueryCancelWithdrawByOutRequestNo(ctx context.Context, outRequestNo string, opts ...CallOption) (CancelWithdrawApplication, *Result, error) {
	res, path, err := c.get(ctx, "out_request_no", pathByOutRequestNo, outRequestNo, opts)
	return decodeInto[CancelWithdrawApplication](res, err, http.MethodGet, path)
}

// QueryCancelApplication queries an old-flow cancel application
// (GET /v3/ecommerce/account/cancel-applications/out-apply-no/{out_apply_no}).
func (c *Client) QueryCancelApplication(ctx context.Context, outApplyNo string, opts ...CallOption) (CancelApplication, *Result, error) {
	res, path, err := c.get(ctx, "out_apply_no", pathCancelApplications, outApplyNo, opts)
	return decodeInto[CancelApplication](res, err, http.MethodGet, path)
}

// ConfirmCancel confirms a cancel-withdraw application awaiting the
// merchant's confirmation, on the merchant's behalf
// (POST /v3/ecommerce/account/apply-cancel-withdraw/confirm). The body is
// serialised once; retries resend the same bytes.
func (c *Client) ConfirmCancel(ctx context.Context, req ConfirmCancelRequest, opts ...CallOption) (ConfirmCancelResponse, *Result, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return ConfirmCancelResponse{}, &Result{}, fmt.Errorf("wxpay: encoding the confirm-cancel request: %w", err)
	}
	res, err := c.do(ctx, request{method: http.MethodPost, path: pathConfirmCancel, body: body}, opts)
	return decodeInto[ConfirmCancelResponse](res, err, http.MethodPost, pathConfirmCancel)
}

// CancelApplyment cancels an apply4subject application:
// POST /v3/apply4subject/applyment/{business_code}/cancel (with
// ?applyment_id=N when both are given), or …/{applyment_id}/cancel when only
// the id is. The request has no body; WeChat Pay answers 204 No Content.
// An empty BusinessCode with a non-positive ApplymentID, or a negative
// ApplymentID, is refused with [ErrInvalidArgument].
func (c *Client) CancelApplyment(ctx context.Context, req CancelApplymentRequest, opts ...CallOption) (*Result, error) {
	if req.ApplymentID < 0 {
		return &Result{}, invalidArgument("applyment_id must be positive")
	}
	var r request
	r.method = http.MethodPost
	switch {
	case req.BusinessCode != "":
		seg, err := pathParam("business_code", req.BusinessCode)
		if err != nil {
			return &Result{}, err
		}
		r.path = pathApplyment + seg + "/cancel"
		if req.ApplymentID > 0 {
			r.query = "applyment_id=" + strconv.FormatInt(req.ApplymentID, 10)
		}
	case req.ApplymentID > 0:
		r.path = pathApplyment + strconv.FormatInt(req.ApplymentID, 10) + "/cancel"
	default:
		return &Result{}, invalidArgument("business_code or applyment_id is required")
	}
	return c.do(ctx, r, opts)
}

// ApplyCancelWithdraw submits a cancel-withdraw application
// (POST /v3/ecommerce/account/apply-cancel-withdraw). The payee's
// account_name, account_number, identification_name and identification_no
// are given in plain text and encrypted here, once per call, with the
// Verifier's encryption key, which the request's Wechatpay-Serial names;
// every retry resends the same bytes. req is not modified.
func (c *Client) ApplyCancelWithdraw(ctx context.Context, req ApplyCancelWithdrawRequest, opts ...CallOption) (ApplyCancelWithdrawResponse, *Result, error) {
	enc, err := c.encryptPayee(req)
	if err != nil {
		return ApplyCancelWithdrawResponse{}, &Result{}, err
	}
	body, err := json.Marshal(enc)
	if err != nil {
		return ApplyCancelWithdrawResponse{}, &Result{}, fmt.Errorf("wxpay: encoding the apply-cancel-withdraw request: %w", err)
	}
	res, err := c.do(ctx, request{method: http.MethodPost, path: pathCancelWithdraw, body: body}, opts)
	return decodeInto[ApplyCancelWithdrawResponse](res, err, http.MethodPost, pathCancelWithdraw)
}

// encryptPayee returns a copy of req whose sensitive fields are encrypted.
// Empty fields stay empty.
func (c *Client) encryptPayee(req ApplyCancelWithdrawRequest) (ApplyCancelWithdrawRequest, error) {
	if req.PayeeInfo == nil {
		return req, nil
	}
	_, key := c.verifier.EncryptionKey()
	encrypt := func(field string, v *string) error {
		if *v == "" {
			return nil
		}
		ct, err := EncryptSensitive(key, *v, c.rand)
		if err != nil {
			return fmt.Errorf("wxpay: payee_info.%s: %w", field, err)
		}
		*v = ct
		return nil
	}
	p := *req.PayeeInfo
	if p.BankAccountInfo != nil {
		b := *p.BankAccountInfo
		if err := encrypt("bank_account_info.account_name", &b.AccountName); err != nil {
			return req, err
		}
		if err := encrypt("bank_account_info.account_number", &b.AccountNumber); err != nil {
			return req, err
		}
		p.BankAccountInfo = &b
	}
	if p.IdentityInfo != nil {
		i := *p.IdentityInfo
		if err := encrypt("identity_info.identification_name", &i.IdentificationName); err != nil {
			return req, err
		}
		if err := encrypt("identity_info.identification_no", &i.IdentificationNo); err != nil {
			return req, err
		}
		p.IdentityInfo = &i
	}
	req.PayeeInfo = &p
	return req, nil
}
