package wxpay

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAPIErrors: every kind of HTTP error answer becomes the right error.
func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler func(s *wxServer, w http.ResponseWriter)
		want    APIError
	}{
		{
			name: "signed JSON with detail",
			handler: func(s *wxServer, w http.ResponseWriter) {
				s.reply(w, 400, `{"code":"PARAM_ERROR","message":"参数错误","detail":{"field":"/sub_mchid","value":"abc","issue":"must be digits","location":"body"}}`)
			},
			want: APIError{StatusCode: 400, Code: "PARAM_ERROR", Message: "参数错误", RequestID: "req-400", Signed: true,
				Detail: json.RawMessage(`{"field":"/sub_mchid","value":"abc","issue":"must be digits","location":"body"}`)},
		},
		{
			name: "signed business error",
			handler: func(s *wxServer, w http.ResponseWriter) {
				s.reply(w, 403, `{"code":"RULE_LIMIT","message":"无需确认"}`)
			},
			want: APIError{StatusCode: 403, Code: "RULE_LIMIT", Message: "无需确认", RequestID: "req-403", Signed: true},
		},
		{
			name: "unsigned JSON",
			handler: func(s *wxServer, w http.ResponseWriter) {
				s.replyUnsigned(w, 401, `{"code":"SIGN_ERROR","message":"签名错误"}`)
			},
			want: APIError{StatusCode: 401, Code: "SIGN_ERROR", Message: "签名错误", RequestID: "req-unsigned"},
		},
		{
			name: "unsigned HTML",
			handler: func(s *wxServer, w http.ResponseWriter) {
				s.replyUnsigned(w, 500, "<html>\n\t<body>Internal\x00 error\xff</body>\n</html>")
			},
			want: APIError{StatusCode: 500, Code: "INTERNAL_SERVER_ERROR", Message: "<html> <body>Internal? error?</body> </html>", RequestID: "req-unsigned"},
		},
		{
			name:    "unsigned empty body",
			handler: func(s *wxServer, w http.ResponseWriter) { s.replyUnsigned(w, 404, "") },
			want:    APIError{StatusCode: 404, Code: "NOT_FOUND", Message: "Not Found", RequestID: "req-unsigned"},
		},
		{
			name:    "JSON without a code",
			handler: func(s *wxServer, w http.ResponseWriter) { s.reply(w, 409, `{"message":"conflict"}`) },
			want:    APIError{StatusCode: 409, Code: "CONFLICT", Message: `{"message":"conflict"}`, RequestID: "req-409", Signed: true},
		},
		{
			name: "unsigned long body is cut",
			handler: func(s *wxServer, w http.ResponseWriter) {
				s.replyUnsigned(w, 418, strings.Repeat("x", 2*MaxErrorBody))
			},
			want: APIError{StatusCode: 418, Code: "IM_A_TEAPOT", Message: strings.Repeat("x", maxExcerpt) + "…", RequestID: "req-unsigned"},
		},
		{
			name: "signed 502 is WeChat Pay's own answer",
			handler: func(s *wxServer, w http.ResponseWriter) {
				s.reply(w, 502, `{"code":"SERVICE_UNAVAILABLE","message":"服务不可用"}`)
			},
			want: APIError{StatusCode: 502, Code: "SERVICE_UNAVAILABLE", Message: "服务不可用", RequestID: "req-502", Signed: true},
		},
		{
			name: "redirect is not followed",
			handler: func(s *wxServer, w http.ResponseWriter) {
				w.Header().Set("Location", "https://evil.example/steal")
				s.replyUnsigned(w, 302, "")
			},
			want: APIError{StatusCode: 302, Code: "FOUND", Message: "Found", RequestID: "req-unsigned"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { tt.handler(s, w) })
			c := newTestClient(t, clk, srv.URL)
			_, res, err := c.QueryCancelApplication(t.Context(), "A1", noRetry)
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %T %v, want *APIError", err, err)
			}
			want := tt.want
			want.Method, want.Path = "GET", "/v3/ecommerce/account/cancel-applications/out-apply-no/A1"
			if string(ae.Detail) != string(want.Detail) {
				t.Errorf("Detail = %s, want %s", ae.Detail, want.Detail)
			}
			ae.Detail, want.Detail = nil, nil
			if !reflect.DeepEqual(*ae, want) {
				t.Errorf("error\n got %+v\nwant %+v", *ae, want)
			}
			if res.StatusCode != want.StatusCode || res.RequestID != want.RequestID || res.Attempts != 1 || res.Body != nil {
				t.Errorf("result = %+v", res)
			}
			for _, s := range []string{want.Code, strconv.Itoa(want.StatusCode), want.RequestID} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q lacks %q", err, s)
				}
			}
			if errors.Is(err, ErrAmbiguous) {
				t.Error("an answered GET is ambiguous")
			}
		})
	}
}

// TestSignatureFailures: every reason a signature is refused, on success and
// on error answers; none is retried.
func TestSignatureFailures(t *testing.T) {
	body := `{"out_apply_no":"A1","cancel_state":"REVIEWING"}`
	tests := []struct {
		name   string
		status int
		certs  bool // verify with the platform certificates instead of the public key
		sign   func(h http.Header, now time.Time)
		want   SignatureReason
	}{
		{"no headers at all", 200, false, func(h http.Header, now time.Time) {}, SignatureMissing},
		{"no signature", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(body))
			h.Del(HeaderSignature)
			h.Set(HeaderSignature, "")
		}, SignatureMissing},
		{"no nonce", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(body))
			h.Del(HeaderNonce)
		}, SignatureMissing},
		{"timestamp not a number", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(body))
			h.Set(HeaderTimestamp, "17x")
		}, SignatureMalformed},
		{"signature not Base64", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(body))
			h.Set(HeaderSignature, "***not base64***")
		}, SignatureMalformed},
		{"unknown serial", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).other, testOtherSerial, now, "n1", []byte(body))
		}, SignatureUnknownSerial},
		{"stale timestamp", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now.Add(-MaxClockSkew), "n1", []byte(body))
		}, SignatureExpired},
		{"timestamp from the future", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now.Add(6*time.Minute), "n1", []byte(body))
		}, SignatureExpired},
		{"timestamp centuries ahead", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, time.Unix(99999999999, 0), "n1", []byte(body))
		}, SignatureExpired},
		{"timestamp past what a duration holds", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, time.Unix(9000000000000000000, 0), "n1", []byte(body))
		}, SignatureExpired},
		{"timestamp far in the past", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, time.Unix(-9000000000000000000, 0), "n1", []byte(body))
		}, SignatureExpired},
		{"probe", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(body))
			h.Set(HeaderSignature, ProbeSignaturePrefix+h.Get(HeaderSignature))
		}, SignatureProbe},
		{"signed by another key", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).other, testPubKeyID, now, "n1", []byte(body))
		}, SignatureMismatch},
		{"body tampered", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(strings.Replace(body, "REVIEWING", "CANCEL_SUCCESS", 1)))
		}, SignatureMismatch},
		{"nonce swapped", 200, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(body))
			h.Set(HeaderNonce, "n2")
		}, SignatureMismatch},
		{"expired platform certificate", 200, true, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, CertificateSerial(keys(t).expired), now, "n1", []byte(body))
		}, SignatureCertificateExpired},
		{"signed error answer, bad signature", 500, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).other, testPubKeyID, now, "n1", []byte(body))
		}, SignatureMismatch},
		{"signed error answer, probe", 400, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).wechat, testPubKeyID, now, "n1", []byte(body))
			h.Set(HeaderSignature, ProbeSignaturePrefix+"x")
		}, SignatureProbe},
		{"signed 202, mismatch", 202, false, func(h http.Header, now time.Time) {
			signResponse(h, keys(t).other, testPubKeyID, now, "n1", []byte(body))
		}, SignatureMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
				tt.sign(w.Header(), clk.Now())
				w.Header().Set("Request-Id", "rid-1")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(body))
			})
			c := newTestClient(t, clk, srv.URL, func(cfg *Config) {
				if tt.certs {
					v, err := NewVerifier(VerifierConfig{Certificates: []*x509.Certificate{keys(t).cert, keys(t).expired}, Clock: clk.Now})
					if err != nil {
						t.Fatal(err)
					}
					cfg.Verifier = v
				}
			})
			hooks := &hookLog{}
			_, res, err := c.QueryCancelApplication(t.Context(), "A1", hooks.option())
			var se *SignatureError
			if !errors.As(err, &se) {
				t.Fatalf("err = %T %v, want *SignatureError", err, err)
			}
			if se.Reason != tt.want {
				t.Errorf("reason = %s, want %s (%v)", se.Reason, tt.want, err)
			}
			if !errors.Is(err, ErrSignature) || Retryable(err) {
				t.Errorf("errors.Is(ErrSignature) = %v, Retryable = %v", errors.Is(err, ErrSignature), Retryable(err))
			}
			var ae *APIError
			if errors.As(err, &ae) {
				t.Error("a refused signature also reads as an APIError")
			}
			if res.Attempts != 1 || len(srv.Requests()) != 1 {
				t.Errorf("attempts = %d, server saw %d; a signature failure must not be retried", res.Attempts, len(srv.Requests()))
			}
			if res.Body != nil || res.StatusCode != tt.status {
				t.Errorf("result = %+v", res)
			}
			if !strings.Contains(err.Error(), "rid-1") || !strings.Contains(err.Error(), string(tt.want)) {
				t.Errorf("message %q lacks the request id or reason", err)
			}
			if a := hooks.all(); len(a) != 1 || !errors.As(a[0].Err, &se) || a[0].Retry {
				t.Errorf("hook saw %+v", a)
			}
		})
	}
}

// TestEchoedHeadersBounded: the headers an error or a result repeats
// (Wechatpay-Serial, Request-Id) are cut to a printable excerpt, whatever
// size a server or a proxy sends: they end up in outcome events and logs.
func TestEchoedHeadersBounded(t *testing.T) {
	clk := newFakeClock()
	huge := strings.Repeat("S", 100_000)
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		signResponse(w.Header(), keys(t).wechat, huge, clk.Now(), "n1", []byte(`{}`))
		w.Header().Set("Request-Id", strings.Repeat("R", 100_000))
		w.WriteHeader(200)
		_, _ = w.Write([]byte(`{}`))
	})
	_, res, err := newTestClient(t, clk, srv.URL).QueryCancelApplication(t.Context(), "A1", noRetry)
	var se *SignatureError
	if !errors.As(err, &se) || se.Reason != SignatureUnknownSerial {
		t.Fatalf("err = %v, want an unknown serial", err)
	}
	if len(se.Serial) > 70 || len(res.RequestID) > 140 || len(err.Error()) > 1000 {
		t.Errorf("echoed %d-byte serial, %d-byte request id, %d-byte message", len(se.Serial), len(res.RequestID), len(err.Error()))
	}
}

// TestServerErrorToPOSTIsAmbiguous: a POST answered with a server error
// (SYSTEM_ERROR) or 202 may have been executed, even when a retry is then
// refused or succeeds; other answers, and any answer to a GET, leave no doubt.
func TestServerErrorToPOSTIsAmbiguous(t *testing.T) {
	tests := []struct {
		name   string
		post   bool
		first  int
		answer string
		want   bool
	}{
		{"POST, SYSTEM_ERROR then refused", true, 500, `{"code":"SYSTEM_ERROR","message":"系统异常"}`, true},
		{"POST, 202 then refused", true, 202, `{"code":"SYSTEM_ERROR","message":"处理中"}`, true},
		{"POST, 429 then refused", true, 429, `{"code":"FREQUENCY_LIMITED","message":"请降低频率后重试"}`, false},
		{"GET, SYSTEM_ERROR then refused", false, 500, `{"code":"SYSTEM_ERROR","message":"系统异常"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					s.reply(w, tt.first, tt.answer)
					return
				}
				s.reply(w, 403, `{"code":"RULE_LIMIT","message":"申请单状态不是待确认"}`)
			})
			c := newTestClient(t, clk, srv.URL)
			var res *Result
			var err error
			if tt.post {
				_, res, err = c.ConfirmCancel(t.Context(), ConfirmCancelRequest{ApplymentID: "X1", SubMchid: "1900000109",
					OperatorIdentification: "operator7", ConfirmTime: "2025-01-02T03:04:05+08:00", CancelContractVersion: "V1"})
			} else {
				_, res, err = c.QueryCancelApplication(t.Context(), "A1")
			}
			var ae *APIError
			if !errors.As(err, &ae) || ae.Code != "RULE_LIMIT" || res.Attempts != 2 {
				t.Fatalf("err = %v after %d attempts, want RULE_LIMIT on the retry", err, res.Attempts)
			}
			if res.Ambiguous != tt.want {
				t.Errorf("Ambiguous = %v, want %v", res.Ambiguous, tt.want)
			}
		})
	}
}

// TestTransportErrors: no usable answer becomes a TransportError that says
// whether the request went out.
func TestTransportErrors(t *testing.T) {
	tests := []struct {
		name          string
		post          bool
		handler       func(s *wxServer, w http.ResponseWriter, r *http.Request)
		wantSent      bool
		wantAmbiguous bool
		wantStatus    int
		check         func(t *testing.T, err error)
	}{
		{
			name:    "hung GET hits the attempt timeout",
			handler: func(s *wxServer, w http.ResponseWriter, r *http.Request) { s.hang(r) },
			check: func(t *testing.T, err error) {
				var te *attemptTimeoutError
				if !errors.As(err, &te) {
					t.Errorf("cause is not the attempt timeout: %v", err)
				}
				if errors.Is(err, context.DeadlineExceeded) {
					t.Error("an attempt timeout reads as the caller's deadline")
				}
			},
			wantSent: true,
		},
		{
			name:          "hung POST is ambiguous",
			post:          true,
			handler:       func(s *wxServer, w http.ResponseWriter, r *http.Request) { s.hang(r) },
			wantSent:      true,
			wantAmbiguous: true,
		},
		{
			name:     "GET connection dropped",
			handler:  func(s *wxServer, w http.ResponseWriter, r *http.Request) { drop(w) },
			wantSent: true,
		},
		{
			name:          "POST connection dropped after the request was read",
			post:          true,
			handler:       func(s *wxServer, w http.ResponseWriter, r *http.Request) { drop(w) },
			wantSent:      true,
			wantAmbiguous: true,
		},
		{
			name: "body cut short",
			handler: func(s *wxServer, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100")
				w.WriteHeader(200)
				_, _ = w.Write([]byte(`{"out_apply_no":`))
				w.(http.Flusher).Flush()
				drop(w)
			},
			wantSent:   true,
			wantStatus: 200,
		},
		{
			name: "unsigned 502 from a gateway",
			handler: func(s *wxServer, w http.ResponseWriter, r *http.Request) {
				s.replyUnsigned(w, 502, "<html>Bad Gateway</html>")
			},
			wantSent:   true,
			wantStatus: 502,
			check: func(t *testing.T, err error) {
				var ge *gatewayError
				if !errors.As(err, &ge) || !strings.Contains(err.Error(), "502") {
					t.Errorf("cause is not the gateway: %v", err)
				}
			},
		},
		{
			name:          "unsigned 504 to a POST is ambiguous",
			post:          true,
			handler:       func(s *wxServer, w http.ResponseWriter, r *http.Request) { s.replyUnsigned(w, 504, "") },
			wantSent:      true,
			wantAmbiguous: true,
			wantStatus:    504,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { tt.handler(s, w, r) })
			c := newTestClient(t, clk, srv.URL, func(cfg *Config) { cfg.AttemptTimeout = 100 * time.Millisecond })
			var res *Result
			var err error
			if tt.post {
				_, res, err = c.ConfirmCancel(t.Context(), ConfirmCancelRequest{ApplymentID: "X1", SubMchid: "1900000109",
					OperatorIdentification: "operator7", ConfirmTime: "2025-01-02T03:04:05+08:00", CancelContractVersion: "V1"}, noRetry)
			} else {
				_, res, err = c.QueryCancelApplication(t.Context(), "A1", noRetry)
			}
			var te *TransportError
			if !errors.As(err, &te) {
				t.Fatalf("err = %T %v, want *TransportError", err, err)
			}
			if te.Sent != tt.wantSent || te.Host != strings.TrimPrefix(srv.URL, "http://") {
				t.Errorf("error = %+v", te)
			}
			if errors.Is(err, ErrAmbiguous) != tt.wantAmbiguous || res.Ambiguous != tt.wantAmbiguous {
				t.Errorf("ambiguous: errors.Is = %v, Result = %v, want %v", errors.Is(err, ErrAmbiguous), res.Ambiguous, tt.wantAmbiguous)
			}
			if !Retryable(err) {
				t.Error("a transport failure is not retryable")
			}
			if res.Attempts != 1 || res.StatusCode != tt.wantStatus {
				t.Errorf("result = %+v", res)
			}
			if strings.Contains(err.Error(), "operator7") || strings.Contains(err.Error(), AuthScheme) {
				t.Errorf("message leaks the request: %v", err)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
		})
	}
}

// TestResponseTooLarge: bodies that would have to be verified are refused
// beyond their limit.
func TestResponseTooLarge(t *testing.T) {
	tests := []struct {
		name   string
		status int
		size   int
	}{
		{"success over 1 MiB", 200, MaxSuccessBody + 1},
		{"signed error over 64 KiB", 500, MaxErrorBody + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			big := `{"out_apply_no":"` + strings.Repeat("a", tt.size) + `"}`
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { s.reply(w, tt.status, big) })
			c := newTestClient(t, clk, srv.URL)
			_, res, err := c.QueryCancelApplication(t.Context(), "A1")
			if !errors.Is(err, ErrResponseTooLarge) || Retryable(err) {
				t.Fatalf("err = %v, want ErrResponseTooLarge, not retryable", err)
			}
			if res.Attempts != 1 || res.Body != nil {
				t.Errorf("result = %+v", res)
			}
		})
	}
	// Just under the limit is fine.
	clk := newFakeClock()
	ok := `{"out_apply_no":"` + strings.Repeat("a", MaxSuccessBody-20) + `"}`
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { s.reply(w, 200, ok) })
	got, _, err := newTestClient(t, clk, srv.URL).QueryCancelApplication(t.Context(), "A1")
	if err != nil || len(got.OutApplyNo) != MaxSuccessBody-20 {
		t.Fatalf("a body under the limit: %v", err)
	}
}

// TestDecodeFailure: a verified body that is not the expected JSON fails
// without retrying.
func TestDecodeFailure(t *testing.T) {
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		s.reply(w, 200, `{"sub_mchid": 12}`)
	})
	_, res, err := newTestClient(t, clk, srv.URL).ValidateCancel(t.Context(), "1900000109")
	if err == nil || Retryable(err) || res.Attempts != 1 || string(res.Body) != `{"sub_mchid": 12}` {
		t.Fatalf("err = %v, result = %+v", err, res)
	}
}

func TestRetryable(t *testing.T) {
	api := func(status int) error { return &APIError{StatusCode: status, Code: statusCode(status)} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"500 SYSTEM_ERROR", api(500), true},
		{"502 signed", api(502), true},
		{"503", api(503), true},
		{"429", api(429), true},
		{"202", api(202), true},
		{"wrapped 500", fmt.Errorf("calling: %w", api(500)), true},
		{"400", api(400), false},
		{"401", api(401), false},
		{"403", api(403), false},
		{"404", api(404), false},
		{"409", api(409), false},
		{"302", api(302), false},
		{"transport, not sent", &TransportError{Method: "GET", Err: errors.New("connection refused")}, true},
		{"transport, ambiguous POST", &TransportError{Method: "POST", Sent: true, Err: errors.New("EOF")}, true},
		{"attempt timeout", &TransportError{Method: "GET", Sent: true, Err: &attemptTimeoutError{limit: time.Second}}, true},
		{"signature", &responseError{err: &SignatureError{Reason: SignatureMismatch}}, false},
		{"too large", &responseError{err: &tooLargeError{limit: 1}}, false},
		{"invalid argument", invalidArgument("x"), false},
		{"context canceled", context.Canceled, false},
		{"context deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"call cancelled after a 500", &canceledError{ctxErr: context.Canceled, last: api(500)}, false},
		{"call cancelled mid-request", &canceledError{ctxErr: context.Canceled, last: &TransportError{Method: "POST", Sent: true, Err: context.Canceled}}, false},
		{"other", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestHasCode(t *testing.T) {
	notFound := &APIError{StatusCode: 404, Code: CodeNotFound}
	tests := []struct {
		name  string
		err   error
		codes []string
		want  bool
	}{
		{"the code", notFound, []string{CodeNotFound}, true},
		{"one of several", notFound, []string{CodeRuleLimit, CodeNotFound}, true},
		{"wrapped", fmt.Errorf("querying: %w", notFound), []string{CodeNotFound}, true},
		{"another code", notFound, []string{CodeRuleLimit}, false},
		{"no codes", notFound, nil, false},
		{"not an APIError", &TransportError{Method: "GET", Err: errors.New("EOF")}, []string{CodeNotFound}, false},
		{"nil", nil, []string{CodeNotFound}, false},
	}
	for _, tt := range tests {
		if got := HasCode(tt.err, tt.codes...); got != tt.want {
			t.Errorf("%s: HasCode = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestTransportErrorIs(t *testing.T) {
	tests := []struct {
		method string
		sent   bool
		want   bool
	}{
		{"POST", true, true},
		{"POST", false, false},
		{"GET", true, false},
		{"GET", false, false},
	}
	for _, tt := range tests {
		cause := errors.New("EOF")
		err := fmt.Errorf("ctx: %w", &TransportError{Method: tt.method, Sent: tt.sent, Host: "h", Path: "/p", Err: cause})
		if errors.Is(err, ErrAmbiguous) != tt.want {
			t.Errorf("%s sent=%v: errors.Is(ErrAmbiguous) = %v", tt.method, tt.sent, !tt.want)
		}
		if !errors.Is(err, cause) {
			t.Error("TransportError does not unwrap to its cause")
		}
	}
}

func TestPrintable(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"  lead and trail  ", "lead and trail"},
		{"a\n\n\tb", "a b"},
		{"bell\x07", "bell?"},
		{"bad\xffutf8", "bad?utf8"},
		{"汉字", "汉字"},
		{strings.Repeat("y", 250), strings.Repeat("y", 200) + "…"},
	}
	for _, tt := range tests {
		if got := printable(tt.in, 200); got != tt.want {
			t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
