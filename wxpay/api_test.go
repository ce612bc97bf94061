package wxpay

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestEndpoints calls every endpoint against a server that checks the wire
// format and answers like WeChat Pay.
func TestEndpoints(t *testing.T) {
	type call func(ctx context.Context, c *Client) (any, *Result, error)
	tests := []struct {
		name     string
		call     call
		status   int
		answer   string
		method   string
		uri      string
		wantBody string // request body; "" for none
		want     any
	}{
		{
			name: "validate-cancel",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				return c.ValidateCancel(ctx, "1900000109")
			},
			status: 200,
			answer: `{"sub_mchid":"1900000109","merchant_state":"NORMAL","validate_result":"NOT_ALLOW_CANCEL_WITHDRAW","account_info":[{"out_account_type":"BASIC_ACCOUNT","amount":101}],"block_reasons":[{"type":"CONSUMER_COMPLAINT_UNPROCESSED","description":"有投诉"}]}`,
			method: "GET", uri: "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/1900000109",
			want: ValidateCancelResponse{SubMchid: "1900000109", MerchantState: MerchantNormal, ValidateResult: NotAllowCancelWithdraw,
				AccountInfo:  []AccountInfo{{OutAccountType: BasicAccount, Amount: 101}},
				BlockReasons: []BlockReason{{Type: BlockConsumerComplaintUnprocessed, Description: "有投诉"}}},
		},
		{
			name: "query by applyment_id",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				return c.QueryCancelWithdrawByApplymentID(ctx, "X202410241010125346")
			},
			status: 200,
			answer: `{"applyment_id":"X202410241010125346","out_request_no":"P1","cancel_state":"FUND_PROCESSING","withdraw":"APPLY_WITHDRAW","withdraw_state":"WITHDRAW_PROCESSING","account_withdraw_result":[{"out_account_type":"BASIC_ACCOUNT","pay_state":"PAY_SUCCEED","state_description":"付款成功"}],"modify_time":"2015-05-20T13:29:35+08:00","sub_mchid":"1900000109"}`,
			method: "GET", uri: "/v3/ecommerce/account/apply-cancel-withdraw/applyment-id/X202410241010125346",
			want: CancelWithdrawApplication{ApplymentID: "X202410241010125346", OutRequestNo: "P1", CancelState: CancelFundProcessing,
				Withdraw: ApplyWithdraw, WithdrawState: WithdrawProcessing,
				AccountWithdrawResult: []AccountWithdrawResult{{OutAccountType: BasicAccount, PayState: PaySucceed, StateDescription: "付款成功"}},
				ModifyTime:            "2015-05-20T13:29:35+08:00", SubMchid: "1900000109"},
		},
		{
			name: "query by out_request_no, unknown enum values pass through",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				return c.QueryCancelWithdrawByOutRequestNo(ctx, "P202410241010125346")
			},
			status: 200,
			answer: `{"out_request_no":"P202410241010125346","cancel_state":"SOME_NEW_STATE","withdraw_state":"WITHDRAW_PAUSED","new_field":1}`,
			method: "GET", uri: "/v3/ecommerce/account/apply-cancel-withdraw/out-request-no/P202410241010125346",
			want: CancelWithdrawApplication{OutRequestNo: "P202410241010125346", CancelState: "SOME_NEW_STATE", WithdrawState: "WITHDRAW_PAUSED"},
		},
		{
			name: "query cancel application",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				return c.QueryCancelApplication(ctx, "APPLY_1")
			},
			status: 200,
			answer: `{"out_apply_no":"APPLY_1","sub_mchid":"1900000109","cancel_state":"CANCEL_SUCCESS","update_time":"2024-01-02T03:04:05+08:00"}`,
			method: "GET", uri: "/v3/ecommerce/account/cancel-applications/out-apply-no/APPLY_1",
			want: CancelApplication{OutApplyNo: "APPLY_1", SubMchid: "1900000109", CancelState: ApplicationCancelSuccess, UpdateTime: "2024-01-02T03:04:05+08:00"},
		},
		{
			name: "confirm-cancel",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				return c.ConfirmCancel(ctx, ConfirmCancelRequest{ApplymentID: "X1", SubMchid: "1900000109",
					OperatorIdentification: "张三01", ConfirmTime: "2025-01-02T03:04:05+08:00", CancelContractVersion: "V1.0"})
			},
			status: 200,
			answer: `{"applyment_id":"X1","sub_mchid":"1900000109"}`,
			method: "POST", uri: "/v3/ecommerce/account/apply-cancel-withdraw/confirm",
			wantBody: `{"applyment_id":"X1","sub_mchid":"1900000109","operator_identification":"张三01","confirm_time":"2025-01-02T03:04:05+08:00","cancel_contract_version":"V1.0"}`,
			want:     ConfirmCancelResponse{ApplymentID: "X1", SubMchid: "1900000109"},
		},
		{
			name: "cancel-applyment by business_code and applyment_id",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				res, err := c.CancelApplyment(ctx, CancelApplymentRequest{BusinessCode: "1900013511_10000", ApplymentID: 20000011111})
				return nil, res, err
			},
			status: 204,
			method: "POST", uri: "/v3/apply4subject/applyment/1900013511_10000/cancel?applyment_id=20000011111",
		},
		{
			name: "cancel-applyment by business_code",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				res, err := c.CancelApplyment(ctx, CancelApplymentRequest{BusinessCode: "BC-1"})
				return nil, res, err
			},
			status: 204,
			method: "POST", uri: "/v3/apply4subject/applyment/BC-1/cancel",
		},
		{
			name: "cancel-applyment by applyment_id only",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				res, err := c.CancelApplyment(ctx, CancelApplymentRequest{ApplymentID: 20000011111})
				return nil, res, err
			},
			status: 204,
			method: "POST", uri: "/v3/apply4subject/applyment/20000011111/cancel",
		},
		{
			name: "apply-cancel-withdraw without payee",
			call: func(ctx context.Context, c *Client) (any, *Result, error) {
				return c.ApplyCancelWithdraw(ctx, ApplyCancelWithdrawRequest{SubMchid: "1900000109", OutRequestNo: "P1", Withdraw: NotApplyWithdraw,
					ProofMedias: []ProofMedia{{ProofMediaType: "CANCEL_LETTER", ProofMedia: "media-1"}}, Remark: "备注"})
			},
			status: 200,
			answer: `{"applyment_id":"X9","out_request_no":"P1"}`,
			method: "POST", uri: "/v3/ecommerce/account/apply-cancel-withdraw",
			wantBody: `{"sub_mchid":"1900000109","out_request_no":"P1","withdraw":"NOT_APPLY_WITHDRAW","proof_medias":[{"proof_media_type":"CANCEL_LETTER","proof_media":"media-1"}],"remark":"备注"}`,
			want:     ApplyCancelWithdrawResponse{ApplymentID: "X9", OutRequestNo: "P1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
				s.reply(w, tt.status, tt.answer)
			})
			c := newTestClient(t, clk, srv.URL, func(cfg *Config) { cfg.UserAgent = "wxcancel-test/1" })
			got, res, err := tt.call(t.Context(), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decoded\n got %#v\nwant %#v", got, tt.want)
			}
			if res.StatusCode != tt.status || res.Attempts != 1 || res.Ambiguous || res.RequestID != "req-"+itoa(tt.status) {
				t.Errorf("result = %+v", res)
			}
			if res.Host != strings.TrimPrefix(srv.URL, "http://") {
				t.Errorf("Host = %q, want the server", res.Host)
			}
			if tt.answer == "" && res.Body != nil {
				t.Errorf("Body = %q, want nil for %d", res.Body, tt.status)
			}
			if tt.answer != "" && string(res.Body) != tt.answer {
				t.Errorf("Body = %s, want the raw answer", res.Body)
			}

			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("server saw %d requests", len(reqs))
			}
			rq := reqs[0]
			if rq.Method != tt.method || rq.URI != tt.uri {
				t.Errorf("request line %s %s, want %s %s", rq.Method, rq.URI, tt.method, tt.uri)
			}
			if string(rq.Body) != tt.wantBody {
				t.Errorf("body\n got %s\nwant %s", rq.Body, tt.wantBody)
			}
			if rq.SigErr != nil {
				t.Errorf("request signature does not verify over the wire message: %v", rq.SigErr)
			}
			if rq.Auth.MchID != testMchID || rq.Auth.SerialNo != testMchSerial || rq.Auth.Timestamp != itoa64(testEpoch.Unix()) || len(rq.Auth.Nonce) != 32 {
				t.Errorf("authorization = %v", rq.Auth)
			}
			wantHeaders := map[string]string{
				"Accept":           "application/json",
				"User-Agent":       "wxcancel-test/1",
				"Wechatpay-Serial": testPubKeyID,
			}
			if tt.wantBody != "" {
				wantHeaders["Content-Type"] = "application/json"
			}
			for k, v := range wantHeaders {
				if got := rq.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.wantBody == "" && rq.Header.Get("Content-Type") != "" {
				t.Errorf("Content-Type %q sent without a body", rq.Header.Get("Content-Type"))
			}
		})
	}
}

// TestPathParameters: invalid identifiers are refused before any request;
// the others are escaped into exactly one path segment, and the signature
// covers the escaped form that went on the wire.
func TestPathParameters(t *testing.T) {
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		s.reply(w, 200, `{"sub_mchid":"x"}`)
	})
	c := newTestClient(t, clk, srv.URL)

	invalid := []struct {
		name  string
		value string
	}{
		{"empty", ""},
		{"dot", "."},
		{"dot dot", ".."},
		{"too long", strings.Repeat("9", MaxPathParam+1)},
	}
	for _, tt := range invalid {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			_, res, err := c.ValidateCancel(t.Context(), tt.value)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if res == nil || res.Attempts != 0 {
				t.Fatalf("result = %+v, want one with 0 attempts", res)
			}
			if Retryable(err) {
				t.Error("an invalid argument is retryable")
			}
		})
	}
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("invalid parameters reached the server %d times", n)
	}
	if _, err := c.CancelApplyment(t.Context(), CancelApplymentRequest{}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("cancel-applyment without identifiers: %v", err)
	}
	if _, err := c.CancelApplyment(t.Context(), CancelApplymentRequest{ApplymentID: -5}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("cancel-applyment with a negative id: %v", err)
	}
	if _, err := c.CancelApplyment(t.Context(), CancelApplymentRequest{BusinessCode: ".."}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("cancel-applyment with business_code '..': %v", err)
	}

	escaped := []struct {
		value   string
		wantURI string
	}{
		{"a/b", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/a%2Fb"},
		{"../../../v3/other", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/..%2F..%2F..%2Fv3%2Fother"},
		{"x?applyment_id=1#frag", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/x%3Fapplyment_id=1%23frag"},
		{"@evil.example:443", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/@evil.example:443"},
		{"%2e%2e", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/%252e%252e"},
		{"商户 1", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/%E5%95%86%E6%88%B7%201"},
		{"a\r\nHost: evil", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/a%0D%0AHost:%20evil"},
	}
	for _, tt := range escaped {
		t.Run("escaped/"+tt.value, func(t *testing.T) {
			before := len(srv.Requests())
			if _, _, err := c.ValidateCancel(t.Context(), tt.value); err != nil {
				t.Fatal(err)
			}
			reqs := srv.Requests()
			if len(reqs) != before+1 {
				t.Fatalf("server saw %d new requests", len(reqs)-before)
			}
			rq := reqs[len(reqs)-1]
			if rq.URI != tt.wantURI {
				t.Errorf("request URI %s, want %s", rq.URI, tt.wantURI)
			}
			if want := "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/" + tt.value; rq.Path != want {
				t.Errorf("server decoded path %q, want %q", rq.Path, want)
			}
			if rq.SigErr != nil {
				t.Errorf("signature does not cover the URI as sent: %v", rq.SigErr)
			}
		})
	}
}

// TestApplyCancelWithdrawEncryptsOnce: the four sensitive fields leave the
// client encrypted with the WeChat Pay key named by Wechatpay-Serial, the
// caller's request is untouched, and a retry resends the same bytes.
func TestApplyCancelWithdrawEncryptsOnce(t *testing.T) {
	plain := map[string]string{
		"account_name":        "深圳某某科技有限公司",
		"account_number":      "6222021234567890123",
		"identification_name": "张三",
		"identification_no":   "110101199003071234",
	}
	req := ApplyCancelWithdrawRequest{
		SubMchid: "1900000109", OutRequestNo: "P20250101", Withdraw: ApplyWithdraw,
		PayeeInfo: &PayeeInfo{
			AccountType: AccountCorporate,
			BankAccountInfo: &BankAccountInfo{AccountName: plain["account_name"], AccountBank: "工商银行",
				BankName: "中国工商银行股份有限公司深圳分行", AccountNumber: plain["account_number"]},
			IdentityInfo: &IdentityInfo{IDDocType: "IDCARD", IdentificationName: plain["identification_name"], IdentificationNo: plain["identification_no"]},
		},
	}
	orig := *req.PayeeInfo.BankAccountInfo
	origID := *req.PayeeInfo.IdentityInfo

	tests := []struct {
		name       string
		verifier   func(t *testing.T, clk *fakeClock) *Verifier
		wantSerial string
	}{
		{"public key", func(t *testing.T, clk *fakeClock) *Verifier { return testVerifier(t, clk.Now) }, testPubKeyID},
		{"platform certificate", func(t *testing.T, clk *fakeClock) *Verifier {
			v, err := NewVerifier(VerifierConfig{Certificates: []*x509.Certificate{keys(t).cert}, Clock: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			return v
		}, CertificateSerial(keys(t).cert)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			srv := systemErrorsThen(t, clk, 1, `{"applyment_id":"X1","out_request_no":"P20250101"}`)
			srv.serial = tt.wantSerial
			c := newTestClient(t, clk, srv.URL, func(cfg *Config) { cfg.Verifier = tt.verifier(t, clk) })
			resp, res, err := c.ApplyCancelWithdraw(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ApplymentID != "X1" || res.Attempts != 2 {
				t.Fatalf("resp %+v, result %+v", resp, res)
			}
			reqs := srv.Requests()
			if string(reqs[0].Body) != string(reqs[1].Body) {
				t.Fatal("the retry sent different bytes")
			}
			for _, rq := range reqs {
				if got := rq.Header.Get("Wechatpay-Serial"); got != tt.wantSerial {
					t.Errorf("Wechatpay-Serial = %q, want %q", got, tt.wantSerial)
				}
			}
			for k, v := range plain {
				if strings.Contains(string(reqs[0].Body), v) {
					t.Errorf("%s left the client in plain text", k)
				}
			}
			var sent struct {
				PayeeInfo struct {
					AccountType     string `json:"account_type"`
					BankAccountInfo struct {
						AccountName   string `json:"account_name"`
						AccountNumber string `json:"account_number"`
						AccountBank   string `json:"account_bank"`
					} `json:"bank_account_info"`
					IdentityInfo struct {
						IDDocType          string `json:"id_doc_type"`
						IdentificationName string `json:"identification_name"`
						IdentificationNo   string `json:"identification_no"`
					} `json:"identity_info"`
				} `json:"payee_info"`
			}
			if err := json.Unmarshal(reqs[0].Body, &sent); err != nil {
				t.Fatal(err)
			}
			p := sent.PayeeInfo
			if p.AccountType != "ACCOUNT_TYPE_CORPORATE" || p.BankAccountInfo.AccountBank != "工商银行" || p.IdentityInfo.IDDocType != "IDCARD" {
				t.Errorf("plain fields changed: %+v", p)
			}
			for k, ct := range map[string]string{
				"account_name": p.BankAccountInfo.AccountName, "account_number": p.BankAccountInfo.AccountNumber,
				"identification_name": p.IdentityInfo.IdentificationName, "identification_no": p.IdentityInfo.IdentificationNo,
			} {
				if got := decryptOAEP(t, keys(t).wechat, ct); got != plain[k] {
					t.Errorf("%s decrypts to %q, want %q", k, got, plain[k])
				}
			}
		})
	}
	if *req.PayeeInfo.BankAccountInfo != orig || *req.PayeeInfo.IdentityInfo != origID {
		t.Error("ApplyCancelWithdraw modified the caller's request")
	}
}

func decryptOAEP(t *testing.T, key *rsa.PrivateKey, b64 string) string {
	t.Helper()
	ct, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("ciphertext is not standard Base64: %v", err)
	}
	pt, err := rsa.DecryptOAEP(sha1.New(), nil, key, ct, nil)
	if err != nil {
		t.Fatalf("RSAES-OAEP/SHA-1 decryption failed: %v", err)
	}
	return string(pt)
}
