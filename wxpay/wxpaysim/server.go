package wxpaysim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
)

// MaxRequestBody is the largest request body the simulator reads; a larger
// one is answered 400 INVALID_REQUEST.
const MaxRequestBody = 1 << 20

// MaxSignatureCacheTTL bounds [Options.SignatureCacheTTL]: a cached signature
// must stay well inside the 5 minutes a client accepts.
const MaxSignatureCacheTTL = 2 * time.Minute

// Options configures a [Server]. Every zero field takes the default named in
// its comment.
type Options struct {
	// Key is the WeChat Pay private key responses are signed with and
	// encrypted fields are decrypted with; a fresh 2048-bit key when nil.
	Key *rsa.PrivateKey
	// PublicKeyID is the id of Key's public half, sent as Wechatpay-Serial;
	// default "PUB_KEY_ID_" followed by 28 random digits.
	PublicKeyID string

	// Clock gives the time of signatures, timestamps checks and state
	// changes; default time.Now.
	Clock func() time.Time
	// Seed seeds the randomness of fault rates and generated ids; default
	// random.
	Seed uint64

	// Step is how long a cancel-withdraw application or an old-flow cancel
	// application stays in a state before moving on by itself, on the
	// simulator's clock: ACCEPTED → REVIEWING → WAITING_MERCHANT_CONFIRM (or
	// REJECTED for a sub-merchant not allowed to cancel); after
	// confirmation SYSTEM_PROCESSING → CANCELED → FINISH, or, with a
	// withdrawal, CANCELED → FUND_PROCESSING (withdraw_state
	// WITHDRAW_PROCESSING) → FUND_PROCESSING (WITHDRAW_SUCCEED) → FINISH
	// (WITHDRAW_SUCCEED); REVIEWING → CANCEL_SUCCESS for an old-flow
	// application. Zero: states change only on confirmation.
	Step time.Duration
	// RevokeAfter is how long an application waits in
	// WAITING_MERCHANT_CONFIRM before it is REVOKED, when Step is set;
	// default 30 days, as WeChat Pay documents.
	RevokeAfter time.Duration

	// AutoCreate makes unknown sub-merchants, applications and applyments
	// spring into existence on first use, in the state that lets the request
	// succeed (an application found by a query or a confirmation is
	// WAITING_MERCHANT_CONFIRM). For the demo and the benchmarks; tests seed
	// the model instead and get NOT_FOUND otherwise.
	AutoCreate bool

	// Latency delays every answer (before any fault).
	Latency time.Duration

	// SignatureCacheTTL, when positive, reuses the signature of an identical
	// response body for that long instead of spending an RSA signature per
	// response, so that a benchmark's simulator does not compete with the
	// client for CPU. At most [MaxSignatureCacheTTL]. Default 0: every
	// response is signed afresh.
	SignatureCacheTTL time.Duration

	// RequestLog is how many requests [Server.Requests] remembers; default
	// 10000 (counts by endpoint are kept for every request regardless).
	RequestLog int
}

// Server simulates WeChat Pay. It is an http.Handler and safe for
// concurrent use; create it with [New].
type Server struct {
	key         *rsa.PrivateKey
	publicKeyID string
	clock       func() time.Time
	latency     time.Duration
	cacheTTL    time.Duration

	signer *wxpay.Signer

	mu        sync.Mutex // guards merchants, nonces, faults, rng and the log
	merchants map[string]registered
	nonces    map[string]int64 // mchid + nonce → unix time it expires
	faults    []*activeFault
	rng       *mrand.Rand
	model     *model
	log       []Request
	logNext   int
	logSize   int
	counts    map[string]int

	sigMu    sync.Mutex
	sigCache map[string]cachedSignature
	rsaSigns atomic.Int64 // RSA signatures made (Signatures)

	seq atomic.Uint64
}

type registered struct {
	serial string
	key    *rsa.PublicKey
}

type cachedSignature struct {
	timestamp, nonce, signature string
	at                          time.Time
}

// Request is one request as the simulator saw it.
type Request struct {
	At       time.Time // when it arrived (the simulator's clock)
	Method   string
	URI      string // escaped path and query
	Endpoint string // the command type the path belongs to; "" for an unknown path
	Keys     []string
	MchID    string
	Status   int    // 0 when the connection was dropped
	Fault    string // the fault injected, if any
	// Applied: the model executed the request (its effect stands, for a
	// POST), whether or not the answer reached the client (DropAfter).
	Applied bool
	Body    []byte // the request body as received (encrypted fields stay encrypted)
}

// New returns a Server.
func New(o Options) (*Server, error) {
	var errs []error
	if o.SignatureCacheTTL < 0 || o.SignatureCacheTTL > MaxSignatureCacheTTL {
		errs = append(errs, fmt.Errorf("wxpaysim: SignatureCacheTTL %v is outside 0..%v", o.SignatureCacheTTL, MaxSignatureCacheTTL))
	}
	if o.Step < 0 || o.RevokeAfter < 0 || o.Latency < 0 || o.RequestLog < 0 {
		errs = append(errs, errors.New("wxpaysim: Step, RevokeAfter, Latency and RequestLog must not be negative"))
	}
	if o.PublicKeyID != "" && !validPublicKeyID(o.PublicKeyID) {
		errs = append(errs, fmt.Errorf("wxpaysim: PublicKeyID must start with %q", wxpay.PublicKeyIDPrefix))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	seed := o.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = new(big.Int).SetBytes(b[:]).Uint64() | 1
	}
	s := &Server{
		key: o.Key, publicKeyID: o.PublicKeyID, clock: o.Clock, latency: o.Latency, cacheTTL: o.SignatureCacheTTL,
		merchants: map[string]registered{}, nonces: map[string]int64{},
		rng: mrand.New(mrand.NewPCG(seed, seed>>1|1)), counts: map[string]int{},
		logSize: o.RequestLog, sigCache: map[string]cachedSignature{},
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.logSize == 0 {
		s.logSize = 10000
	}
	if s.key == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("wxpaysim: generating the WeChat Pay key: %w", err)
		}
		s.key = k
	}
	if s.publicKeyID == "" {
		s.publicKeyID = wxpay.PublicKeyIDPrefix + digits(s.rng, 28)
	}
	signer, err := wxpay.NewSigner("wechatpay", s.publicKeyID, s.key)
	if err != nil {
		return nil, err
	}
	s.signer = signer
	s.model = newModel(o.Step, o.RevokeAfter, o.AutoCreate, seed)
	return s, nil
}

func validPublicKeyID(id string) bool {
	return len(id) > len(wxpay.PublicKeyIDPrefix) && id[:len(wxpay.PublicKeyIDPrefix)] == wxpay.PublicKeyIDPrefix
}

func digits(r *mrand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + r.IntN(10))
	}
	return string(b)
}

// PublicKeyID returns the id of the simulator's WeChat Pay public key.
func (s *Server) PublicKeyID() string { return s.publicKeyID }

// PublicKey returns the simulator's WeChat Pay public key, which verifies
// its responses and encrypts sensitive request fields.
func (s *Server) PublicKey() *rsa.PublicKey { return &s.key.PublicKey }

// Register lets merchant mchID call the simulator with requests signed by the
// private key of pub, whose API certificate serial is serial. Registering a
// merchant again replaces its key.
func (s *Server) Register(mchID, serial string, pub *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.merchants[mchID] = registered{serial: serial, key: pub}
}

// Requests returns the most recent requests (up to [Options.RequestLog])
// in the order they ended: a request is recorded once it is answered,
// dropped, or its client has gone away, so a slow request comes after one
// that arrived later and was answered first (sort by At for the order of
// arrival).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(s.logNext, s.logSize)
	out := make([]Request, 0, n)
	for i := s.logNext - n; i < s.logNext; i++ {
		out = append(out, s.log[i%s.logSize])
	}
	return out
}

// Count returns how many requests reached endpoint (a command type such as
// "confirm-cancel"; "" counts requests to unknown paths), including refused
// and faulted ones.
func (s *Server) Count(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[endpoint]
}

// Total returns how many requests the simulator has received.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logNext
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		s.log = make([]Request, s.logSize)
	}
	s.log[s.logNext%s.logSize] = r
	s.logNext++
	s.counts[r.Endpoint]++
}

// apiError is an error answer of the simulated API.
type apiError struct {
	status  int
	code    string
	message string
	detail  map[string]any
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (e *apiError) body() []byte {
	v := map[string]any{"code": e.code, "message": e.message}
	if e.detail != nil {
		v["detail"] = e.detail
	}
	b, _ := json.Marshal(v)
	return b
}

// ServeHTTP answers one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.clock()
	rec := Request{At: now, Method: r.Method, URI: r.URL.RequestURI()}
	// The request is recorded before its answer is written or its
	// connection dropped, so that a client that has seen the outcome finds
	// the request in Count and Requests; a request whose client went away
	// is recorded on return.
	recorded := false
	commit := func(status int) {
		rec.Status, recorded = status, true
		s.record(rec)
	}
	defer func() {
		if !recorded {
			s.record(rec)
		}
	}()
	fail := func(e *apiError) {
		commit(e.status)
		s.writeError(w, e)
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBody+1))
	if err != nil {
		fail(errorf(http.StatusBadRequest, wxpay.CodeInvalidRequest, "reading the request body: %v", err))
		return
	}
	rec.Body = body
	route, aerr := s.route(r, body)
	rec.Endpoint, rec.Keys = route.endpoint, route.keys
	if aerr == nil && len(body) > MaxRequestBody {
		aerr = errorf(http.StatusBadRequest, wxpay.CodeInvalidRequest, "the request body is larger than %d bytes", MaxRequestBody)
	}
	if aerr == nil {
		rec.MchID, aerr = s.authenticate(r, body, now)
	}
	if aerr != nil {
		fail(aerr)
		return
	}

	if s.latency > 0 && !sleep(r, s.latency) {
		return
	}
	f := s.pickFault(route.endpoint, route.keys)
	if f != nil {
		rec.Fault = f.Kind.String()
	}
	if f != nil && f.Kind.before() {
		switch f.Kind {
		case Latency:
			// pickFault returns latency faults only when nothing else fires.
		case SystemError:
			fail(errorf(http.StatusInternalServerError, wxpay.CodeSystemError, "系统异常,请稍后重试"))
			return
		case RateLimit:
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(f.RetryAfter/time.Second))))
			fail(errorf(http.StatusTooManyRequests, wxpay.CodeRateLimitExceeded, "请降低频率后重试"))
			return
		case Gateway:
			commit(http.StatusBadGateway)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
			return
		case Hang:
			d := f.Delay
			if d == 0 {
				d = time.Hour
			}
			sleep(r, d)
			commit(0)
			drop(w)
			return
		case DropBefore:
			commit(0)
			drop(w)
			return
		}
	}
	if f != nil && f.Kind == Latency && !sleep(r, f.Delay) {
		return
	}

	status, out, aerr := s.model.handle(route, body, s.key, s.publicKeyID, now)
	if aerr != nil {
		fail(aerr)
		return
	}
	rec.Applied = true
	if f != nil && f.Kind == DropAfter {
		commit(0)
		drop(w)
		return
	}
	if f != nil && f.Kind == SlowAfter && !sleep(r, f.Delay) {
		return // applied, and the client went away: recorded on return
	}
	var kind FaultKind
	if f != nil {
		kind = f.Kind
	}
	commit(status)
	s.write(w, status, out, kind)
}

// sleep waits d or until the client goes away; it reports whether d passed.
func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func (s *Server) writeError(w http.ResponseWriter, e *apiError) int {
	return s.write(w, e.status, e.body(), 0)
}

// write sends a signed answer, altered by a signature fault when kind is one.
func (s *Server) write(w http.ResponseWriter, status int, body []byte, kind FaultKind) int {
	h := w.Header()
	h.Set("Request-ID", s.requestID())
	if body != nil {
		h.Set("Content-Type", "application/json; charset=utf-8")
	}
	if kind != MissingSignature {
		now := s.clock()
		if kind == StaleTimestamp {
			now = now.Add(-wxpay.MaxClockSkew - time.Minute)
		}
		ts, nonce, sig := s.sign(body, now, kind == StaleTimestamp)
		switch kind {
		case BadSignature:
			sig = corrupt(sig)
		case ProbeSignature:
			sig = wxpay.ProbeSignaturePrefix + sig
		}
		serial := s.publicKeyID
		if kind == UnknownSerial {
			serial = wxpay.PublicKeyIDPrefix + "0000000000000000000000000000"
		}
		h.Set(wxpay.HeaderTimestamp, ts)
		h.Set(wxpay.HeaderNonce, nonce)
		h.Set(wxpay.HeaderSignature, sig)
		h.Set(wxpay.HeaderSerial, serial)
	}
	if body == nil {
		w.WriteHeader(status)
		return status
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	return status
}

// corrupt flips a bit of a Base64 signature, keeping it valid Base64.
func corrupt(sig string) string {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(raw) == 0 {
		return "AAAA"
	}
	raw[len(raw)/2] ^= 0x01
	return base64.StdEncoding.EncodeToString(raw)
}

// Presign signs answer bodies ahead of the requests that will get them and
// keeps the signatures in the signature cache, so that answering them costs
// no RSA signature while they last (Options.SignatureCacheTTL from now; it
// does nothing when the cache is off). A benchmark whose answers are unique
// (a confirmation's, see ConfirmationAnswer) signs them before the part it
// measures.
func (s *Server) Presign(bodies ...[]byte) {
	if s.cacheTTL <= 0 {
		return
	}
	now := s.clock()
	for _, b := range bodies {
		s.sign(b, now, false)
	}
}

// Signatures returns how many RSA signatures the server has made for its
// answers (cached signatures reused are not counted).
func (s *Server) Signatures() int64 { return s.rsaSigns.Load() }

// sign returns the timestamp, nonce and signature of a response body, from
// the cache when allowed.
func (s *Server) sign(body []byte, now time.Time, fresh bool) (ts, nonce, sig string) {
	useCache := s.cacheTTL > 0 && !fresh
	if useCache {
		s.sigMu.Lock()
		c, ok := s.sigCache[string(body)]
		s.sigMu.Unlock()
		if ok && now.Sub(c.at) < s.cacheTTL && !now.Before(c.at) {
			return c.timestamp, c.nonce, c.signature
		}
	}
	ts = strconv.FormatInt(now.Unix(), 10)
	nonce = fmt.Sprintf("SIM%016X%013d", s.seq.Add(1), now.UnixMilli())
	sum := sha256.Sum256(wxpay.ResponseMessage(ts, nonce, body))
	raw, err := rsa.SignPKCS1v15(nil, s.key, crypto.SHA256, sum[:])
	s.rsaSigns.Add(1)
	if err != nil {
		// Signing with a valid key does not fail; answer unsigned if it did.
		return ts, nonce, ""
	}
	sig = base64.StdEncoding.EncodeToString(raw)
	if useCache {
		s.sigMu.Lock()
		if len(s.sigCache) > 100000 {
			clear(s.sigCache)
		}
		s.sigCache[string(body)] = cachedSignature{timestamp: ts, nonce: nonce, signature: sig, at: now}
		s.sigMu.Unlock()
	}
	return ts, nonce, sig
}

func (s *Server) requestID() string {
	return fmt.Sprintf("08%08X%016X", uint32(s.clock().Unix()), s.seq.Add(1))
}

// authenticate checks a request's Authorization as WeChat Pay does and
// returns the merchant id. A nonce is accepted once per merchant within the
// timestamp window.
func (s *Server) authenticate(r *http.Request, body []byte, now time.Time) (string, *apiError) {
	signErr := func(format string, args ...any) *apiError {
		return errorf(http.StatusUnauthorized, wxpay.CodeSignError, format, args...)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", signErr("缺少Authorization请求头")
	}
	a, err := wxpay.ParseAuthorization(h)
	if err != nil {
		return "", signErr("Authorization请求头格式错误")
	}
	ts, err := strconv.ParseInt(a.Timestamp, 10, 64)
	if err != nil {
		return a.MchID, signErr("timestamp不是整数")
	}
	if d, ok := wxpay.TimestampSkew(now, ts); !ok || d >= wxpay.MaxClockSkew {
		return a.MchID, signErr("timestamp与系统时间相差超过5分钟")
	}
	s.mu.Lock()
	m, ok := s.merchants[a.MchID]
	s.mu.Unlock()
	switch {
	case !ok:
		return a.MchID, signErr("商户号%s未登记", a.MchID)
	case !equalSerial(m.serial, a.SerialNo):
		return a.MchID, signErr("商户证书序列号有误")
	}
	sig, err := base64.StdEncoding.DecodeString(a.Signature)
	if err != nil {
		return a.MchID, signErr("签名不是Base64")
	}
	sum := sha256.Sum256(wxpay.RequestMessage(r.Method, r.URL.RequestURI(), ts, a.Nonce, body))
	if rsa.VerifyPKCS1v15(m.key, crypto.SHA256, sum[:], sig) != nil {
		return a.MchID, signErr("签名错误")
	}
	key := a.MchID + "\x00" + a.Nonce
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, seen := s.nonces[key]; seen && exp > now.Unix() {
		return a.MchID, signErr("nonce_str重复")
	}
	if len(s.nonces) > 1<<16 {
		for k, exp := range s.nonces {
			if exp <= now.Unix() {
				delete(s.nonces, k)
			}
		}
	}
	s.nonces[key] = now.Add(2 * wxpay.MaxClockSkew).Unix()
	return a.MchID, nil
}

// equalSerial compares certificate serials as WeChat Pay prints them: hex,
// case-insensitive, leading zeros optional.
func equalSerial(a, b string) bool {
	x, okA := new(big.Int).SetString(a, 16)
	y, okB := new(big.Int).SetString(b, 16)
	if !okA || !okB {
		return bytes.EqualFold([]byte(a), []byte(b))
	}
	return x.Cmp(y) == 0
}
