package wxpaysim_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

func TestNewOptions(t *testing.T) {
	t.Parallel()
	key, _ := sharedKeys(t)
	for _, tc := range []struct {
		name string
		o    wxpaysim.Options
		ok   bool
	}{
		{"defaults with a key", wxpaysim.Options{Key: key}, true},
		{"largest signature cache TTL", wxpaysim.Options{Key: key, SignatureCacheTTL: wxpaysim.MaxSignatureCacheTTL}, true},
		{"signature cache TTL too long", wxpaysim.Options{Key: key, SignatureCacheTTL: wxpaysim.MaxSignatureCacheTTL + time.Nanosecond}, false},
		{"negative signature cache TTL", wxpaysim.Options{Key: key, SignatureCacheTTL: -time.Second}, false},
		{"negative step", wxpaysim.Options{Key: key, Step: -time.Second}, false},
		{"negative latency", wxpaysim.Options{Key: key, Latency: -time.Second}, false},
		{"negative request log", wxpaysim.Options{Key: key, RequestLog: -1}, false},
		{"public key id without prefix", wxpaysim.Options{Key: key, PublicKeyID: "0114232134912410000000000000"}, false},
		{"public key id that is only the prefix", wxpaysim.Options{Key: key, PublicKeyID: wxpay.PublicKeyIDPrefix}, false},
		{"custom public key id", wxpaysim.Options{Key: key, PublicKeyID: "PUB_KEY_ID_0114232134912410000000000000"}, true},
	} {
		s, err := wxpaysim.New(tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("%s: New error %v, want ok %v", tc.name, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if want := tc.o.PublicKeyID; want != "" && s.PublicKeyID() != want {
			t.Errorf("%s: PublicKeyID %q, want %q", tc.name, s.PublicKeyID(), want)
		}
		if !regexp.MustCompile(`^PUB_KEY_ID_[0-9]{28}$`).MatchString(s.PublicKeyID()) {
			t.Errorf("%s: PublicKeyID %q", tc.name, s.PublicKeyID())
		}
		if !s.PublicKey().Equal(&key.PublicKey) {
			t.Errorf("%s: PublicKey is not the given key's", tc.name)
		}
	}
}

// TestNewGeneratesKey checks that New without a key makes a working WeChat
// Pay key of its own: responses verify with PublicKey and payee fields
// encrypted with it decrypt.
func TestNewGeneratesKey(t *testing.T) {
	t.Parallel()
	_, m := sharedKeys(t)
	sim, err := wxpaysim.New(wxpaysim.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if sim.PublicKey().N.BitLen() != 2048 || !strings.HasPrefix(sim.PublicKeyID(), wxpay.PublicKeyIDPrefix) {
		t.Fatalf("key of %d bits, id %q", sim.PublicKey().N.BitLen(), sim.PublicKeyID())
	}
	sim.RegisterMerchant(m)
	sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	srv := newServer(t, sim)
	cfg, err := sim.ClientConfig(m, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := wxpay.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	payee := &wxpay.PayeeInfo{AccountType: wxpay.AccountPersonal, BankAccountInfo: &wxpay.BankAccountInfo{AccountName: "李四", AccountNumber: "6222020000000000"}}
	got, _, err := c.ApplyCancelWithdraw(t.Context(), wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: "GEN1", Withdraw: wxpay.ApplyWithdraw, PayeeInfo: payee})
	if err != nil {
		t.Fatalf("ApplyCancelWithdraw: %v", err)
	}
	if a, _ := sim.CancelWithdraw(got.ApplymentID); a.Payee == nil || *a.Payee.BankAccountInfo != *payee.BankAccountInfo {
		t.Errorf("decrypted payee %+v", a.Payee)
	}
}

// TestAuthentication sends hand-built requests and checks that the
// simulator refuses what WeChat Pay refuses, with a signed 401 SIGN_ERROR.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	// A second merchant with the same key: nonces are per merchant.
	e.sim.Register("1900000002", "0A1B", &e.merchant.Key.PublicKey)
	const uri = "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/" + subMchid
	key := e.merchant.Key
	sign := func(mchID, serial string, at time.Time, nonce, method, signedURI string, body []byte) string {
		signer := e.signer()
		if mchID != "" {
			var err error
			if signer, err = wxpay.NewSigner(mchID, serial, key); err != nil {
				t.Fatal(err)
			}
		}
		auth, err := signer.Authorization(method, signedURI, body, at.Unix(), nonce)
		if err != nil {
			t.Fatal(err)
		}
		return auth
	}
	now := e.clock.Now()
	wrongKey, err := wxpay.NewSigner(e.merchant.MchID, e.merchant.SerialNo, wechatKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := wrongKey.Authorization("GET", uri, nil, now.Unix(), "FORGED1")
	if err != nil {
		t.Fatal(err)
	}
	reused := sign("", "", now, "REUSED", "GET", uri, nil)

	tests := []struct {
		name   string
		auth   string
		uri    string
		status int
	}{
		{"valid", sign("", "", now, "N1", "GET", uri, nil), uri, 200},
		{"missing Authorization", "", uri, 401},
		{"another scheme", "Bearer abc", uri, 401},
		{"Authorization without signature", strings.Split(sign("", "", now, "N2", "GET", uri, nil), `,signature=`)[0], uri, 401},
		{"Authorization with a non-numeric timestamp", strings.Replace(sign("", "", now, "N3", "GET", uri, nil), `timestamp="`, `timestamp="x`, 1), uri, 401},
		{"signature not Base64", regexp.MustCompile(`signature="[^"]*"`).ReplaceAllString(sign("", "", now, "N4", "GET", uri, nil), `signature="!!!"`), uri, 401},
		{"signed by another key", forged, uri, 401},
		{"signed for another path", sign("", "", now, "N5", "GET", uri+"0", nil), uri, 401},
		{"signed as POST", sign("", "", now, "N6", "POST", uri, nil), uri, 401},
		{"timestamp 5 minutes old", sign("", "", now.Add(-5*time.Minute), "N7", "GET", uri, nil), uri, 401},
		{"timestamp 5 minutes ahead", sign("", "", now.Add(5*time.Minute), "N8", "GET", uri, nil), uri, 401},
		{"timestamp centuries ahead", sign("", "", time.Unix(9000000000000000000, 0), "N11", "GET", uri, nil), uri, 401},
		{"timestamp just under 5 minutes old", sign("", "", now.Add(-5*time.Minute+time.Second), "N9", "GET", uri, nil), uri, 200},
		{"timestamp just under 5 minutes ahead", sign("", "", now.Add(5*time.Minute-time.Second), "N10", "GET", uri, nil), uri, 200},
		{"unknown merchant", sign("1900000003", e.merchant.SerialNo, now, "N11", "GET", uri, nil), uri, 401},
		{"wrong serial", sign(e.merchant.MchID, "ABCDEF0123", now, "N12", "GET", uri, nil), uri, 401},
		{"serial in lower case with a leading zero", sign(e.merchant.MchID, "0"+strings.ToLower(e.merchant.SerialNo), now, "N13", "GET", uri, nil), uri, 200},
		{"first use of a nonce", reused, uri, 200},
		{"reused nonce", reused, uri, 401},
		{"reused nonce with a new signature", sign("", "", now.Add(time.Second), "REUSED", "GET", uri, nil), uri, 401},
		{"the same nonce from another merchant", sign("1900000002", "0a1b", now, "REUSED", "GET", uri, nil), uri, 200},
	}
	v := e.verifier()
	for _, tc := range tests {
		r := e.do("GET", tc.uri, nil, tc.auth, nil)
		if r.Status != tc.status {
			t.Errorf("%s: HTTP %d, want %d: %s", tc.name, r.Status, tc.status, r.Body)
			continue
		}
		if err := v.Verify(r.Header, r.Body); err != nil {
			t.Errorf("%s: the answer does not verify: %v", tc.name, err)
		}
		if r.Header.Get(wxpay.HeaderRequestID) == "" {
			t.Errorf("%s: no Request-ID", tc.name)
		}
		if tc.status == 401 {
			var b struct{ Code, Message string }
			if err := json.Unmarshal(r.Body, &b); err != nil || b.Code != "SIGN_ERROR" || b.Message == "" {
				t.Errorf("%s: body %s, want SIGN_ERROR with a message", tc.name, r.Body)
			}
		}
	}
	if n := e.sim.Count(wxpaysim.EndpointValidateCancel); n != len(tests) {
		t.Errorf("Count = %d, want %d: refused requests count too", n, len(tests))
	}
	if got := e.sim.Requests()[len(tests)-1].MchID; got != "1900000002" {
		t.Errorf("last request recorded for merchant %q", got)
	}

	// A nonce is remembered for twice the timestamp window, then accepted
	// again.
	e.clock.Advance(10 * time.Minute)
	if r := e.do("GET", uri, nil, sign("", "", e.clock.Now(), "REUSED", "GET", uri, nil), nil); r.Status != 200 {
		t.Errorf("nonce reused after 10 minutes: HTTP %d %s", r.Status, r.Body)
	}

	// The client reports a refusal as a signed 401 that is not retried.
	other, err := wxpaysim.New(wxpaysim.Options{Key: wechatKey, Clock: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, other) // knows no merchant
	cfg, err := other.ClientConfig(e.merchant, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Retry, cfg.Sleep = fastRetry, e.sleeper.Sleep
	c, err := wxpay.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	_, res, err := c.ValidateCancel(t.Context(), subMchid)
	var apiErr *wxpay.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "SIGN_ERROR" || !apiErr.Signed {
		t.Fatalf("error %v, want a signed 401 SIGN_ERROR", err)
	}
	if wxpay.Retryable(err) || res.Attempts != 1 || other.Count(wxpaysim.EndpointValidateCancel) != 1 {
		t.Errorf("retryable %v, %d attempts: a refused signature must not be retried", wxpay.Retryable(err), res.Attempts)
	}
}

// TestRouting checks the answers to unknown paths and wrong methods.
func TestRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "cancel"})
	tests := []struct {
		method, uri string
		status      int
		code        string
		endpoint    string
	}{
		{"GET", "/v3/nowhere", 404, "NOT_FOUND", ""},
		{"GET", "/", 404, "NOT_FOUND", ""},
		{"GET", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/", 404, "NOT_FOUND", wxpaysim.EndpointValidateCancel},
		{"GET", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/1/2", 404, "NOT_FOUND", wxpaysim.EndpointValidateCancel},
		{"GET", "/v3/ecommerce/account/apply-cancel-withdraw/applyment-id/", 404, "NOT_FOUND", wxpaysim.EndpointQueryCancelWithdraw},
		{"GET", "/v3/ecommerce/account/cancel-applications/out-apply-no/a/b", 404, "NOT_FOUND", wxpaysim.EndpointQueryCancelApplication},
		{"POST", "/v3/apply4subject/applyment//cancel", 404, "NOT_FOUND", wxpaysim.EndpointCancelApplyment},
		{"POST", "/v3/apply4subject/applyment/cancel", 404, "NOT_FOUND", wxpaysim.EndpointCancelApplyment},
		{"POST", "/v3/apply4subject/applyment/a/b/cancel", 404, "NOT_FOUND", wxpaysim.EndpointCancelApplyment},
		{"POST", "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/1900000109", 405, "METHOD_NOT_ALLOWED", wxpaysim.EndpointValidateCancel},
		{"POST", "/v3/ecommerce/account/apply-cancel-withdraw/applyment-id/1", 405, "METHOD_NOT_ALLOWED", wxpaysim.EndpointQueryCancelWithdraw},
		{"DELETE", "/v3/ecommerce/account/apply-cancel-withdraw/out-request-no/1", 405, "METHOD_NOT_ALLOWED", wxpaysim.EndpointQueryCancelWithdraw},
		{"POST", "/v3/ecommerce/account/cancel-applications/out-apply-no/1", 405, "METHOD_NOT_ALLOWED", wxpaysim.EndpointQueryCancelApplication},
		{"GET", "/v3/ecommerce/account/apply-cancel-withdraw/confirm", 405, "METHOD_NOT_ALLOWED", wxpaysim.EndpointConfirmCancel},
		{"GET", "/v3/ecommerce/account/apply-cancel-withdraw", 405, "METHOD_NOT_ALLOWED", wxpaysim.EndpointApplyCancelWithdraw},
		{"GET", "/v3/apply4subject/applyment/BIZ1/cancel", 405, "METHOD_NOT_ALLOWED", wxpaysim.EndpointCancelApplyment},
	}
	v := e.verifier()
	counts := map[string]int{}
	for _, tc := range tests {
		r := e.signed(tc.method, tc.uri, nil)
		var b struct{ Code string }
		_ = json.Unmarshal(r.Body, &b)
		if r.Status != tc.status || b.Code != tc.code {
			t.Errorf("%s %s: HTTP %d %s, want %d %s", tc.method, tc.uri, r.Status, b.Code, tc.status, tc.code)
		}
		if err := v.Verify(r.Header, r.Body); err != nil {
			t.Errorf("%s %s: the answer does not verify: %v", tc.method, tc.uri, err)
		}
		counts[tc.endpoint]++
	}
	for ep, n := range counts {
		if got := e.sim.Count(ep); got != n {
			t.Errorf("Count(%q) = %d, want %d", ep, got, n)
		}
	}
	if a, _ := e.sim.Applyment("cancel"); a.Canceled {
		t.Error("POST …/applyment/cancel cancelled the applyment with business code \"cancel\"")
	}
	if e.sim.Total() != len(tests) {
		t.Errorf("Total = %d, want %d", e.sim.Total(), len(tests))
	}
}

// TestSignatureCache checks that an identical body reuses its signature
// within SignatureCacheTTL and gets a new one after it, and that every answer
// still verifies.
func TestSignatureCache(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute
	sigs := func(e *env) (string, string) {
		_, res, err := e.validate()
		if err != nil {
			t.Fatalf("ValidateCancel: %v", err)
		}
		return res.Header.Get(wxpay.HeaderSignature), res.Header.Get(wxpay.HeaderNonce)
	}

	e := newEnv(t, func(o *wxpaysim.Options) { o.SignatureCacheTTL = ttl }, nil)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	first, nonce1 := sigs(e)
	e.clock.Advance(ttl - time.Second)
	second, nonce2 := sigs(e)
	if first != second || nonce1 != nonce2 {
		t.Error("an identical body within the TTL was signed afresh")
	}
	e.clock.Advance(time.Second)
	third, nonce3 := sigs(e)
	if third == first || nonce3 == nonce1 {
		t.Error("the signature was reused after the TTL")
	}
	// Another body is signed on its own.
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: "1900000222"})
	_, res, err := e.client.ValidateCancel(t.Context(), "1900000222")
	if err != nil || res.Header.Get(wxpay.HeaderSignature) == third {
		t.Errorf("another body: %v, same signature %v", err, res.Header.Get(wxpay.HeaderSignature) == third)
	}
	// A stale_timestamp fault is never served from the cache.
	if err := e.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.StaleTimestamp, Times: 1}); err != nil {
		t.Fatal(err)
	}
	var sigErr *wxpay.SignatureError
	if _, _, err := e.validate(); !errors.As(err, &sigErr) || sigErr.Reason != wxpay.SignatureExpired {
		t.Errorf("stale_timestamp with the cache: %v", err)
	}
	if s, _ := sigs(e); s != third {
		t.Error("the stale signature replaced the cached one")
	}

	// Without a TTL every answer is signed afresh.
	e = newEnv(t, nil, nil)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	a, _ := sigs(e)
	b, _ := sigs(e)
	if a == b {
		t.Error("without a TTL, two answers share a signature")
	}
}

// TestRequestLog checks Requests, Count and Total, and the RequestLog
// bound.
func TestRequestLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *wxpaysim.Options) { o.RequestLog = 3 }, nil)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	if len(e.sim.Requests()) != 0 || e.sim.Total() != 0 {
		t.Fatal("a new simulator has requests")
	}
	for i := range 5 {
		e.clock.Advance(time.Second)
		if _, _, err := e.validate(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	reqs := e.sim.Requests()
	if len(reqs) != 3 || e.sim.Total() != 5 || e.sim.Count(wxpaysim.EndpointValidateCancel) != 5 {
		t.Fatalf("%d requests logged, Total %d, Count %d; want 3, 5, 5", len(reqs), e.sim.Total(), e.sim.Count(wxpaysim.EndpointValidateCancel))
	}
	for i, r := range reqs {
		want := epoch.Add(time.Duration(3+i) * time.Second)
		if !r.At.Equal(want) || r.Method != "GET" || r.Status != 200 || r.MchID != platformMchID ||
			r.Endpoint != wxpaysim.EndpointValidateCancel || !slices.Equal(r.Keys, []string{subMchid}) ||
			r.URI != "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/"+subMchid {
			t.Errorf("request %d: %+v (want at %v)", i, r, want)
		}
	}
}

// TestConcurrentUse drives one simulator from many goroutines (run with
// -race).
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *wxpaysim.Options) { o.Step = time.Minute }, nil)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	if err := e.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointValidateCancel, Times: 4}); err != nil {
		t.Fatal(err)
	}
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*3)
	for range workers {
		wg.Go(func() {
			a := e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
			_, _, err1 := e.validate()
			_, _, err2 := e.client.ConfirmCancel(t.Context(), confirmRequest(a))
			_, _, err3 := e.client.QueryCancelWithdrawByApplymentID(t.Context(), a.ApplymentID)
			errs <- errors.Join(err1, err2, err3)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got, want := e.sim.Count(wxpaysim.EndpointValidateCancel), workers+4; got != want {
		t.Errorf("Count(validate-cancel) = %d, want %d", got, want)
	}
	if got := e.sim.Total(); got != 3*workers+4 {
		t.Errorf("Total = %d, want %d", got, 3*workers+4)
	}
}

// TestPresign: a confirmation presigned with ConfirmationAnswer is answered
// with no RSA signature, in both ways the application can come to exist,
// and the answer verifies; without a signature cache Presign does nothing.
func TestPresign(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *wxpaysim.Options) { o.SignatureCacheTTL = time.Minute; o.AutoCreate = true }, nil)
	put := e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{ApplymentID: "2000000000000001", SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
	auto := wxpaysim.CancelWithdraw{ApplymentID: "2000000000000002", SubMchid: subMchid}
	e.sim.Presign(wxpaysim.ConfirmationAnswer(put.ApplymentID, subMchid), wxpaysim.ConfirmationAnswer(auto.ApplymentID, subMchid))
	before := e.sim.Signatures()
	for _, a := range []wxpaysim.CancelWithdraw{put, auto} {
		req := confirmRequest(a)
		req.OutRequestNo = ""
		got, _, err := e.client.ConfirmCancel(t.Context(), req)
		if err != nil || got.ApplymentID != a.ApplymentID || got.OutRequestNo == "" {
			t.Errorf("confirming %s: %+v, %v", a.ApplymentID, got, err)
		}
	}
	if n := e.sim.Signatures() - before; n != 0 {
		t.Errorf("%d RSA signatures for presigned answers", n)
	}
	// Another answer is signed when asked for.
	if _, _, err := e.validate(); err != nil || e.sim.Signatures() != before+1 {
		t.Errorf("an answer not presigned: %v, %d signatures", err, e.sim.Signatures()-before)
	}

	e = newEnv(t, func(o *wxpaysim.Options) { o.AutoCreate = true }, nil)
	e.sim.Presign(wxpaysim.ConfirmationAnswer("2000000000000003", subMchid))
	if n := e.sim.Signatures(); n != 0 {
		t.Errorf("Presign without a signature cache made %d signatures", n)
	}
}
