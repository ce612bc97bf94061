package wxpay

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

var confirmReq = ConfirmCancelRequest{ApplymentID: "X1", SubMchid: "1900000109",
	OperatorIdentification: "李四operator", ConfirmTime: "2025-01-02T03:04:05+08:00", CancelContractVersion: "V1.0"}

// TestRetrySystemErrorThenSuccess: two SYSTEM_ERRORs then success take three
// attempts, each freshly signed, with the same body, after the policy's
// delays; a POST answered SYSTEM_ERROR may have been executed (Ambiguous).
func TestRetrySystemErrorThenSuccess(t *testing.T) {
	clk := newFakeClock()
	srv := systemErrorsThen(t, clk, 2, `{"applyment_id":"X1","sub_mchid":"1900000109"}`)
	c := newTestClient(t, clk, srv.URL)
	hooks := &hookLog{}
	// No jitter, 2s then 4s: the Unix-second timestamps must differ.
	policy := WithRetryPolicy(RetryPolicy{InitialInterval: 2 * time.Second, RandomizationFactor: -1})
	resp, res, err := c.ConfirmCancel(t.Context(), confirmReq, policy, hooks.option())
	if err != nil {
		t.Fatal(err)
	}
	if resp.ApplymentID != "X1" || res.Attempts != 3 || res.StatusCode != 200 || !res.Ambiguous {
		t.Fatalf("resp %+v result %+v", resp, res)
	}
	if got, want := clk.Sleeps(), []time.Duration{2 * time.Second, 4 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("sleeps = %v, want %v", got, want)
	}
	reqs := srv.Requests()
	if len(reqs) != 3 {
		t.Fatalf("server saw %d requests", len(reqs))
	}
	nonces, stamps := map[string]bool{}, map[string]bool{}
	for i, rq := range reqs {
		if rq.SigErr != nil {
			t.Errorf("attempt %d: signature: %v", i+1, rq.SigErr)
		}
		if string(rq.Body) != string(reqs[0].Body) {
			t.Errorf("attempt %d sent a different body", i+1)
		}
		nonces[rq.Auth.Nonce] = true
		stamps[rq.Auth.Timestamp] = true
	}
	if len(nonces) != 3 || len(stamps) != 3 {
		t.Errorf("nonces %v timestamps %v: want 3 distinct of each", nonces, stamps)
	}
	a := hooks.all()
	if len(a) != 3 {
		t.Fatalf("hook called %d times", len(a))
	}
	for i, want := range []Attempt{
		{Number: 1, StatusCode: 500, Retry: true, Delay: 2 * time.Second},
		{Number: 2, StatusCode: 500, Retry: true, Delay: 4 * time.Second},
		{Number: 3, StatusCode: 200},
	} {
		got := a[i]
		if got.Number != want.Number || got.StatusCode != want.StatusCode || got.Retry != want.Retry || got.Delay != want.Delay ||
			got.Method != "POST" || got.Path != "/v3/ecommerce/account/apply-cancel-withdraw/confirm" || !got.Sent || (got.Err == nil) != (i == 2) {
			t.Errorf("attempt %d = %+v", i+1, got)
		}
	}
	var ae *APIError
	if !errors.As(a[0].Err, &ae) || ae.Code != "SYSTEM_ERROR" {
		t.Errorf("first attempt's error = %v", a[0].Err)
	}
}

func equals(want time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d == want }
}

// TestRetryAfter: a 429's Retry-After (seconds or HTTP date) longer than the
// backoff delay sets the delay, capped by MaxInterval and by what is left of
// MaxElapsed; "now" (0, or a date in the past) leaves the backoff delay.
func TestRetryAfter(t *testing.T) {
	// The first backoff delay of the default policy, jittered.
	firstBackoff := func(d time.Duration) bool {
		return d >= time.Duration(float64(DefaultInitialInterval)*(1-DefaultRandomizationFactor)) &&
			d <= time.Duration(float64(DefaultInitialInterval)*(1+DefaultRandomizationFactor))
	}
	tests := []struct {
		name       string
		retryAfter func(now time.Time) string
		policy     RetryPolicy
		want       func(time.Duration) bool
	}{
		{"seconds", func(time.Time) string { return "3" }, RetryPolicy{}, equals(3 * time.Second)},
		{"HTTP date", func(now time.Time) string { return now.Add(7 * time.Second).UTC().Format(http.TimeFormat) }, RetryPolicy{}, equals(7 * time.Second)},
		{"date in the past", func(now time.Time) string { return now.Add(-time.Hour).UTC().Format(http.TimeFormat) }, RetryPolicy{}, firstBackoff},
		{"zero", func(time.Time) string { return "0" }, RetryPolicy{}, firstBackoff},
		{"capped by MaxInterval", func(time.Time) string { return "120" }, RetryPolicy{MaxInterval: 5 * time.Second}, equals(5 * time.Second)},
		{"capped by the remaining budget", func(time.Time) string { return "8" }, RetryPolicy{MaxElapsed: 6 * time.Second}, equals(6 * time.Second)},
		{"absurd value", func(time.Time) string { return "99999999999999" }, RetryPolicy{}, equals(DefaultMaxInterval)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.retryAfter(clk.Now()))
					s.reply(w, 429, `{"code":"FREQUENCY_LIMITED","message":"请降低频率后重试"}`)
					return
				}
				s.reply(w, 200, `{"out_apply_no":"A1"}`)
			})
			c := newTestClient(t, clk, srv.URL, func(cfg *Config) { cfg.Retry = tt.policy })
			hooks := &hookLog{}
			_, res, err := c.QueryCancelApplication(t.Context(), "A1", hooks.option())
			if err != nil {
				t.Fatal(err)
			}
			if res.Attempts != 2 {
				t.Fatalf("attempts = %d", res.Attempts)
			}
			got := clk.Sleeps()
			if len(got) != 1 || !tt.want(got[0]) {
				t.Fatalf("slept %v", got)
			}
			if a := hooks.all(); len(a) != 2 || a[0].Delay != got[0] || !a[0].Retry || a[0].StatusCode != 429 {
				t.Errorf("hook saw %+v", a)
			}
		})
	}
	// Unparseable Retry-After: the ordinary backoff applies.
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "soon")
			s.reply(w, 429, `{"code":"RATELIMIT_EXCEEDED","message":"slow down"}`)
			return
		}
		s.reply(w, 200, `{"out_apply_no":"A1"}`)
	})
	c := newTestClient(t, clk, srv.URL)
	if _, _, err := c.QueryCancelApplication(t.Context(), "A1"); err != nil {
		t.Fatal(err)
	}
	if got := clk.Sleeps(); len(got) != 1 || got[0] < DefaultInitialInterval/2 || got[0] > DefaultInitialInterval*3/2 {
		t.Errorf("slept %v, want the jittered initial interval", got)
	}
}

// TestNotRetried: other 4xx answers end the call at once.
func TestNotRetried(t *testing.T) {
	tests := []struct {
		status int
		body   string
	}{
		{400, `{"code":"PARAM_ERROR","message":"参数错误"}`},
		{400, `{"code":"NO_AUTH","message":"单据非待确认状态"}`},
		{401, `{"code":"SIGN_ERROR","message":"签名错误"}`},
		{403, `{"code":"RULE_LIMIT","message":"无需确认"}`},
		{404, `{"code":"NOT_FOUND","message":"申请单不存在"}`},
	}
	for _, tt := range tests {
		t.Run(strings.SplitN(tt.body, `"`, 5)[3], func(t *testing.T) {
			clk := newFakeClock()
			srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { s.reply(w, tt.status, tt.body) })
			c := newTestClient(t, clk, srv.URL)
			hooks := &hookLog{}
			_, res, err := c.ConfirmCancel(t.Context(), confirmReq, hooks.option())
			var ae *APIError
			if !errors.As(err, &ae) || ae.StatusCode != tt.status || !ae.Signed {
				t.Fatalf("err = %v", err)
			}
			if Retryable(err) || res.Attempts != 1 || len(srv.Requests()) != 1 || len(clk.Sleeps()) != 0 || res.Ambiguous {
				t.Errorf("retried: result %+v, sleeps %v", res, clk.Sleeps())
			}
			if a := hooks.all(); len(a) != 1 || a[0].Retry {
				t.Errorf("hook saw %+v", a)
			}
			if strings.Contains(err.Error(), confirmReq.OperatorIdentification) || strings.Contains(err.Error(), AuthScheme) {
				t.Errorf("message leaks the request: %v", err)
			}
		})
	}
}

// TestRetriesExhausted: a persistent 5xx is retried until MaxElapsed, then
// the last error is returned, still retryable for a later delivery.
func TestRetriesExhausted(t *testing.T) {
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		s.reply(w, 503, `{"code":"SERVICE_UNAVAILABLE","message":"服务不可用"}`)
	})
	c := newTestClient(t, clk, srv.URL)
	hooks := &hookLog{}
	_, res, err := c.ValidateCancel(t.Context(), "1900000109", hooks.option())
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 503 || !Retryable(err) {
		t.Fatalf("err = %v", err)
	}
	sleeps := clk.Sleeps()
	var total time.Duration
	for _, d := range sleeps {
		total += d
	}
	if res.Attempts < 3 || res.Attempts != len(sleeps)+1 || total > DefaultMaxElapsed {
		t.Errorf("attempts %d, sleeps %v (total %v)", res.Attempts, sleeps, total)
	}
	a := hooks.all()
	if len(a) != res.Attempts || a[len(a)-1].Retry {
		t.Errorf("hook calls %d, last %+v", len(a), a[len(a)-1])
	}
	for i, at := range a[:len(a)-1] {
		if !at.Retry || at.Delay != sleeps[i] || at.Delay > DefaultMaxInterval*3/2 {
			t.Errorf("attempt %d = %+v", i+1, at)
		}
	}
}

// TestRetry202: "accepted, repeat the same request"; the first may have
// been executed (Ambiguous).
func TestRetry202(t *testing.T) {
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			s.reply(w, 202, "")
			return
		}
		s.reply(w, 200, `{"applyment_id":"X1"}`)
	})
	resp, res, err := newTestClient(t, clk, srv.URL).ConfirmCancel(t.Context(), confirmReq)
	if err != nil || resp.ApplymentID != "X1" || res.Attempts != 2 || !res.Ambiguous {
		t.Fatalf("err %v resp %+v result %+v", err, resp, res)
	}
	reqs := srv.Requests()
	if string(reqs[0].Body) != string(reqs[1].Body) {
		t.Error("the repeat sent different bytes")
	}
}

// TestAmbiguousPOSTRetried: a POST whose answer was lost is retried with the
// same bytes, and the call says its outcome needs reconciling.
func TestAmbiguousPOSTRetried(t *testing.T) {
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			drop(w)
			return
		}
		s.reply(w, 200, `{"applyment_id":"X1"}`)
	})
	hooks := &hookLog{}
	_, res, err := newTestClient(t, clk, srv.URL).ConfirmCancel(t.Context(), confirmReq, hooks.option())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ambiguous || res.Attempts != 2 {
		t.Errorf("result = %+v, want ambiguous after 2 attempts", res)
	}
	reqs := srv.Requests()
	if string(reqs[0].Body) != string(reqs[1].Body) || reqs[0].Auth.Nonce == reqs[1].Auth.Nonce {
		t.Error("the retry must resend the same body with a fresh signature")
	}
	a := hooks.all()
	if len(a) != 2 || !errors.Is(a[0].Err, ErrAmbiguous) || !a[0].Sent || !a[0].Retry {
		t.Errorf("hook saw %+v", a)
	}
}

// TestContextCancellation: the caller's context ends the call at once,
// whether during a request, before it, or while waiting to retry.
func TestContextCancellation(t *testing.T) {
	t.Run("during a request", func(t *testing.T) {
		clk := newFakeClock()
		ctx, cancel := context.WithCancel(t.Context())
		srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
			cancel()
			s.hang(r)
		})
		hooks := &hookLog{}
		_, res, err := newTestClient(t, clk, srv.URL).ConfirmCancel(ctx, confirmReq, hooks.option())
		if !errors.Is(err, context.Canceled) || Retryable(err) {
			t.Fatalf("err = %v (retryable %v)", err, Retryable(err))
		}
		// The POST was on the wire: its outcome is unknown.
		var te *TransportError
		if !errors.As(err, &te) || !te.Sent || !errors.Is(err, ErrAmbiguous) || !res.Ambiguous {
			t.Errorf("err %v, result %+v: want a sent, ambiguous TransportError", err, res)
		}
		if res.Attempts != 1 || len(clk.Sleeps()) != 0 {
			t.Errorf("result %+v, sleeps %v", res, clk.Sleeps())
		}
		if a := hooks.all(); len(a) != 1 || a[0].Retry {
			t.Errorf("hook saw %+v", a)
		}
	})
	t.Run("before the call", func(t *testing.T) {
		clk := newFakeClock()
		srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { s.reply(w, 200, `{}`) })
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, res, err := newTestClient(t, clk, srv.URL).ValidateCancel(ctx, "1900000109")
		if !errors.Is(err, context.Canceled) || res.Attempts != 0 || len(srv.Requests()) != 0 {
			t.Fatalf("err %v result %+v", err, res)
		}
	})
	t.Run("while waiting to retry", func(t *testing.T) {
		clk := newFakeClock()
		srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
			s.reply(w, 500, `{"code":"SYSTEM_ERROR","message":"系统异常"}`)
		})
		ctx, cancel := context.WithCancel(t.Context())
		var slept []time.Duration
		c := newTestClient(t, clk, srv.URL, func(cfg *Config) {
			cfg.Sleep = func(ctx context.Context, d time.Duration) error {
				slept = append(slept, d)
				cancel()
				return ctx.Err()
			}
		})
		_, res, err := c.ValidateCancel(ctx, "1900000109")
		if !errors.Is(err, context.Canceled) || Retryable(err) {
			t.Fatalf("err = %v", err)
		}
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != "SYSTEM_ERROR" {
			t.Errorf("the last attempt's error is lost: %v", err)
		}
		if res.Attempts != 1 || len(srv.Requests()) != 1 || len(slept) != 1 {
			t.Errorf("result %+v, server %d, slept %v", res, len(srv.Requests()), slept)
		}
	})
	t.Run("default sleep stops on cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := sleepContext(ctx, time.Hour); !errors.Is(err, context.Canceled) {
			t.Fatalf("sleepContext = %v", err)
		}
		if err := sleepContext(t.Context(), time.Millisecond); err != nil {
			t.Fatalf("sleepContext = %v", err)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := testEpoch
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"15", 15 * time.Second, true},
		{" 2 ", 2 * time.Second, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Thu, 01 Jan 2026 00:00:30 GMT", 30 * time.Second, true},
		{"Thursday, 01-Jan-26 00:00:10 GMT", 10 * time.Second, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"tomorrow", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	tests := []struct {
		name  string
		p     RetryPolicy
		wants []string
	}{
		{"zero is the default", RetryPolicy{}, nil},
		{"no retries", RetryPolicy{MaxElapsed: -1}, nil},
		{"all wrong", RetryPolicy{InitialInterval: -1, MaxInterval: -1, Multiplier: 0.5, RandomizationFactor: 2},
			[]string{"initial interval", "max interval", "multiplier", "randomization"}},
		{"initial above max", RetryPolicy{InitialInterval: time.Minute, MaxInterval: time.Second}, []string{"exceeds"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if (err == nil) != (len(tt.wants) == 0) {
				t.Fatalf("Validate() = %v", err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
	// An invalid per-call policy is refused before any request.
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { s.reply(w, 200, `{}`) })
	_, res, err := newTestClient(t, clk, srv.URL).ValidateCancel(t.Context(), "1", WithRetryPolicy(RetryPolicy{Multiplier: 0.1}))
	if !errors.Is(err, ErrInvalidArgument) || res.Attempts != 0 || len(srv.Requests()) != 0 {
		t.Fatalf("err %v result %+v", err, res)
	}
}

// TestSendGate: the gate runs before every attempt is sent; when it refuses,
// nothing is sent, the call ends with its error and the refused attempt is
// not counted.
func TestSendGate(t *testing.T) {
	clk := newFakeClock()
	srv := systemErrorsThen(t, clk, 1, `{"applyment_id":"X1","sub_mchid":"1900000109"}`)
	c := newTestClient(t, clk, srv.URL)
	policy := WithRetryPolicy(RetryPolicy{InitialInterval: time.Second, RandomizationFactor: -1})

	calls := 0
	open := WithSendGate(func(context.Context) error { calls++; return nil })
	if _, res, err := c.ConfirmCancel(t.Context(), confirmReq, policy, open); err != nil || res.Attempts != 2 {
		t.Fatalf("open gate: %+v, %v", res, err)
	}
	if calls != 2 || len(srv.Requests()) != 2 {
		t.Errorf("gate called %d times for %d requests, want 2 and 2", calls, len(srv.Requests()))
	}

	refused := errors.New("recorded already")
	shut := WithSendGate(func(context.Context) error { return refused })
	_, res, err := c.ConfirmCancel(t.Context(), confirmReq, shut)
	if !errors.Is(err, refused) || res.Attempts != 0 {
		t.Errorf("shut gate: %+v, %v", res, err)
	}
	if n := len(srv.Requests()); n != 2 {
		t.Errorf("a refused attempt reached the server (%d requests)", n)
	}
}
