package wxpay

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Identities used throughout the tests. Keys are generated once per run.
const (
	testMchID       = "1900000001"
	testMchSerial   = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	testPubKeyID    = "PUB_KEY_ID_0114232134912410000000000000"
	testOtherSerial = "PUB_KEY_ID_0199999999999999999999999999"
)

// testEpoch is where every fake clock starts: a whole second, so that
// HTTP dates and Unix timestamps are exact.
var testEpoch = time.Unix(1767225600, 0) // 2026-01-01T00:00:00Z

type testKeys struct {
	merchant *rsa.PrivateKey // merchant API key: signs requests
	wechat   *rsa.PrivateKey // WeChat Pay key: signs responses, decrypts fields
	other    *rsa.PrivateKey // an unrelated key: forged signatures
	cert     *x509.Certificate
	certKey  *rsa.PrivateKey // key of cert (the WeChat Pay key)
	expired  *x509.Certificate
}

var (
	keysOnce sync.Once
	keysVal  testKeys
)

// keys returns the RSA keys and certificates of the test run, generated on
// first use.
func keys(t testing.TB) testKeys {
	t.Helper()
	keysOnce.Do(func() {
		gen := func() *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			return k
		}
		var wg sync.WaitGroup
		ks := make([]*rsa.PrivateKey, 3)
		for i := range ks {
			wg.Go(func() { ks[i] = gen() })
		}
		wg.Wait()
		keysVal = testKeys{merchant: ks[0], wechat: ks[1], other: ks[2], certKey: ks[1]}
		// Serial 0x0F… has a leading zero nibble: WeChat Pay (and the
		// official SDK) write it with the zero.
		serial, _ := new(big.Int).SetString("0F5B3C71A2E4D6F8091A2B3C4D5E6F7081928374", 16)
		keysVal.cert = selfSigned(ks[1], serial, testEpoch.Add(-24*time.Hour), testEpoch.Add(365*24*time.Hour))
		keysVal.expired = selfSigned(ks[1], big.NewInt(0x7E57), testEpoch.Add(-48*time.Hour), testEpoch.Add(-time.Hour))
	})
	return keysVal
}

func selfSigned(key *rsa.PrivateKey, serial *big.Int, notBefore, notAfter time.Time) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tenpay.com Root CA test"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

// fakeClock is a clock that moves only when told; Sleep advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: testEpoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Sleep records the delay and advances the clock by it, unless ctx has
// ended.
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return nil
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// captured is one request as the test server received it.
type captured struct {
	Method string
	URI    string // r.RequestURI: exactly what was on the request line
	Path   string // decoded path
	Header http.Header
	Body   []byte
	Auth   Authorization
	// SigErr is the result of verifying the request signature with the
	// merchant public key over the message rebuilt from the wire.
	SigErr error
}

// handlerFunc answers request n (1-based) of a test server.
type handlerFunc func(s *wxServer, w http.ResponseWriter, r *http.Request, n int)

// wxServer plays WeChat Pay: it records requests and signs answers with the
// WeChat Pay key at its clock's time.
type wxServer struct {
	*httptest.Server
	t       testing.TB
	clock   func() time.Time
	release chan struct{} // closed at cleanup: hung handlers return
	serial  string        // Wechatpay-Serial of answers; set before use

	mu   sync.Mutex
	reqs []captured
}

func newWXServer(t testing.TB, clock func() time.Time, h handlerFunc) *wxServer {
	t.Helper()
	s := &wxServer{t: t, clock: clock, release: make(chan struct{}), serial: testPubKeyID}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c := captured{Method: r.Method, URI: r.RequestURI, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
		c.Auth, c.SigErr = ParseAuthorization(r.Header.Get("Authorization"))
		if c.SigErr == nil {
			ts, _ := strconv.ParseInt(c.Auth.Timestamp, 10, 64)
			c.SigErr = verifyRSA(&keys(t).merchant.PublicKey, RequestMessage(r.Method, r.RequestURI, ts, c.Auth.Nonce, body), c.Auth.Signature)
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, c)
		n := len(s.reqs)
		s.mu.Unlock()
		h(s, w, r, n)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.release) })
	return s
}

func (s *wxServer) Requests() []captured {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]captured(nil), s.reqs...)
}

// reply writes a correctly signed answer.
func (s *wxServer) reply(w http.ResponseWriter, status int, body string) {
	signResponse(w.Header(), keys(s.t).wechat, s.serial, s.clock(), "nonce-"+strconv.Itoa(status), []byte(body))
	w.Header().Set("Request-Id", "req-"+strconv.Itoa(status))
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// replyUnsigned writes an answer without any Wechatpay-* header.
func (s *wxServer) replyUnsigned(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Request-Id", "req-unsigned")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// hang blocks until the client goes away or the test ends.
func (s *wxServer) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.release:
	}
}

// drop closes the connection without answering (the request has been read).
func drop(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	_ = conn.Close()
}

func signResponse(h http.Header, key *rsa.PrivateKey, serial string, now time.Time, nonce string, body []byte) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderSerial, serial)
	h.Set(HeaderSignature, signRSA(key, ResponseMessage(ts, nonce, body)))
}

func signRSA(key *rsa.PrivateKey, msg []byte) string {
	sum := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func verifyRSA(pub *rsa.PublicKey, msg []byte, sigB64 string) error {
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(msg)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
}

// testSigner returns the merchant's signer.
func testSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := NewSigner(testMchID, testMchSerial, keys(t).merchant)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testVerifier returns a verifier of the WeChat Pay public key at clock.
func testVerifier(t testing.TB, clock func() time.Time) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierConfig{PublicKeyID: testPubKeyID, PublicKey: &keys(t).wechat.PublicKey, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// newTestClient returns a client of base with the fake clock, no failover,
// and the given adjustments.
func newTestClient(t testing.TB, clk *fakeClock, base string, mods ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Signer:        testSigner(t),
		Verifier:      testVerifier(t, clk.Now),
		BaseURL:       base,
		BackupBaseURL: NoBackup,
		Clock:         clk.Now,
		Sleep:         clk.Sleep,
	}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// noRetry makes one attempt per call.
var noRetry = WithRetryPolicy(RetryPolicy{MaxElapsed: -1})

// hookLog records the attempts of a call.
type hookLog struct {
	mu       sync.Mutex
	attempts []Attempt
}

func (h *hookLog) option() CallOption {
	return WithAttemptHook(func(a Attempt) {
		h.mu.Lock()
		h.attempts = append(h.attempts, a)
		h.mu.Unlock()
	})
}

func (h *hookLog) all() []Attempt {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Attempt(nil), h.attempts...)
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func itoa(n int) string     { return strconv.Itoa(n) }
func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// systemErrorsThen returns a server that answers the first fails requests
// with 500 SYSTEM_ERROR and every later one with 200 and body.
func systemErrorsThen(t testing.TB, clk *fakeClock, fails int, body string) *wxServer {
	return newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		if n <= fails {
			s.reply(w, 500, `{"code":"SYSTEM_ERROR","message":"系统异常，请使用相同参数稍后重新调用"}`)
			return
		}
		s.reply(w, 200, body)
	})
}
