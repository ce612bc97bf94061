package wxpaysim_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// epoch is where every fake clock starts: 2026-01-01T00:00:00Z, which is
// 08:00 in China Standard Time.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	platformMchID = "1900000001"
	subMchid      = "1900000109"
)

// Keys are generated once per test binary: RSA key generation is slow.
var (
	keysOnce    sync.Once
	wechatKey   *rsa.PrivateKey
	merchantVal wxpaysim.Merchant
	keysErr     error
)

// sharedKeys returns the WeChat Pay key and the platform merchant shared by
// every simulator of the run.
func sharedKeys(t testing.TB) (*rsa.PrivateKey, wxpaysim.Merchant) {
	t.Helper()
	keysOnce.Do(func() {
		var wg sync.WaitGroup
		var errKey, errMerchant error
		wg.Go(func() { wechatKey, errKey = rsa.GenerateKey(rand.Reader, 2048) })
		wg.Go(func() { merchantVal, errMerchant = wxpaysim.NewMerchant(platformMchID) })
		wg.Wait()
		keysErr = errors.Join(errKey, errMerchant)
		if keysErr == nil {
			// Precompute mutates the key: do it once, before tests share it.
			wechatKey.Precompute()
			merchantVal.Key.Precompute()
		}
	})
	if keysErr != nil {
		t.Fatalf("generating keys: %v", keysErr)
	}
	return wechatKey, merchantVal
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: epoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// sleeper replaces the client's Sleep: it records each requested delay and
// advances the fake clock by it instead of waiting.
type sleeper struct {
	clock *fakeClock
	mu    sync.Mutex
	slept []time.Duration
}

func (s *sleeper) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.slept = append(s.slept, d)
	s.mu.Unlock()
	s.clock.Advance(d)
	return nil
}

func (s *sleeper) Delays() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.slept...)
}

// fastRetry retries quickly; with the fake clock advanced by each sleep the
// budget is spent after a dozen attempts.
var fastRetry = wxpay.RetryPolicy{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxElapsed: 50 * time.Millisecond}

// noRetry makes a call a single attempt.
var noRetry = wxpay.WithRetryPolicy(wxpay.RetryPolicy{MaxElapsed: -1})

// env is one simulator behind a real HTTP server, and a client for it.
type env struct {
	t        testing.TB
	sim      *wxpaysim.Server
	srv      *httptest.Server
	clock    *fakeClock
	sleeper  *sleeper
	merchant wxpaysim.Merchant
	client   *wxpay.Client
}

// newEnv starts a simulator with the shared keys and a fake clock; opt
// adjusts its options, clientOpt the client configuration.
func newEnv(t testing.TB, opt func(*wxpaysim.Options), clientOpt func(*wxpay.Config)) *env {
	t.Helper()
	key, m := sharedKeys(t)
	clock := newFakeClock()
	o := wxpaysim.Options{Key: key, Clock: clock.Now, Seed: 1}
	if opt != nil {
		opt(&o)
	}
	sim, err := wxpaysim.New(o)
	if err != nil {
		t.Fatalf("wxpaysim.New: %v", err)
	}
	sim.RegisterMerchant(m)
	srv := newServer(t, sim)
	e := &env{t: t, sim: sim, srv: srv, clock: clock, sleeper: &sleeper{clock: clock}, merchant: m}
	e.client = e.newClient(clientOpt)
	return e
}

// newClient returns a client of the simulator signing as the platform
// merchant, with fast retries on the fake clock.
func (e *env) newClient(mod func(*wxpay.Config)) *wxpay.Client {
	e.t.Helper()
	cfg, err := e.sim.ClientConfig(e.merchant, e.srv.URL)
	if err != nil {
		e.t.Fatalf("ClientConfig: %v", err)
	}
	cfg.Retry = fastRetry
	cfg.Sleep = e.sleeper.Sleep
	cfg.AttemptTimeout = 10 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	c, err := wxpay.NewClient(cfg)
	if err != nil {
		e.t.Fatalf("NewClient: %v", err)
	}
	e.t.Cleanup(c.CloseIdleConnections)
	return c
}

// verifier verifies the simulator's answers on the fake clock.
func (e *env) verifier() *wxpay.Verifier {
	e.t.Helper()
	v, err := wxpay.NewVerifier(wxpay.VerifierConfig{PublicKeyID: e.sim.PublicKeyID(), PublicKey: e.sim.PublicKey(), Clock: e.clock.Now})
	if err != nil {
		e.t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func (e *env) signer() *wxpay.Signer {
	e.t.Helper()
	s, err := wxpay.NewSigner(e.merchant.MchID, e.merchant.SerialNo, e.merchant.Key)
	if err != nil {
		e.t.Fatalf("NewSigner: %v", err)
	}
	return s
}

var nonceSeq struct {
	mu sync.Mutex
	n  int
}

func freshNonce() string {
	nonceSeq.mu.Lock()
	defer nonceSeq.mu.Unlock()
	nonceSeq.n++
	return "TESTNONCE" + strconv.Itoa(nonceSeq.n)
}

// rawResponse is an answer to a hand-built request.
type rawResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a hand-built request with the given Authorization header (none
// when empty) and returns the answer.
func (e *env) do(method, uri string, body []byte, auth string, header http.Header) rawResponse {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+uri, rd)
	if err != nil {
		e.t.Fatalf("NewRequest: %v", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, uri, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("reading the answer: %v", err)
	}
	return rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// signed sends a request signed by the platform merchant at the fake
// clock's time with a fresh nonce.
func (e *env) signed(method, uri string, body []byte) rawResponse {
	e.t.Helper()
	auth, err := e.signer().Authorization(method, uri, body, e.clock.Now().Unix(), freshNonce())
	if err != nil {
		e.t.Fatalf("Authorization: %v", err)
	}
	return e.do(method, uri, body, auth, http.Header{wxpay.HeaderSerial: {e.sim.PublicKeyID()}})
}

// attempts collects the attempts of a call.
type attempts struct {
	mu  sync.Mutex
	all []wxpay.Attempt
}

func (a *attempts) option() wxpay.CallOption {
	return wxpay.WithAttemptHook(func(at wxpay.Attempt) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.all = append(a.all, at)
	})
}

func (a *attempts) list() []wxpay.Attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]wxpay.Attempt(nil), a.all...)
}

// newServer serves sim over real HTTP until the test ends.
func newServer(t testing.TB, sim *wxpaysim.Server) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return srv
}
