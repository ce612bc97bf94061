package wxpaysim_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// TestEndpoints calls every endpoint through the client against a seeded
// model and checks the fields of the answer.
func TestEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	ctx := t.Context()

	e.sim.PutSubMerchant(wxpaysim.SubMerchant{
		SubMchid: subMchid,
		Accounts: []wxpay.AccountInfo{{OutAccountType: wxpay.BasicAccount, Amount: 12345}, {OutAccountType: wxpay.OperateAccount, Amount: 0}},
	})
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{
		SubMchid: "1900000110", Result: wxpay.NotAllowCancelWithdraw,
		BlockReasons: []wxpay.BlockReason{{Type: wxpay.BlockConsumerComplaintUnprocessed, Description: "有未处理的投诉"}},
	})

	t.Run("validate-cancel", func(t *testing.T) {
		got, res, err := e.client.ValidateCancel(ctx, subMchid)
		if err != nil {
			t.Fatalf("ValidateCancel: %v", err)
		}
		want := wxpay.ValidateCancelResponse{SubMchid: subMchid, MerchantState: wxpay.MerchantNormal, ValidateResult: wxpay.AllowCancelWithdraw,
			AccountInfo: []wxpay.AccountInfo{{OutAccountType: wxpay.BasicAccount, Amount: 12345}, {OutAccountType: wxpay.OperateAccount, Amount: 0}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
		if res.StatusCode != http.StatusOK || res.RequestID == "" || res.Attempts != 1 {
			t.Errorf("result: status %d, request id %q, attempts %d", res.StatusCode, res.RequestID, res.Attempts)
		}

		blocked, _, err := e.client.ValidateCancel(ctx, "1900000110")
		if err != nil {
			t.Fatalf("ValidateCancel: %v", err)
		}
		if blocked.ValidateResult != wxpay.NotAllowCancelWithdraw || len(blocked.BlockReasons) != 1 ||
			blocked.BlockReasons[0].Type != wxpay.BlockConsumerComplaintUnprocessed || len(blocked.AccountInfo) != 0 {
			t.Errorf("blocked merchant: got %+v", blocked)
		}
	})

	t.Run("query-cancel-withdraw", func(t *testing.T) {
		a := e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{OutRequestNo: "Q0001", SubMchid: subMchid, State: wxpay.CancelReviewing})
		if a.ApplymentID == "" {
			t.Fatal("PutCancelWithdraw generated no applyment id")
		}
		want := wxpay.CancelWithdrawApplication{
			ApplymentID: a.ApplymentID, OutRequestNo: "Q0001", SubMchid: subMchid,
			CancelState: wxpay.CancelReviewing, CancelStateDescription: "审核中", Withdraw: wxpay.NotApplyWithdraw,
			ModifyTime:  "2026-01-01T08:00:00+08:00",
			AccountInfo: []wxpay.AccountInfo{{OutAccountType: wxpay.BasicAccount, Amount: 12345}, {OutAccountType: wxpay.OperateAccount, Amount: 0}},
		}
		byID, _, err := e.client.QueryCancelWithdrawByApplymentID(ctx, a.ApplymentID)
		if err != nil {
			t.Fatalf("by applyment id: %v", err)
		}
		if !reflect.DeepEqual(byID, want) {
			t.Errorf("by applyment id: got %+v, want %+v", byID, want)
		}
		byNo, _, err := e.client.QueryCancelWithdrawByOutRequestNo(ctx, "Q0001")
		if err != nil {
			t.Fatalf("by out_request_no: %v", err)
		}
		if !reflect.DeepEqual(byNo, want) {
			t.Errorf("by out_request_no: got %+v, want %+v", byNo, want)
		}
	})

	t.Run("confirm-cancel", func(t *testing.T) {
		for _, byOutNo := range []bool{false, true} {
			a := e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
			req := confirmRequest(a)
			if byOutNo {
				req.ApplymentID = ""
			} else {
				req.OutRequestNo = ""
			}
			got, res, err := e.client.ConfirmCancel(ctx, req)
			if err != nil {
				t.Fatalf("ConfirmCancel (by out_request_no %v): %v", byOutNo, err)
			}
			want := wxpay.ConfirmCancelResponse{ApplymentID: a.ApplymentID, SubMchid: subMchid, OutRequestNo: a.OutRequestNo}
			if got != want || res.StatusCode != http.StatusOK {
				t.Errorf("got %+v (HTTP %d), want %+v", got, res.StatusCode, want)
			}
			q, _, err := e.client.QueryCancelWithdrawByApplymentID(ctx, a.ApplymentID)
			if err != nil {
				t.Fatalf("query after confirmation: %v", err)
			}
			if q.CancelState != wxpay.CancelSystemProcessing || !q.CancelState.Confirmed() {
				t.Errorf("state after confirmation = %s, want SYSTEM_PROCESSING", q.CancelState)
			}
		}
	})

	t.Run("query-cancel-application", func(t *testing.T) {
		e.sim.PutCancelApplication(wxpaysim.CancelApplication{OutApplyNo: "OLD0001", SubMchid: subMchid, State: wxpay.ApplicationRejected, RejectReason: "资料不全"})
		got, _, err := e.client.QueryCancelApplication(ctx, "OLD0001")
		if err != nil {
			t.Fatalf("QueryCancelApplication: %v", err)
		}
		want := wxpay.CancelApplication{OutApplyNo: "OLD0001", SubMchid: subMchid, RejectReason: "资料不全",
			CancelState: wxpay.ApplicationRejected, UpdateTime: "2026-01-01T08:00:00+08:00"}
		if got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})

	t.Run("cancel-applyment", func(t *testing.T) {
		byCode := e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "BIZ0001"})
		byBoth := e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "BIZ0002", ApplymentID: 2000001111111111})
		byID := e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "BIZ0003"})
		for _, tc := range []struct {
			name string
			req  wxpay.CancelApplymentRequest
			code string
		}{
			{"business code", wxpay.CancelApplymentRequest{BusinessCode: byCode.BusinessCode}, byCode.BusinessCode},
			{"business code and applyment id", wxpay.CancelApplymentRequest{BusinessCode: "BIZ0002", ApplymentID: byBoth.ApplymentID}, "BIZ0002"},
			{"applyment id", wxpay.CancelApplymentRequest{ApplymentID: byID.ApplymentID}, byID.BusinessCode},
		} {
			res, err := e.client.CancelApplyment(ctx, tc.req)
			if err != nil {
				t.Fatalf("%s: CancelApplyment: %v", tc.name, err)
			}
			if res.StatusCode != http.StatusNoContent || res.Body != nil {
				t.Errorf("%s: HTTP %d with body %q, want 204 and no body", tc.name, res.StatusCode, res.Body)
			}
			if a, ok := e.sim.Applyment(tc.code); !ok || !a.Canceled {
				t.Errorf("%s: applyment %s after cancel: %+v, %v", tc.name, tc.code, a, ok)
			}
		}
	})

	t.Run("apply-cancel-withdraw", func(t *testing.T) {
		payee := &wxpay.PayeeInfo{
			AccountType: wxpay.AccountCorporate,
			BankAccountInfo: &wxpay.BankAccountInfo{AccountName: "深圳市某某科技有限公司", AccountBank: "招商银行",
				BankName: "招商银行股份有限公司深圳分行", AccountNumber: "6225880123456789"},
			IdentityInfo: &wxpay.IdentityInfo{IDDocType: "IDENTIFICATION_TYPE_MAINLAND_IDCARD", IdentificationName: "张三", IdentificationNo: "440300199001011234"},
		}
		sent := *payee // the client must not change what it is given
		req := wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: "APPLY0001", Withdraw: wxpay.ApplyWithdraw, PayeeInfo: payee,
			ProofMedias: []wxpay.ProofMedia{{ProofMediaType: "CANCEL_PROOF", ProofMedia: "media-1"}}, Remark: "注销"}
		got, _, err := e.client.ApplyCancelWithdraw(ctx, req)
		if err != nil {
			t.Fatalf("ApplyCancelWithdraw: %v", err)
		}
		if got.ApplymentID == "" || got.OutRequestNo != "APPLY0001" {
			t.Fatalf("got %+v", got)
		}
		stored, ok := e.sim.CancelWithdraw(got.ApplymentID)
		if !ok {
			t.Fatalf("application %s not stored", got.ApplymentID)
		}
		if stored.Payee == nil || !reflect.DeepEqual(*stored.Payee, sent) {
			t.Errorf("decrypted payee = %+v, want %+v", stored.Payee, sent)
		}
		if stored.State != wxpay.CancelAccepted || stored.Withdraw != wxpay.ApplyWithdraw || stored.SubMchid != subMchid {
			t.Errorf("stored %+v", stored)
		}

		var raw []byte
		for _, r := range e.sim.Requests() {
			if r.Endpoint == wxpaysim.EndpointApplyCancelWithdraw {
				raw = r.Body
			}
		}
		if raw == nil {
			t.Fatal("no apply-cancel-withdraw request recorded")
		}
		for _, secret := range []string{"深圳市某某科技有限公司", "6225880123456789", "张三", "440300199001011234"} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("the request body carries %q in plain text", secret)
			}
		}
		if !bytes.Contains(raw, []byte("招商银行")) {
			t.Errorf("the request body lacks the non-sensitive account_bank: %s", raw)
		}

		q, _, err := e.client.QueryCancelWithdrawByOutRequestNo(ctx, "APPLY0001")
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		if q.ApplymentID != got.ApplymentID || q.CancelState != wxpay.CancelAccepted || q.Withdraw != wxpay.ApplyWithdraw {
			t.Errorf("query after apply: %+v", q)
		}
	})

	for _, ep := range wxpaysim.Endpoints() {
		if e.sim.Count(ep) == 0 {
			t.Errorf("endpoint %s was never called", ep)
		}
	}
	if e.sim.Count("") != 0 {
		t.Errorf("%d requests went to unknown paths", e.sim.Count(""))
	}
}

func confirmRequest(a wxpaysim.CancelWithdraw) wxpay.ConfirmCancelRequest {
	return wxpay.ConfirmCancelRequest{ApplymentID: a.ApplymentID, OutRequestNo: a.OutRequestNo, SubMchid: a.SubMchid,
		OperatorIdentification: "operator-1", ConfirmTime: "2026-01-01T08:00:00+08:00", CancelContractVersion: "V1"}
}

// TestBusinessErrors checks every business error of the model: the client
// reports it as a signed *APIError with the right status and code, does not
// retry it, and classifies it as not retryable.
func TestBusinessErrors(t *testing.T) {
	t.Parallel()
	type call func(e *env) (*wxpay.Result, error)
	waiting := func(e *env) wxpaysim.CancelWithdraw {
		e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
		return e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{ApplymentID: seededID, OutRequestNo: "OUT1", SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
	}
	confirm := func(mod func(*wxpay.ConfirmCancelRequest)) call {
		return func(e *env) (*wxpay.Result, error) {
			req := confirmRequest(waiting(e))
			mod(&req)
			_, res, err := e.client.ConfirmCancel(e.t.Context(), req)
			return res, err
		}
	}
	apply := func(req wxpay.ApplyCancelWithdrawRequest) call {
		return func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.ApplyCancelWithdraw(e.t.Context(), req)
			return res, err
		}
	}
	cancelApplyment := func(req wxpay.CancelApplymentRequest) call {
		return func(e *env) (*wxpay.Result, error) {
			e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "BIZ1", ApplymentID: 2000001000000001})
			e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "BIZ2", ApplymentID: 2000001000000002, Canceled: true})
			return e.client.CancelApplyment(e.t.Context(), req)
		}
	}
	tests := []struct {
		name     string
		endpoint string
		call     call
		status   int
		code     string
		field    string // detail.field, when the answer names one
		after    func(t *testing.T, e *env)
	}{
		{"validate-cancel unknown sub-merchant", wxpaysim.EndpointValidateCancel, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.ValidateCancel(e.t.Context(), "1900009999")
			return res, err
		}, 403, "NO_AUTH", "", nil},
		{"validate-cancel sub_mchid not digits", wxpaysim.EndpointValidateCancel, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.ValidateCancel(e.t.Context(), "abc")
			return res, err
		}, 400, "PARAM_ERROR", "sub_mchid", nil},
		{"query unknown applyment id", wxpaysim.EndpointQueryCancelWithdraw, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.QueryCancelWithdrawByApplymentID(e.t.Context(), "2000009999999999")
			return res, err
		}, 404, "NOT_FOUND", "", nil},
		{"query unknown out_request_no", wxpaysim.EndpointQueryCancelWithdraw, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.QueryCancelWithdrawByOutRequestNo(e.t.Context(), "NOPE")
			return res, err
		}, 404, "NOT_FOUND", "", nil},
		{"query malformed applyment id", wxpaysim.EndpointQueryCancelWithdraw, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.QueryCancelWithdrawByApplymentID(e.t.Context(), "a.b")
			return res, err
		}, 400, "PARAM_ERROR", "applyment_id", nil},
		{"query malformed out_request_no", wxpaysim.EndpointQueryCancelWithdraw, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.QueryCancelWithdrawByOutRequestNo(e.t.Context(), "a b")
			return res, err
		}, 400, "PARAM_ERROR", "out_request_no", nil},
		{"query unknown cancel application", wxpaysim.EndpointQueryCancelApplication, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.QueryCancelApplication(e.t.Context(), "NOPE")
			return res, err
		}, 404, "NOT_FOUND", "", nil},
		{"query malformed out_apply_no", wxpaysim.EndpointQueryCancelApplication, func(e *env) (*wxpay.Result, error) {
			_, res, err := e.client.QueryCancelApplication(e.t.Context(), "x~y")
			return res, err
		}, 400, "PARAM_ERROR", "out_apply_no", nil},
		{"confirm unknown application", wxpaysim.EndpointConfirmCancel, confirm(func(r *wxpay.ConfirmCancelRequest) {
			r.ApplymentID, r.OutRequestNo = "2000009999999999", ""
		}), 404, "NOT_FOUND", "", nil},
		{"confirm not awaiting confirmation", wxpaysim.EndpointConfirmCancel, func(e *env) (*wxpay.Result, error) {
			a := e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{ApplymentID: seededID, SubMchid: subMchid, State: wxpay.CancelReviewing})
			_, res, err := e.client.ConfirmCancel(e.t.Context(), confirmRequest(a))
			return res, err
		}, 403, "RULE_LIMIT", "", stateIs(wxpay.CancelReviewing)},
		{"confirm another sub-merchant's application", wxpaysim.EndpointConfirmCancel, confirm(func(r *wxpay.ConfirmCancelRequest) {
			r.SubMchid = "1900000999"
		}), 400, "NO_AUTH", "", stateIs(wxpay.CancelWaitingMerchantConfirm)},
		{"confirm without operator", wxpaysim.EndpointConfirmCancel, confirm(func(r *wxpay.ConfirmCancelRequest) {
			r.OperatorIdentification = ""
		}), 400, "PARAM_ERROR", "operator_identification", nil},
		{"confirm time not RFC 3339", wxpaysim.EndpointConfirmCancel, confirm(func(r *wxpay.ConfirmCancelRequest) {
			r.ConfirmTime = "2026-01-01 08:00:00"
		}), 400, "PARAM_ERROR", "confirm_time", nil},
		{"confirm without any id", wxpaysim.EndpointConfirmCancel, confirm(func(r *wxpay.ConfirmCancelRequest) {
			r.ApplymentID, r.OutRequestNo = "", ""
		}), 400, "PARAM_ERROR", "applyment_id", nil},
		{"confirm with mismatched ids", wxpaysim.EndpointConfirmCancel, confirm(func(r *wxpay.ConfirmCancelRequest) {
			r.OutRequestNo = "OTHER"
		}), 400, "PARAM_ERROR", "out_request_no", nil},
		{"cancel unknown applyment", wxpaysim.EndpointCancelApplyment,
			cancelApplyment(wxpay.CancelApplymentRequest{BusinessCode: "NOPE"}), 400, "INVALID_REQUEST", "", nil},
		{"cancel unknown applyment id", wxpaysim.EndpointCancelApplyment,
			cancelApplyment(wxpay.CancelApplymentRequest{ApplymentID: 2000001000000009}), 400, "INVALID_REQUEST", "", nil},
		{"cancel applyment with another's id", wxpaysim.EndpointCancelApplyment,
			cancelApplyment(wxpay.CancelApplymentRequest{BusinessCode: "BIZ1", ApplymentID: 2000001000000002}), 400, "INVALID_REQUEST", "",
			func(t *testing.T, e *env) {
				if a, _ := e.sim.Applyment("BIZ1"); a.Canceled {
					t.Error("BIZ1 was cancelled by a mismatched request")
				}
			}},
		{"cancel applyment twice", wxpaysim.EndpointCancelApplyment,
			cancelApplyment(wxpay.CancelApplymentRequest{BusinessCode: "BIZ2"}), 400, "INVALID_REQUEST", "", nil},
		{"apply for an unknown sub-merchant", wxpaysim.EndpointApplyCancelWithdraw,
			apply(wxpay.ApplyCancelWithdrawRequest{SubMchid: "1900009999", OutRequestNo: "A1"}), 403, "NO_AUTH", "", nil},
		{"apply for a sub-merchant not allowed to cancel", wxpaysim.EndpointApplyCancelWithdraw, func(e *env) (*wxpay.Result, error) {
			e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid, Result: wxpay.NotAllowCancelWithdraw})
			_, res, err := e.client.ApplyCancelWithdraw(e.t.Context(), wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: "A1"})
			return res, err
		}, 400, "INVALID_REQUEST", "", nil},
		{"apply with a used out_request_no", wxpaysim.EndpointApplyCancelWithdraw, func(e *env) (*wxpay.Result, error) {
			waiting(e)
			_, res, err := e.client.ApplyCancelWithdraw(e.t.Context(), wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: "OUT1"})
			return res, err
		}, 400, "ALREADY_EXISTS", "", nil},
		{"apply to withdraw without payee", wxpaysim.EndpointApplyCancelWithdraw, func(e *env) (*wxpay.Result, error) {
			e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
			_, res, err := e.client.ApplyCancelWithdraw(e.t.Context(), wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: "A1", Withdraw: wxpay.ApplyWithdraw})
			return res, err
		}, 400, "PARAM_ERROR", "payee_info", nil},
		{"apply without out_request_no", wxpaysim.EndpointApplyCancelWithdraw,
			apply(wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid}), 400, "PARAM_ERROR", "out_request_no", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil, nil)
			res, err := tc.call(e)
			var apiErr *wxpay.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want *wxpay.APIError", err, err)
			}
			if apiErr.StatusCode != tc.status || apiErr.Code != tc.code {
				t.Errorf("got HTTP %d %s, want %d %s", apiErr.StatusCode, apiErr.Code, tc.status, tc.code)
			}
			if !apiErr.Signed || apiErr.RequestID == "" || apiErr.Message == "" {
				t.Errorf("signed %v, request id %q, message %q: want a signed answer with both", apiErr.Signed, apiErr.RequestID, apiErr.Message)
			}
			if tc.field != "" {
				var d struct{ Field string }
				if err := json.Unmarshal(apiErr.Detail, &d); err != nil || d.Field != tc.field {
					t.Errorf("detail %s, want field %q", apiErr.Detail, tc.field)
				}
			}
			if wxpay.Retryable(err) {
				t.Errorf("Retryable(%v) = true", err)
			}
			if n := e.sim.Count(tc.endpoint); n != 1 || res.Attempts != 1 {
				t.Errorf("%s reached %d times in %d attempts, want once", tc.endpoint, n, res.Attempts)
			}
			if d := e.sleeper.Delays(); len(d) != 0 {
				t.Errorf("the client waited %v to retry", d)
			}
			if tc.after != nil {
				tc.after(t, e)
			}
		})
	}
}

// seededID is the applyment id of the application a test seeds.
const seededID = "2000001000000077"

// stateIs checks that the seeded application is (still) in state s.
func stateIs(s wxpay.CancelState) func(t *testing.T, e *env) {
	return func(t *testing.T, e *env) {
		t.Helper()
		if a, ok := e.sim.CancelWithdraw(seededID); !ok || a.State != s {
			t.Errorf("application %s: state %s (found %v), want %s", seededID, a.State, ok, s)
		}
	}
}

// TestRequestErrors covers answers that need a hand-built request: payee
// fields encrypted for another key or not decryptable, an oversized body, a
// malformed applyment_id query, and a body that is not the documented JSON.
func TestRequestErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	encrypted, err := wxpay.EncryptSensitive(e.sim.PublicKey(), "6225880123456789", nil)
	if err != nil {
		t.Fatal(err)
	}
	applyBody := func(accountNumber string) []byte {
		b, _ := json.Marshal(wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: "RAW1", Withdraw: wxpay.ApplyWithdraw,
			PayeeInfo: &wxpay.PayeeInfo{AccountType: wxpay.AccountPersonal, BankAccountInfo: &wxpay.BankAccountInfo{AccountNumber: accountNumber}}})
		return b
	}
	const applyPath = "/v3/ecommerce/account/apply-cancel-withdraw"
	tests := []struct {
		name   string
		method string
		uri    string
		body   []byte
		serial string // Wechatpay-Serial; the simulator's key id when empty
		status int
		code   string
		field  string
	}{
		{"payee encrypted for another key id", "POST", applyPath, applyBody(encrypted), "PUB_KEY_ID_0000000000000000000000000001", 400, "PARAM_ERROR", "Wechatpay-Serial"},
		{"payee not encrypted", "POST", applyPath, applyBody("6225880123456789"), "", 400, "PARAM_ERROR", "payee_info"},
		{"payee not decryptable", "POST", applyPath, applyBody("AAAA"), "", 400, "PARAM_ERROR", "payee_info"},
		{"body larger than MaxRequestBody", "POST", applyPath, bytes.Repeat([]byte(" "), wxpaysim.MaxRequestBody+1), "", 400, "INVALID_REQUEST", ""},
		{"body not JSON", "POST", applyPath, []byte("sub_mchid=1"), "", 400, "PARAM_ERROR", ""},
		{"body with an unknown field", "POST", applyPath + "/confirm", []byte(`{"sub_mchid":"1","surprise":true}`), "", 400, "PARAM_ERROR", ""},
		{"applyment_id query not a number", "POST", "/v3/apply4subject/applyment/BIZ1/cancel?applyment_id=abc", nil, "", 400, "PARAM_ERROR", "applyment_id"},
		{"applyment_id query not positive", "POST", "/v3/apply4subject/applyment/BIZ1/cancel?applyment_id=0", nil, "", 400, "PARAM_ERROR", "applyment_id"},
	}
	v := e.verifier()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			auth, err := e.signer().Authorization(tc.method, tc.uri, tc.body, e.clock.Now().Unix(), freshNonce())
			if err != nil {
				t.Fatal(err)
			}
			serial := tc.serial
			if serial == "" {
				serial = e.sim.PublicKeyID()
			}
			r := e.do(tc.method, tc.uri, tc.body, auth, http.Header{wxpay.HeaderSerial: {serial}})
			var body struct {
				Code   string
				Detail struct{ Field string }
			}
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatalf("answer %s: %v", r.Body, err)
			}
			if r.Status != tc.status || body.Code != tc.code || body.Detail.Field != tc.field {
				t.Errorf("got HTTP %d %s (field %q), want %d %s (field %q): %s", r.Status, body.Code, body.Detail.Field, tc.status, tc.code, tc.field, r.Body)
			}
			if err := v.Verify(r.Header, r.Body); err != nil {
				t.Errorf("the error answer does not verify: %v", err)
			}
		})
	}
	if _, _, err := e.client.QueryCancelWithdrawByOutRequestNo(t.Context(), "RAW1"); !isAPIError(err, 404, "NOT_FOUND") {
		t.Errorf("query of a refused application: %v, want 404 NOT_FOUND", err)
	}
	for _, r := range e.sim.Requests() {
		if r.Endpoint == wxpaysim.EndpointApplyCancelWithdraw && r.Status == http.StatusOK {
			t.Errorf("a refused application was answered 200: %+v", r)
		}
	}
	if n := e.sim.Count(wxpaysim.EndpointApplyCancelWithdraw); n != 5 {
		t.Errorf("Count(apply-cancel-withdraw) = %d, want 5", n)
	}
	if !slices.ContainsFunc(e.sim.Requests(), func(r wxpaysim.Request) bool {
		return r.Endpoint == wxpaysim.EndpointApplyCancelWithdraw && strings.Contains(r.URI, "apply-cancel-withdraw") && r.MchID == platformMchID
	}) {
		t.Error("Requests() lacks the merchant id of authenticated requests")
	}
}

// isAPIError reports whether err is an *APIError with status and code.
func isAPIError(err error, status int, code string) bool {
	var apiErr *wxpay.APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == status && apiErr.Code == code
}
