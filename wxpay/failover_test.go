package wxpay

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func hostOf(s *httptest.Server) string {
	return strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://")
}

// TestFailover: when the primary refuses connections the same attempt goes
// to the backup; the backup is then preferred for the cool-down, after which
// the primary is probed again and, once it answers, preferred again.
func TestFailover(t *testing.T) {
	clk := newFakeClock()
	answer := func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		s.reply(w, 200, `{"applyment_id":"X1"}`)
	}
	backup := newWXServer(t, clk.Now, answer)
	primaryAddr := closedAddr(t)
	c := newTestClient(t, clk, "http://"+primaryAddr, func(cfg *Config) {
		cfg.BackupBaseURL = backup.URL
		cfg.FailoverCooldown = time.Minute
	})
	call := func(t *testing.T) (*Result, []Attempt) {
		t.Helper()
		hooks := &hookLog{}
		_, res, err := c.ConfirmCancel(t.Context(), confirmReq, hooks.option())
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		return res, hooks.all()
	}

	t.Run("fails over within the attempt", func(t *testing.T) {
		res, a := call(t)
		if res.Attempts != 2 || res.Host != hostOf(backup.Server) || res.Ambiguous {
			t.Fatalf("result = %+v", res)
		}
		if len(a) != 2 || a[0].Host != primaryAddr || a[0].Sent || !a[0].Retry || a[0].Delay != 0 || a[0].StatusCode != 0 {
			t.Errorf("first attempt = %+v", a[0])
		}
		var te *TransportError
		if !errors.As(a[0].Err, &te) || te.Sent || errors.Is(te, ErrAmbiguous) {
			t.Errorf("primary failure = %v, want an unsent TransportError", a[0].Err)
		}
		if a[1].Host != hostOf(backup.Server) || a[1].Err != nil || a[1].Number != 2 {
			t.Errorf("second attempt = %+v", a[1])
		}
		if len(clk.Sleeps()) != 0 {
			t.Errorf("failover waited %v", clk.Sleeps())
		}
	})
	t.Run("prefers the backup during the cool-down", func(t *testing.T) {
		clk.Advance(59 * time.Second)
		res, a := call(t)
		if res.Attempts != 1 || a[0].Host != hostOf(backup.Server) {
			t.Fatalf("result %+v, attempts %+v", res, a)
		}
	})
	t.Run("probes the primary after the cool-down", func(t *testing.T) {
		clk.Advance(2 * time.Second)
		res, a := call(t)
		if res.Attempts != 2 || a[0].Host != primaryAddr || a[1].Host != hostOf(backup.Server) {
			t.Fatalf("result %+v, attempts %+v", res, a)
		}
		// The failed probe restarts the cool-down.
		res, a = call(t)
		if res.Attempts != 1 || a[0].Host != hostOf(backup.Server) {
			t.Fatalf("after the failed probe: result %+v, attempts %+v", res, a)
		}
	})
	t.Run("returns to the primary once it answers", func(t *testing.T) {
		ln, err := net.Listen("tcp", primaryAddr)
		if err != nil {
			t.Skipf("cannot listen on %s again: %v", primaryAddr, err)
		}
		primary := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			signResponse(w.Header(), keys(t).wechat, testPubKeyID, clk.Now(), "np", []byte(`{"applyment_id":"P"}`))
			_, _ = io.WriteString(w, `{"applyment_id":"P"}`)
		}))
		_ = primary.Listener.Close()
		primary.Listener = ln
		primary.Start()
		t.Cleanup(primary.Close)

		clk.Advance(2 * time.Minute)
		for i := range 2 {
			res, a := call(t)
			if res.Attempts != 1 || a[0].Host != primaryAddr {
				t.Fatalf("call %d: result %+v, attempts %+v", i+1, res, a)
			}
		}
	})
}

// TestFailoverOnTLSFailure: a primary whose certificate is not trusted was
// never sent the request: fail over.
func TestFailoverOnTLSFailure(t *testing.T) {
	clk := newFakeClock()
	var primaryHits atomic.Int32
	primary := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { primaryHits.Add(1) }))
	primary.Config.ErrorLog = log.New(io.Discard, "", 0)
	primary.StartTLS()
	t.Cleanup(primary.Close)
	backup := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		s.reply(w, 200, `{"sub_mchid":"1900000109","merchant_state":"NORMAL","validate_result":"ALLOW_CANCEL_WITHDRAW"}`)
	})
	c := newTestClient(t, clk, primary.URL, func(cfg *Config) { cfg.BackupBaseURL = backup.URL })
	hooks := &hookLog{}
	resp, res, err := c.ValidateCancel(t.Context(), "1900000109", hooks.option())
	if err != nil {
		t.Fatal(err)
	}
	if resp.ValidateResult != AllowCancelWithdraw || res.Attempts != 2 || res.Host != hostOf(backup.Server) || primaryHits.Load() != 0 {
		t.Fatalf("resp %+v result %+v primary hits %d", resp, res, primaryHits.Load())
	}
	a := hooks.all()
	if a[0].Sent || !strings.Contains(a[0].Err.Error(), "certificate") {
		t.Errorf("primary attempt = %+v", a[0])
	}
}

// TestNoFailoverOnceSent: an answer lost after the request went out is not a
// reason to switch hosts; the retry goes to the same primary.
func TestNoFailoverOnceSent(t *testing.T) {
	clk := newFakeClock()
	primary := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			drop(w)
			return
		}
		s.reply(w, 200, `{"out_apply_no":"A1"}`)
	})
	backup := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		s.reply(w, 200, `{"out_apply_no":"A1"}`)
	})
	c := newTestClient(t, clk, primary.URL, func(cfg *Config) { cfg.BackupBaseURL = backup.URL })
	_, res, err := c.QueryCancelApplication(t.Context(), "A1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || res.Host != hostOf(primary.Server) || len(backup.Requests()) != 0 || len(clk.Sleeps()) != 1 {
		t.Fatalf("result %+v, backup saw %d, sleeps %v", res, len(backup.Requests()), clk.Sleeps())
	}
}

// TestBothHostsDown: with neither host reachable the call fails with an
// unsent TransportError after its retries, two requests per attempt.
func TestBothHostsDown(t *testing.T) {
	clk := newFakeClock()
	c := newTestClient(t, clk, "http://"+closedAddr(t), func(cfg *Config) {
		cfg.BackupBaseURL = "http://" + closedAddr(t)
		cfg.Retry = RetryPolicy{MaxElapsed: 3 * time.Second}
	})
	_, res, err := c.ConfirmCancel(t.Context(), confirmReq)
	var te *TransportError
	if !errors.As(err, &te) || te.Sent || errors.Is(err, ErrAmbiguous) || res.Ambiguous || !Retryable(err) {
		t.Fatalf("err = %v, result %+v", err, res)
	}
	if res.Attempts != 2*(len(clk.Sleeps())+1) {
		t.Errorf("attempts %d for %d rounds", res.Attempts, len(clk.Sleeps())+1)
	}
}
