package wxpaysim_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// faultEnv is an env with a sub-merchant and an application awaiting
// confirmation (seededID), and faults in force.
func faultEnv(t *testing.T, clientOpt func(*wxpay.Config), faults ...wxpaysim.Fault) *env {
	t.Helper()
	e := newEnv(t, nil, clientOpt)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{ApplymentID: seededID, OutRequestNo: "OUT1", SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
	if err := e.sim.SetFaults(faults...); err != nil {
		t.Fatalf("SetFaults: %v", err)
	}
	return e
}

func (e *env) validate(opts ...wxpay.CallOption) (wxpay.ValidateCancelResponse, *wxpay.Result, error) {
	return e.client.ValidateCancel(e.t.Context(), subMchid, opts...)
}

func (e *env) confirm(opts ...wxpay.CallOption) (*wxpay.Result, error) {
	_, res, err := e.client.ConfirmCancel(e.t.Context(), confirmRequest(wxpaysim.CancelWithdraw{ApplymentID: seededID, OutRequestNo: "OUT1", SubMchid: subMchid}), opts...)
	return res, err
}

// statuses lists the recorded status and fault of each request.
func (e *env) statuses() []string {
	var out []string
	for _, r := range e.sim.Requests() {
		s := http.StatusText(r.Status)
		if r.Status == 0 {
			s = "dropped"
		}
		if r.Fault != "" {
			s += "/" + r.Fault
		}
		out = append(out, s)
	}
	return out
}

func isTimeout(err error) bool {
	var te *wxpay.TransportError
	var to interface{ Timeout() bool }
	return errors.As(err, &te) && errors.As(te.Err, &to) && to.Timeout()
}

func withAttemptTimeout(d time.Duration) func(*wxpay.Config) {
	return func(c *wxpay.Config) { c.AttemptTimeout = d }
}

// TestFaultKinds injects every fault kind and checks what the client makes
// of it: retried to success, ambiguous, or a signature failure that is not
// retried.
func TestFaultKinds(t *testing.T) {
	t.Parallel()
	signatureFault := func(kind wxpaysim.FaultKind, reason wxpay.SignatureReason) func(t *testing.T) {
		return func(t *testing.T) {
			t.Parallel()
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: kind})
			_, res, err := e.validate()
			var sigErr *wxpay.SignatureError
			if !errors.Is(err, wxpay.ErrSignature) || !errors.As(err, &sigErr) {
				t.Fatalf("error %v, want a *wxpay.SignatureError", err)
			}
			if sigErr.Reason != reason {
				t.Errorf("reason %s, want %s", sigErr.Reason, reason)
			}
			if wxpay.Retryable(err) {
				t.Error("a signature failure is retryable")
			}
			if n := e.sim.Count(wxpaysim.EndpointValidateCancel); n != 1 || res.Attempts != 1 {
				t.Errorf("reached %d times in %d attempts, want 1", n, res.Attempts)
			}
			// The request took effect; only its answer was spoiled.
			res, err = e.confirm()
			if !errors.Is(err, wxpay.ErrSignature) {
				t.Fatalf("confirm: %v, want a signature error", err)
			}
			if a, _ := e.sim.CancelWithdraw(seededID); a.State != wxpay.CancelSystemProcessing {
				t.Errorf("state after a confirmation with a spoiled answer = %s, want SYSTEM_PROCESSING", a.State)
			}
			if res.Ambiguous {
				t.Error("a signed answer was reported as ambiguous")
			}
		}
	}

	cases := map[string]func(t *testing.T){
		"system_error": func(t *testing.T) {
			t.Parallel()
			for _, times := range []int{1, 2, 3} {
				e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.SystemError, Times: times})
				got, res, err := e.validate()
				if err != nil {
					t.Fatalf("times=%d: %v", times, err)
				}
				if got.SubMchid != subMchid {
					t.Errorf("times=%d: answer %+v", times, got)
				}
				if n := e.sim.Count(wxpaysim.EndpointValidateCancel); n != times+1 || res.Attempts != times+1 {
					t.Errorf("times=%d: reached %d times in %d attempts, want %d", times, n, res.Attempts, times+1)
				}
				if d := e.sleeper.Delays(); len(d) != times {
					t.Errorf("times=%d: waited %v, want %d waits", times, d, times)
				}
				want := append(slices.Repeat([]string{"Internal Server Error/system_error"}, times), "OK")
				if got := e.statuses(); !slices.Equal(got, want) {
					t.Errorf("times=%d: requests %v, want %v", times, got, want)
				}
			}
			// Unlimited and not retried: the client sees the signed 500.
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.SystemError})
			_, _, err := e.validate(noRetry)
			var apiErr *wxpay.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 500 || apiErr.Code != "SYSTEM_ERROR" || !apiErr.Signed {
				t.Fatalf("error %v, want a signed 500 SYSTEM_ERROR", err)
			}
			if !wxpay.Retryable(err) {
				t.Error("500 SYSTEM_ERROR is not retryable")
			}
		},
		"rate_limit": func(t *testing.T) {
			t.Parallel()
			slow := wxpay.WithRetryPolicy(wxpay.RetryPolicy{InitialInterval: time.Millisecond, MaxInterval: 10 * time.Second, MaxElapsed: time.Minute})
			for _, tc := range []struct {
				retryAfter time.Duration
				want       time.Duration
			}{{0, time.Second}, {3 * time.Second, 3 * time.Second}} {
				e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.RateLimit, Times: 1, RetryAfter: tc.retryAfter})
				if _, res, err := e.validate(slow); err != nil || res.Attempts != 2 {
					t.Fatalf("retry_after=%v: %v after %d attempts", tc.retryAfter, err, res.Attempts)
				}
				if d := e.sleeper.Delays(); !slices.Equal(d, []time.Duration{tc.want}) {
					t.Errorf("retry_after=%v: waited %v, want [%v]", tc.retryAfter, d, tc.want)
				}
			}
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.RateLimit, RetryAfter: 2 * time.Second})
			_, res, err := e.validate(noRetry)
			var apiErr *wxpay.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "RATELIMIT_EXCEEDED" {
				t.Fatalf("error %v, want 429 RATELIMIT_EXCEEDED", err)
			}
			if ra := res.Header.Get("Retry-After"); ra != "2" {
				t.Errorf("Retry-After %q, want 2", ra)
			}
			if !wxpay.Retryable(err) {
				t.Error("429 is not retryable")
			}
		},
		"latency": func(t *testing.T) {
			t.Parallel()
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.Latency, Delay: 5 * time.Millisecond})
			if _, res, err := e.validate(); err != nil || res.Attempts != 1 {
				t.Fatalf("%v after %d attempts", err, res.Attempts)
			}
			if got := e.statuses(); !slices.Equal(got, []string{"OK/latency"}) {
				t.Errorf("requests %v", got)
			}
			// A delay longer than the attempt timeout: the first answer never
			// arrives in time, the retry (the fault is spent) does.
			e = faultEnv(t, withAttemptTimeout(500*time.Millisecond), wxpaysim.Fault{Kind: wxpaysim.Latency, Delay: time.Hour, Times: 1})
			var log attempts
			if _, res, err := e.validate(log.option()); err != nil || res.Attempts != 2 {
				t.Fatalf("long latency: %v after %d attempts", err, res.Attempts)
			}
			if a := log.list(); len(a) != 2 || !isTimeout(a[0].Err) {
				t.Errorf("attempts %+v, want a timeout then a success", a)
			}
			e.srv.Close() // waits for the delayed request to be recorded
			if n := e.sim.Count(wxpaysim.EndpointValidateCancel); n != 2 {
				t.Errorf("reached %d times, want 2", n)
			}
		},
		"hang": func(t *testing.T) {
			t.Parallel()
			// Held until the client gives up.
			e := faultEnv(t, withAttemptTimeout(500*time.Millisecond), wxpaysim.Fault{Kind: wxpaysim.Hang, Times: 1})
			var log attempts
			if _, res, err := e.validate(log.option()); err != nil || res.Attempts != 2 {
				t.Fatalf("%v after %d attempts", err, res.Attempts)
			}
			a := log.list()
			if len(a) != 2 || !isTimeout(a[0].Err) || !a[0].Sent || !a[0].Retry {
				t.Errorf("attempts %+v, want a sent attempt timing out, then a success", a)
			}
			e.srv.Close() // waits for the hung request to be recorded
			// The hung request is logged when the simulator notices the
			// client left, which may be after the retry was answered.
			if got := e.statuses(); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"OK", "dropped/hang"}) {
				t.Errorf("requests %v", got)
			}
			// Held for a delay, then dropped.
			e = faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.Hang, Delay: 5 * time.Millisecond, Times: 1})
			if _, res, err := e.validate(); err != nil || res.Attempts != 2 {
				t.Fatalf("hang with delay: %v after %d attempts", err, res.Attempts)
			}
			if got := e.statuses(); !slices.Equal(got, []string{"dropped/hang", "OK"}) {
				t.Errorf("requests %v", got)
			}
			// The same on a kept-alive connection, where net/http would
			// send the dropped GET again by itself, with the nonce the
			// simulator has seen: the attempt fails instead, and the retry
			// is signed afresh.
			e = faultEnv(t, nil)
			if _, _, err := e.validate(); err != nil {
				t.Fatal(err)
			}
			if err := e.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.Hang, Delay: 5 * time.Millisecond, Times: 1}); err != nil {
				t.Fatal(err)
			}
			log = attempts{}
			if _, res, err := e.validate(log.option()); err != nil || res.Attempts != 2 {
				t.Fatalf("hang on a kept-alive connection: %v after %d attempts", err, res.Attempts)
			}
			if a := log.list(); len(a) != 2 || !a[0].Sent || !a[0].Retry {
				t.Errorf("attempts %+v, want a sent attempt without an answer, then a success", a)
			}
			// The attempt ends when net/http takes a second connection for
			// it, but the copy it then sends may still reach the simulator,
			// which refuses its repeated nonce: harmless (a GET), and never
			// seen by the client, whose retry is signed afresh.
			got := e.statuses()
			resent := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return s != "Unauthorized" })
			if !slices.Equal(slices.DeleteFunc(got, func(s string) bool { return s == "Unauthorized" }), []string{"OK", "dropped/hang", "OK"}) || len(resent) > 1 {
				t.Errorf("requests %v, want the dropped one and one retry, signed afresh (and at most one copy of the dropped one refused)", e.statuses())
			}
		},
		"drop_before": func(t *testing.T) {
			t.Parallel()
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.DropBefore, Times: 2})
			_, res, err := e.validate()
			if err != nil || res.Attempts != 3 || e.sim.Count(wxpaysim.EndpointValidateCancel) != 3 {
				t.Fatalf("%v after %d attempts, %d requests", err, res.Attempts, e.sim.Count(wxpaysim.EndpointValidateCancel))
			}
			if res.Ambiguous {
				t.Error("a GET was reported ambiguous")
			}
			// A POST dropped before execution: retried, executed once.
			e = faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.DropBefore, Endpoint: wxpaysim.EndpointConfirmCancel, Times: 1})
			var log attempts
			res, err = e.confirm(log.option())
			if err != nil || res.Attempts != 2 {
				t.Fatalf("confirm: %v after %d attempts", err, res.Attempts)
			}
			if a := log.list(); !errors.Is(a[0].Err, wxpay.ErrAmbiguous) || !res.Ambiguous {
				t.Errorf("first attempt %v, result ambiguous %v: the client cannot know the dropped POST was not executed", a[0].Err, res.Ambiguous)
			}
			if got := e.statuses(); !slices.Equal(got, []string{"dropped/drop_before", "OK"}) {
				t.Errorf("requests %v", got)
			}
		},
		"gateway": func(t *testing.T) {
			t.Parallel()
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.Gateway, Times: 1})
			if _, res, err := e.validate(); err != nil || res.Attempts != 2 || e.sim.Count(wxpaysim.EndpointValidateCancel) != 2 {
				t.Fatalf("%v after %d attempts", err, res.Attempts)
			}
			e = faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.Gateway})
			_, res, err := e.validate(noRetry)
			var te *wxpay.TransportError
			var apiErr *wxpay.APIError
			if !errors.As(err, &te) || errors.As(err, &apiErr) || errors.Is(err, wxpay.ErrSignature) {
				t.Fatalf("error %v (%T), want a *wxpay.TransportError", err, err)
			}
			if !wxpay.Retryable(err) || res.StatusCode != http.StatusBadGateway {
				t.Errorf("retryable %v, status %d: want a retryable 502", wxpay.Retryable(err), res.StatusCode)
			}
			if got := e.statuses(); !slices.Equal(got, []string{"Bad Gateway/gateway"}) {
				t.Errorf("requests %v", got)
			}
		},
		"drop_after": func(t *testing.T) {
			t.Parallel()
			// Not retried: the error says the outcome is unknown, and the
			// confirmation did take effect.
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.DropAfter, Endpoint: wxpaysim.EndpointConfirmCancel})
			res, err := e.confirm(noRetry)
			var te *wxpay.TransportError
			if !errors.Is(err, wxpay.ErrAmbiguous) || !errors.As(err, &te) || !te.Sent || !res.Ambiguous {
				t.Fatalf("error %v, ambiguous %v: want an ambiguous transport error", err, res.Ambiguous)
			}
			if a, _ := e.sim.CancelWithdraw(seededID); a.State != wxpay.CancelSystemProcessing {
				t.Errorf("state %s, want SYSTEM_PROCESSING: drop_after executes the request", a.State)
			}
			// Retried: the repeat finds the confirmation done.
			e = faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.DropAfter, Endpoint: wxpaysim.EndpointConfirmCancel, Times: 1})
			res, err = e.confirm()
			if !isAPIError(err, 403, "RULE_LIMIT") || !res.Ambiguous || res.Attempts != 2 {
				t.Errorf("retried: %v, ambiguous %v, %d attempts; want 403 RULE_LIMIT, ambiguous, 2 attempts", err, res.Ambiguous, res.Attempts)
			}
			if got := e.statuses(); !slices.Equal(got, []string{"dropped/drop_after", "Forbidden"}) {
				t.Errorf("requests %v", got)
			}
			if reqs := e.sim.Requests(); len(reqs) != 2 || !reqs[0].Applied || reqs[1].Applied {
				t.Errorf("applied: %+v; want the dropped request applied, the refused one not", reqs)
			}
			// A GET is safe to repeat: retried, not ambiguous.
			e = faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.DropAfter, Times: 1})
			if _, res, err := e.validate(); err != nil || res.Ambiguous || res.Attempts != 2 {
				t.Errorf("GET: %v, ambiguous %v, %d attempts", err, res.Ambiguous, res.Attempts)
			}
		},
		"slow_after": func(t *testing.T) {
			t.Parallel()
			e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.SlowAfter, Endpoint: wxpaysim.EndpointConfirmCancel, Delay: 5 * time.Millisecond})
			if res, err := e.confirm(); err != nil || res.Attempts != 1 {
				t.Fatalf("%v after %d attempts", err, res.Attempts)
			}
			if got := e.statuses(); !slices.Equal(got, []string{"OK/slow_after"}) {
				t.Errorf("requests %v", got)
			}
			// Slower than the attempt timeout: the confirmation took effect
			// although its answer never came, and the retry is refused.
			e = faultEnv(t, withAttemptTimeout(300*time.Millisecond), wxpaysim.Fault{Kind: wxpaysim.SlowAfter, Endpoint: wxpaysim.EndpointConfirmCancel, Delay: time.Hour, Times: 1})
			res, err := e.confirm()
			if !isAPIError(err, 403, "RULE_LIMIT") || !res.Ambiguous || res.Attempts != 2 {
				t.Errorf("%v, ambiguous %v, %d attempts; want 403 RULE_LIMIT, ambiguous, 2 attempts", err, res.Ambiguous, res.Attempts)
			}
			e.srv.Close() // waits for the slow request to be recorded
			// Recorded when it ended, which may be after the retry was
			// answered: in the order of arrival, the slow one is first.
			reqs := e.sim.Requests()
			slices.SortStableFunc(reqs, func(a, b wxpaysim.Request) int { return a.At.Compare(b.At) })
			if len(reqs) != 2 || !reqs[0].Applied || reqs[1].Applied {
				t.Errorf("applied: %+v; want the slow request applied, the refused one not", reqs)
			}
		},
		"bad_signature":     signatureFault(wxpaysim.BadSignature, wxpay.SignatureMismatch),
		"missing_signature": signatureFault(wxpaysim.MissingSignature, wxpay.SignatureMissing),
		"probe_signature":   signatureFault(wxpaysim.ProbeSignature, wxpay.SignatureProbe),
		"stale_timestamp":   signatureFault(wxpaysim.StaleTimestamp, wxpay.SignatureExpired),
		"unknown_serial":    signatureFault(wxpaysim.UnknownSerial, wxpay.SignatureUnknownSerial),
	}
	for _, kind := range wxpaysim.FaultKinds() {
		fn, ok := cases[kind]
		if !ok {
			t.Errorf("fault kind %s has no test", kind)
			continue
		}
		t.Run(kind, fn)
	}
}

// TestOptionsLatency checks that Options.Latency delays every answer: with
// an attempt timeout below it, no answer arrives.
func TestOptionsLatency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *wxpaysim.Options) { o.Latency = time.Hour }, withAttemptTimeout(200*time.Millisecond))
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	_, _, err := e.validate(noRetry)
	if !isTimeout(err) {
		t.Fatalf("error %v, want an attempt timeout", err)
	}
	e.srv.Close()
	if got := e.statuses(); !slices.Equal(got, []string{"dropped"}) {
		t.Errorf("requests %v", got)
	}
}

// TestFaultTargeting checks that faults hit only their endpoint, their id,
// their number of times and their rate.
func TestFaultTargeting(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	hit := func(err error) bool { return isAPIError(err, 500, "SYSTEM_ERROR") }

	t.Run("endpoint", func(t *testing.T) {
		t.Parallel()
		e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointConfirmCancel})
		if _, _, err := e.validate(noRetry); err != nil {
			t.Errorf("validate-cancel: %v", err)
		}
		if _, err := e.confirm(noRetry); !hit(err) {
			t.Errorf("confirm-cancel: %v, want the fault", err)
		}
	})
	t.Run("key", func(t *testing.T) {
		t.Parallel()
		e := faultEnv(t, nil,
			wxpaysim.Fault{Kind: wxpaysim.SystemError, Key: "1900000222"},
			wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointQueryCancelWithdraw, Key: seededID},
			wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointCancelApplyment, Key: "2000001000000005"},
		)
		e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: "1900000222"})
		e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "BIZ5", ApplymentID: 2000001000000005})
		e.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "BIZ6", ApplymentID: 2000001000000006})
		for _, tc := range []struct {
			name string
			err  error
			hit  bool
		}{
			{"validate the targeted sub-merchant", second(e.client.ValidateCancel(ctx, "1900000222", noRetry)), true},
			{"validate another sub-merchant", second(e.client.ValidateCancel(ctx, subMchid, noRetry)), false},
			{"query the targeted application", second(e.client.QueryCancelWithdrawByApplymentID(ctx, seededID, noRetry)), true},
			{"query it by out_request_no", second(e.client.QueryCancelWithdrawByOutRequestNo(ctx, "OUT1", noRetry)), false},
			{"confirm with the targeted id (other endpoint)", second2(e.confirm(noRetry)), false},
			{"cancel by the targeted applyment_id query", second2(e.client.CancelApplyment(ctx, wxpay.CancelApplymentRequest{BusinessCode: "BIZ5", ApplymentID: 2000001000000005}, noRetry)), true},
			{"cancel another applyment", second2(e.client.CancelApplyment(ctx, wxpay.CancelApplymentRequest{BusinessCode: "BIZ6", ApplymentID: 2000001000000006}, noRetry)), false},
			{"apply naming the targeted sub-merchant in the body", second(e.client.ApplyCancelWithdraw(ctx, wxpay.ApplyCancelWithdrawRequest{SubMchid: "1900000222", OutRequestNo: "K1"}, noRetry)), true},
		} {
			if hit(tc.err) != tc.hit {
				t.Errorf("%s: %v, want hit %v", tc.name, tc.err, tc.hit)
			} else if !tc.hit && tc.err != nil {
				t.Errorf("%s: %v", tc.name, tc.err)
			}
		}
	})
	t.Run("times", func(t *testing.T) {
		t.Parallel()
		e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.SystemError, Times: 2})
		var got []bool
		for range 4 {
			_, _, err := e.validate(noRetry)
			got = append(got, hit(err))
		}
		if !slices.Equal(got, []bool{true, true, false, false}) {
			t.Errorf("hits %v, want the first two", got)
		}
	})
	t.Run("rate", func(t *testing.T) {
		t.Parallel()
		const n = 40
		pattern := func(seed uint64) []bool {
			e := newEnv(t, func(o *wxpaysim.Options) { o.Seed = seed }, nil)
			e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
			if err := e.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Rate: 0.5}); err != nil {
				t.Fatal(err)
			}
			var out []bool
			for range n {
				_, _, err := e.validate(noRetry)
				if err != nil && !hit(err) {
					t.Fatalf("unexpected error %v", err)
				}
				out = append(out, hit(err))
			}
			recorded := 0
			for _, r := range e.sim.Requests() {
				if r.Fault == "system_error" {
					recorded++
				}
			}
			if hits := countTrue(out); recorded != hits {
				t.Errorf("seed %d: %d faults recorded, %d seen", seed, recorded, hits)
			}
			return out
		}
		a, b := pattern(42), pattern(42)
		if !slices.Equal(a, b) {
			t.Errorf("the same seed gave different hits:\n%v\n%v", a, b)
		}
		if hits := countTrue(a); hits == 0 || hits == n {
			t.Errorf("rate 0.5 hit %d of %d requests", hits, n)
		}
	})
	t.Run("precedence", func(t *testing.T) {
		t.Parallel()
		// A latency fault does not hide a fault that answers instead.
		e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.Latency, Delay: time.Millisecond}, wxpaysim.Fault{Kind: wxpaysim.SystemError, Times: 1})
		if _, res, err := e.validate(); err != nil || res.Attempts != 2 {
			t.Fatalf("%v after %d attempts", err, res.Attempts)
		}
		if got := e.statuses(); !slices.Equal(got, []string{"Internal Server Error/system_error", "OK/latency"}) {
			t.Errorf("requests %v", got)
		}
	})
}

func second[T any](_ T, _ *wxpay.Result, err error) error { return err }
func second2(_ *wxpay.Result, err error) error            { return err }

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// TestSetFaults checks that invalid faults are refused as a whole and that
// faults can be replaced, added and cleared.
func TestSetFaults(t *testing.T) {
	t.Parallel()
	e := faultEnv(t, nil, wxpaysim.Fault{Kind: wxpaysim.SystemError})
	faulted := func() bool {
		_, _, err := e.validate(noRetry)
		return isAPIError(err, 500, "SYSTEM_ERROR")
	}
	invalid := []wxpaysim.Fault{
		{Kind: 0},
		{Kind: 99},
		{Kind: wxpaysim.SystemError, Endpoint: "nowhere"},
		{Kind: wxpaysim.SystemError, Times: -1},
		{Kind: wxpaysim.SystemError, Rate: 1.5},
		{Kind: wxpaysim.SystemError, Rate: -0.5},
		{Kind: wxpaysim.Hang, Delay: -time.Second},
		{Kind: wxpaysim.RateLimit, RetryAfter: -time.Second},
		{Kind: wxpaysim.Latency},
	}
	for _, f := range invalid {
		if err := f.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", f)
		}
		if err := e.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.Gateway}, f); err == nil {
			t.Errorf("SetFaults accepted %+v", f)
		}
		if err := e.sim.AddFaults(f); err == nil {
			t.Errorf("AddFaults accepted %+v", f)
		}
	}
	if !faulted() {
		t.Error("a refused SetFaults replaced the faults in force")
	}
	if err := e.sim.SetFaults(); err != nil || faulted() {
		t.Errorf("SetFaults() did not clear the faults: %v", err)
	}
	if err := e.sim.AddFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Times: 1}); err != nil || !faulted() || faulted() {
		t.Errorf("AddFaults: %v; want one hit", err)
	}
}

func TestFaultString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		f    wxpaysim.Fault
		want string
	}{
		{wxpaysim.Fault{Kind: wxpaysim.SystemError}, "system_error"},
		{wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: "confirm-cancel", Times: 2}, "system_error@confirm-cancel:times=2"},
		{wxpaysim.Fault{Kind: wxpaysim.DropAfter, Endpoint: "confirm-cancel", Key: "2000001234", Times: 1}, "drop_after@confirm-cancel/2000001234:times=1"},
		{wxpaysim.Fault{Kind: wxpaysim.Gateway, Key: "K"}, "gateway@/K"},
		{wxpaysim.Fault{Kind: wxpaysim.Latency, Rate: 0.25, Delay: 1500 * time.Millisecond}, "latency:rate=0.25,delay=1.5s"},
		{wxpaysim.Fault{Kind: wxpaysim.RateLimit, RetryAfter: 3 * time.Second}, "rate_limit:retry_after=3s"},
		{wxpaysim.Fault{Kind: 99}, "fault(99)"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestParseFaults(t *testing.T) {
	t.Parallel()
	accepted := []struct {
		spec string
		want []wxpaysim.Fault
	}{
		{"", nil},
		{" ; ;", nil},
		{"system_error@confirm-cancel:times=2", []wxpaysim.Fault{{Kind: wxpaysim.SystemError, Endpoint: "confirm-cancel", Times: 2}}},
		{"latency:delay=100ms;system_error:rate=0.1", []wxpaysim.Fault{
			{Kind: wxpaysim.Latency, Delay: 100 * time.Millisecond}, {Kind: wxpaysim.SystemError, Rate: 0.1}}},
		{"drop_after@confirm-cancel/2000001234:times=1", []wxpaysim.Fault{{Kind: wxpaysim.DropAfter, Endpoint: "confirm-cancel", Key: "2000001234", Times: 1}}},
		{"hang@*/123", []wxpaysim.Fault{{Kind: wxpaysim.Hang, Key: "123"}}},
		{"gateway@/abc", []wxpaysim.Fault{{Kind: wxpaysim.Gateway, Key: "abc"}}},
		{" bad_signature @ validate-cancel ; ", []wxpaysim.Fault{{Kind: wxpaysim.BadSignature, Endpoint: "validate-cancel"}}},
		{"rate_limit:retry_after=3s, times=4 ,rate=1", []wxpaysim.Fault{{Kind: wxpaysim.RateLimit, RetryAfter: 3 * time.Second, Times: 4, Rate: 1}}},
		{"hang:delay=2s", []wxpaysim.Fault{{Kind: wxpaysim.Hang, Delay: 2 * time.Second}}},
	}
	for _, tc := range accepted {
		got, err := wxpaysim.ParseFaults(tc.spec)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseFaults(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	for _, k := range wxpaysim.FaultKinds() {
		spec := k
		if k == "latency" || k == "slow_after" {
			spec += ":delay=1ms"
		}
		if fs, err := wxpaysim.ParseFaults(spec); err != nil || len(fs) != 1 || fs[0].Kind.String() != k {
			t.Errorf("ParseFaults(%q) = %+v, %v", spec, fs, err)
		}
	}

	rejected := []struct {
		spec    string
		mention string // in the error
	}{
		{"nope", "unknown kind"},
		{"system_error@nowhere", "unknown endpoint"},
		{"system_error@", "empty target"},
		{"system_error@*", "empty target"},
		{"system_error:", "name=value"},
		{"system_error:times", "name=value"},
		{"system_error:times=x", "times"},
		{"system_error:times=-1", "negative"},
		{"system_error:rate=1.5", "rate"},
		{"system_error:rate=NaN", "rate"},
		{"system_error:rate=-0.1", "rate"},
		{"system_error:delay=-1s", "negative"},
		{"system_error:delay=1", "delay"},
		{"system_error:colour=red", "unknown option"},
		{"latency", "needs a delay"},
		{"slow_after@confirm-cancel", "needs a delay"},
		{"system_error;nope", "fault 2"},
		{"\xff\xfe", "unknown kind"},
	}
	for _, tc := range rejected {
		got, err := wxpaysim.ParseFaults(tc.spec)
		if !errors.Is(err, wxpaysim.ErrFaultSpec) || got != nil {
			t.Errorf("ParseFaults(%q) = %+v, %v; want an ErrFaultSpec", tc.spec, got, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.mention) || !utf8.ValidString(err.Error()) {
			t.Errorf("ParseFaults(%q): error %q does not mention %q", tc.spec, err, tc.mention)
		}
	}
}

// FuzzParseFaults checks that ParseFaults never panics, that what it
// refuses matches ErrFaultSpec with a printable message, and that what it
// accepts is valid and round-trips through Fault.String.
func FuzzParseFaults(f *testing.F) {
	for _, seed := range []string{
		"", ";", "system_error", "system_error@confirm-cancel:times=2",
		"latency:delay=100ms;system_error:rate=0.1", "drop_after@confirm-cancel/2000001234:times=1",
		"hang@*/k/with/slashes", "gateway@/a@b", "rate_limit:retry_after=1.5s,times=+3", "bad_signature @ validate-cancel ",
		"system_error:rate=0x1p-2", "system_error:rate=-0", "system_error:delay=9223372036854775807ns", "nope:times=1",
		"system_error:times=1,times=2", "unknown_serial@apply-cancel-withdraw/ k ", "latency:delay=1ms,rate=1e-320",
		"\xff@\xfe/\x00:times=\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		faults, err := wxpaysim.ParseFaults(spec)
		if err != nil {
			if !errors.Is(err, wxpaysim.ErrFaultSpec) || faults != nil {
				t.Fatalf("ParseFaults(%q) = %+v, %v", spec, faults, err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error is not valid UTF-8: %q", err)
			}
			return
		}
		strs := make([]string, len(faults))
		for i, fl := range faults {
			if err := fl.Validate(); err != nil {
				t.Fatalf("ParseFaults(%q) accepted invalid %+v: %v", spec, fl, err)
			}
			strs[i] = fl.String()
			again, err := wxpaysim.ParseFaults(strs[i])
			if err != nil || len(again) != 1 || again[0] != fl {
				t.Fatalf("%+v → %q → %+v, %v", fl, strs[i], again, err)
			}
		}
		again, err := wxpaysim.ParseFaults(strings.Join(strs, ";"))
		if err != nil || !slices.Equal(again, faults) {
			t.Fatalf("ParseFaults(%q) = %+v, but its String form %q gives %+v, %v", spec, faults, strings.Join(strs, ";"), again, err)
		}
	})
}
