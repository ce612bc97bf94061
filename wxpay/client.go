package wxpay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// WeChat Pay API hosts.
const (
	// DefaultBaseURL is the primary host (the nearest access point).
	DefaultBaseURL = "https://api.mch.weixin.qq.com"
	// DefaultBackupBaseURL is the backup host (an access point in another
	// region), used when the primary cannot be reached.
	DefaultBackupBaseURL = "https://api2.mch.weixin.qq.com"
	// NoBackup as Config.BackupBaseURL disables failover.
	NoBackup = "-"
)

// Config defaults.
const (
	DefaultMaxConcurrency        = 64
	DefaultDialTimeout           = 5 * time.Second
	DefaultTLSHandshakeTimeout   = 5 * time.Second
	DefaultResponseHeaderTimeout = 10 * time.Second
	DefaultAttemptTimeout        = 15 * time.Second
	DefaultFailoverCooldown      = time.Minute
)

// Config configures a [Client]. Signer and Verifier are required; every
// other zero field takes the default named in its comment.
type Config struct {
	// Signer signs every request with the merchant API private key.
	Signer *Signer
	// Verifier verifies every response; its EncryptionKey encrypts the
	// sensitive fields and names the Wechatpay-Serial of every request.
	Verifier *Verifier

	// BaseURL is the primary API host; default [DefaultBaseURL]. It must be
	// https://, or http:// to a loopback host (127.0.0.0/8, ::1, localhost).
	BaseURL string
	// BackupBaseURL is where an attempt goes when the primary cannot be
	// reached; [NoBackup] ("-") disables failover. Empty means
	// [DefaultBackupBaseURL] when BaseURL is the default, and no backup when
	// BaseURL points elsewhere (a simulator must never fail over to the real
	// WeChat Pay).
	BackupBaseURL string

	// Retry shapes the backoff between the attempts of a call.
	Retry RetryPolicy

	// MaxConcurrency sizes the keep-alive pool per host; default 64.
	MaxConcurrency int

	// DialTimeout bounds connecting (DNS and TCP); default 5s.
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake; default 5s.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response headers once
	// the request is written; default 10s.
	ResponseHeaderTimeout time.Duration
	// AttemptTimeout bounds one whole attempt, body included; default 15s.
	AttemptTimeout time.Duration
	// FailoverCooldown is how long the backup is preferred after the primary
	// could not be reached; default 1m.
	FailoverCooldown time.Duration

	// Clock gives request timestamps and measures retry budgets; default
	// time.Now.
	Clock func() time.Time
	// Nonce gives the nonce of every attempt; default RandomNonce(nil).
	Nonce NonceFunc
	// Rand supplies the randomness of field encryption; default
	// crypto/rand.Reader.
	Rand io.Reader
	// Sleep waits between attempts and returns early with an error when ctx
	// ends; default a timer racing ctx.Done.
	Sleep func(ctx context.Context, d time.Duration) error

	// UserAgent names the client; default "wxcancel/<version> (+Go)".
	UserAgent string
	// Transport overrides the HTTP transport (the timeouts above other than
	// AttemptTimeout and MaxConcurrency then do not apply).
	Transport http.RoundTripper
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.Signer == nil {
		errs = append(errs, errors.New("wxpay: Config.Signer is required"))
	}
	if c.Verifier == nil {
		errs = append(errs, errors.New("wxpay: Config.Verifier is required"))
	}
	if c.BaseURL != "" {
		if _, err := parseBaseURL("base URL", c.BaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.BackupBaseURL != "" && c.BackupBaseURL != NoBackup {
		if _, err := parseBaseURL("backup base URL", c.BackupBaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Retry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxConcurrency < 0 {
		errs = append(errs, errors.New("wxpay: MaxConcurrency must not be negative"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DialTimeout", c.DialTimeout},
		{"TLSHandshakeTimeout", c.TLSHandshakeTimeout},
		{"ResponseHeaderTimeout", c.ResponseHeaderTimeout},
		{"AttemptTimeout", c.AttemptTimeout},
		{"FailoverCooldown", c.FailoverCooldown},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("wxpay: %s must not be negative", d.name))
		}
	}
	for i := 0; i < len(c.UserAgent); i++ {
		if b := c.UserAgent[i]; b < ' ' || b == 0x7f {
			errs = append(errs, errors.New("wxpay: UserAgent contains a control character"))
			break
		}
	}
	return errors.Join(errs...)
}

// Client calls the WeChat Pay APIv3 merchant-cancellation endpoints. It is
// safe for concurrent use. Every call signs each attempt afresh, verifies the
// answer's signature, retries transient failures and fails over to the
// backup host when the primary cannot be reached.
type Client struct {
	signer         *Signer
	verifier       *Verifier
	serial         string // Wechatpay-Serial of every request
	hosts          *hostSet
	retry          RetryPolicy // with defaults
	http           *http.Client
	attemptTimeout time.Duration
	clock          func() time.Time
	nonce          NonceFunc
	rand           io.Reader
	sleep          func(context.Context, time.Duration) error
	userAgent      string
}

// NewClient returns a Client for cfg, or every problem of cfg.
func NewClient(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	primaryRaw := cfg.BaseURL
	if primaryRaw == "" {
		primaryRaw = DefaultBaseURL
	}
	primary, _ := parseBaseURL("base URL", primaryRaw)
	hosts := &hostSet{primary: primary, cooldown: orDefault(cfg.FailoverCooldown, DefaultFailoverCooldown)}
	switch backupRaw := cfg.BackupBaseURL; {
	case backupRaw == NoBackup:
	case backupRaw == "":
		if primary.String() == DefaultBaseURL {
			hosts.backup, _ = parseBaseURL("backup base URL", DefaultBackupBaseURL)
		}
	default:
		hosts.backup, _ = parseBaseURL("backup base URL", backupRaw)
	}

	rt := cfg.Transport
	if rt == nil {
		maxConns := cfg.MaxConcurrency
		if maxConns == 0 {
			maxConns = DefaultMaxConcurrency
		}
		rt = newTransport(orDefault(cfg.DialTimeout, DefaultDialTimeout), orDefault(cfg.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout),
			orDefault(cfg.ResponseHeaderTimeout, DefaultResponseHeaderTimeout), maxConns)
	}
	c := &Client{
		signer:   cfg.Signer,
		verifier: cfg.Verifier,
		hosts:    hosts,
		retry:    cfg.Retry.withDefaults(),
		http: &http.Client{
			Transport: rt,
			// A redirect could move a signed request to another host; the
			// 3xx is reported as an APIError instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		attemptTimeout: orDefault(cfg.AttemptTimeout, DefaultAttemptTimeout),
		clock:          cfg.Clock,
		nonce:          cfg.Nonce,
		rand:           cfg.Rand,
		sleep:          cfg.Sleep,
		userAgent:      cfg.UserAgent,
	}
	c.serial, _ = cfg.Verifier.EncryptionKey()
	if c.clock == nil {
		c.clock = time.Now
	}
	if c.nonce == nil {
		c.nonce = RandomNonce(nil)
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	if c.sleep == nil {
		c.sleep = sleepContext
	}
	if c.userAgent == "" {
		c.userAgent = "wxcancel/" + moduleVersion() + " (+Go)"
	}
	return c, nil
}

// CloseIdleConnections closes the idle keep-alive connections of the
// client's transport. Calls in flight are not affected.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// MaxCallDuration bounds how long one call with the client's retry policy
// can take: no retry starts after the policy's MaxElapsed, and the last
// attempt, and a failover to the backup host, each take at most the
// attempt timeout. A caller that must know a call has ended (to hand its
// work over) waits this long.
func (c *Client) MaxCallDuration() time.Duration {
	return max(c.retry.MaxElapsed, 0) + 2*c.attemptTimeout
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// moduleVersion is the version of the main module as stamped by the Go
// toolchain, or "dev".
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Attempt describes one HTTP request of a call, for the hook set with
// [WithAttemptHook].
type Attempt struct {
	Number     int    // 1 for the first request of the call
	Method     string // GET or POST
	Path       string // request URI as signed and sent (escaped path and query)
	Host       string // host[:port] the request went to
	StatusCode int    // 0 when no HTTP answer came
	Err        error  // nil when this attempt succeeded
	Duration   time.Duration
	Sent       bool          // the request was written (or answered)
	Retry      bool          // another request follows
	Delay      time.Duration // wait before it (0 for a failover to the other host)
}

type callOptions struct {
	hook   func(Attempt)
	policy *RetryPolicy
	wait   func(ctx context.Context, d time.Duration) error
	gate   func(ctx context.Context) error
}

// CallOption adjusts one call.
type CallOption func(*callOptions)

// WithAttemptHook calls hook after every HTTP attempt of the call, before any
// wait for the next one, on the calling goroutine.
func WithAttemptHook(hook func(Attempt)) CallOption {
	return func(o *callOptions) { o.hook = hook }
}

// WithRetryWait makes the call wait between its attempts with wait instead
// of the client's Sleep: wait must return after d, or early with an error
// when ctx ends. A caller that bounds its work in flight can use it to give
// its place up while a call waits out a backoff.
func WithRetryWait(wait func(ctx context.Context, d time.Duration) error) CallOption {
	return func(o *callOptions) { o.wait = wait }
}

// WithSendGate calls gate before each attempt of the call is sent, once it
// is signed, on the calling goroutine: a caller can start something the
// request must wait for (such as reading a record that decides whether it
// may be sent at all) and have it overlap the signing. When gate returns an
// error, nothing is sent and the call ends with that error, wrapped
// (errors.Is finds it); that attempt is not counted. A nil gate is none.
func WithSendGate(gate func(ctx context.Context) error) CallOption {
	return func(o *callOptions) { o.gate = gate }
}

// WithRetryPolicy replaces the client's retry policy for one call; zero fields
// take the package defaults, not the client's.
func WithRetryPolicy(p RetryPolicy) CallOption {
	return func(o *callOptions) { o.policy = &p }
}

// Result describes how a call went. Every call returns one, even on error
// (Attempts is then possibly 0).
type Result struct {
	// StatusCode is the HTTP status of the last answer; 0 when none came.
	StatusCode int
	// Header holds the headers of the last answer.
	Header http.Header
	// Body is the raw, verified body of a successful answer; nil for 204
	// and on error.
	Body []byte
	// RequestID is the Request-ID header of the last answer.
	RequestID string
	// Attempts counts the HTTP requests attempted, one per host tried.
	Attempts int
	// Ambiguous is set when some attempt of a POST was sent and its answer
	// lost (or an unsigned 502/503/504 came back), or was answered with a
	// server error (5xx, SYSTEM_ERROR included) or 202: WeChat Pay may have
	// executed the request even though the call failed, or executed it
	// twice if the call then succeeded, and a retry may then be refused as
	// already done. Reconcile by querying.
	Ambiguous bool
	// Host is where the last attempt went.
	Host string
}

// request is one API call before signing.
type request struct {
	method string
	path   string // escaped path
	query  string // encoded query, without '?'
	body   []byte // nil for none; the same bytes on every attempt
}

// outcome is what one HTTP attempt produced.
type outcome struct {
	status  int
	header  http.Header
	body    []byte
	err     error
	sent    bool
	noReach bool // never sent and the caller's context is live: fail over
	local   bool // failed before any request (nonce, signing, send gate): no attempt
	took    time.Duration
}

// do runs one call: attempts with fresh signatures, failover and retries.
func (c *Client) do(ctx context.Context, r request, opts []CallOption) (*Result, error) {
	res := &Result{}
	var o callOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	policy := c.retry
	if o.policy != nil {
		if err := o.policy.Validate(); err != nil {
			return res, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		policy = o.policy.withDefaults()
	}
	unescaped, err := url.PathUnescape(r.path)
	if err != nil {
		return res, invalidArgument("the request path is not validly escaped")
	}
	target := &url.URL{Path: unescaped, RawPath: r.path, RawQuery: r.query}
	uri := target.RequestURI()
	if err := ctx.Err(); err != nil {
		return res, &canceledError{method: r.method, path: uri, ctxErr: err}
	}

	wait := c.sleep
	if o.wait != nil {
		wait = o.wait
	}
	sched := newSchedule(policy, c.clock)
	hook := func(a Attempt) {
		if o.hook != nil {
			o.hook(a)
		}
	}
	for {
		var out outcome
		var host *url.URL
		hosts := c.hosts.order(c.clock())
		for i, h := range hosts {
			host = h
			out = c.attempt(ctx, r, target, uri, h, o.gate)
			if out.local {
				return res, out.err
			}
			res.Attempts++
			res.Host = h.Host
			res.StatusCode, res.Header, res.Body, res.RequestID = out.status, out.header, nil, ""
			if out.header != nil {
				res.RequestID = requestID(out.header)
			}
			// An answer lost after a POST was sent leaves its outcome
			// unknown: WeChat Pay may have executed it. wechatpay-java
			// treated such I/O errors as safe to resend and replayed POSTs
			// that had already been executed (its issue #180). The POST is
			// still retried here, with byte-identical parameters as WeChat
			// Pay asks, but the call is flagged so the caller reconciles.
			if errors.Is(out.err, ErrAmbiguous) || r.method == http.MethodPost && mayHaveActed(out.status) {
				res.Ambiguous = true
			}
			if out.noReach {
				c.hosts.unreachable(h, c.clock())
			} else if out.sent {
				c.hosts.reached(h)
			}
			if out.noReach && i+1 < len(hosts) {
				hook(c.attemptInfo(res, r.method, uri, h, out, true, 0))
				continue
			}
			break
		}
		if out.err == nil {
			res.Body = out.body
			hook(c.attemptInfo(res, r.method, uri, host, out, false, 0))
			return res, nil
		}
		if cerr := ctx.Err(); cerr != nil {
			hook(c.attemptInfo(res, r.method, uri, host, out, false, 0))
			return res, &canceledError{method: r.method, path: uri, ctxErr: cerr, last: out.err}
		}
		if !Retryable(out.err) {
			hook(c.attemptInfo(res, r.method, uri, host, out, false, 0))
			return res, out.err
		}
		var retryAfter time.Duration
		var haveRetryAfter bool
		if out.status == http.StatusTooManyRequests {
			retryAfter, haveRetryAfter = parseRetryAfter(out.header.Get("Retry-After"), c.clock())
		}
		delay, again := sched.next(retryAfter, haveRetryAfter)
		hook(c.attemptInfo(res, r.method, uri, host, out, again, delay))
		if !again {
			return res, out.err
		}
		if serr := wait(ctx, delay); serr != nil {
			if cerr := ctx.Err(); cerr != nil {
				serr = cerr
			}
			return res, &canceledError{method: r.method, path: uri, ctxErr: serr, last: out.err}
		}
	}
}

// mayHaveActed reports whether an answer with this status leaves open
// whether WeChat Pay executed the request: a server error (WeChat Pay asks
// for SYSTEM_ERROR to be retried with the same parameters, its outcome
// unknown) or 202 (accepted, still processing).
func mayHaveActed(status int) bool {
	return status >= 500 || status == http.StatusAccepted
}

func (c *Client) attemptInfo(res *Result, method, uri string, host *url.URL, out outcome, retry bool, delay time.Duration) Attempt {
	return Attempt{
		Number: res.Attempts, Method: method, Path: uri, Host: host.Host,
		StatusCode: out.status, Err: out.err, Duration: out.took,
		Sent: out.sent, Retry: retry, Delay: delay,
	}
}

// attempt sends one signed request to host and reads and verifies its answer.
func (c *Client) attempt(ctx context.Context, r request, target *url.URL, uri string, host *url.URL, gate func(context.Context) error) (out outcome) {
	nonce, err := c.nonce()
	if err != nil {
		return outcome{err: fmt.Errorf("wxpay: %s %s: %w", r.method, uri, err), local: true}
	}
	start := c.clock()
	auth, err := c.signer.Authorization(r.method, uri, r.body, start.Unix(), nonce)
	if err != nil {
		return outcome{err: fmt.Errorf("wxpay: %s %s: %w", r.method, uri, err), local: true}
	}
	if gate != nil {
		if err := gate(ctx); err != nil {
			return outcome{err: fmt.Errorf("wxpay: %s %s: not sent: %w", r.method, uri, err), local: true}
		}
	}
	defer func() { out.took = c.clock().Sub(start) }()

	actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	actx, abort := context.WithCancelCause(actx)
	defer abort(nil)
	var sent atomic.Bool
	var conns atomic.Int32
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		// A second connection for one request is net/http sending it again
		// by itself (a kept-alive connection closed without an answer, an
		// HTTP/2 stream refused), with the same nonce and signature.
		GotConn: func(httptrace.GotConnInfo) {
			if conns.Add(1) > 1 {
				abort(errResentByTransport)
			}
		},
		WroteHeaders: func() { sent.Store(true) },
	})
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, host.String(), body)
	if err != nil {
		return outcome{err: fmt.Errorf("wxpay: %s %s: %w", r.method, uri, err), local: true}
	}
	u := *target
	u.Scheme, u.Host = host.Scheme, host.Host
	req.URL = &u
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set(HeaderSerial, c.serial)
	if len(r.body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}

	transportErr := func(sent bool, cause error) outcome {
		var ue *url.Error
		if errors.As(cause, &ue) {
			cause = ue.Err
		}
		switch {
		case ctx.Err() != nil:
		case errors.Is(context.Cause(actx), errResentByTransport):
			cause = errResentByTransport
		case errors.Is(actx.Err(), context.DeadlineExceeded):
			cause = &attemptTimeoutError{limit: c.attemptTimeout}
		}
		return outcome{
			err:     &TransportError{Method: r.method, Path: uri, Host: host.Host, Sent: sent, Err: cause},
			sent:    sent,
			noReach: !sent && ctx.Err() == nil,
		}
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return transportErr(sent.Load(), err)
	}
	defer resp.Body.Close()
	out = outcome{status: resp.StatusCode, header: resp.Header, sent: true}
	status := resp.StatusCode
	success := status >= 200 && status < 300
	signed := resp.Header.Get(HeaderSignature) != ""
	if !success && !signed && (status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout) {
		out.err = &TransportError{Method: r.method, Path: uri, Host: host.Host, Sent: true, Err: &gatewayError{status: status}}
		return out
	}
	limit := MaxErrorBody
	if success {
		limit = MaxSuccessBody
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		failed := transportErr(true, err)
		failed.status, failed.header = out.status, out.header
		return failed
	}
	tooLarge := len(data) > limit
	if success || signed {
		reqID := requestID(resp.Header)
		if tooLarge {
			out.err = &responseError{method: r.method, path: uri, requestID: reqID, status: status, err: &tooLargeError{limit: limit}}
			return out
		}
		if verr := c.verifier.Verify(resp.Header, data); verr != nil {
			out.err = &responseError{method: r.method, path: uri, requestID: reqID, status: status, err: verr}
			return out
		}
	}
	if tooLarge {
		data = data[:limit]
	}
	if success && status != http.StatusAccepted {
		if len(data) > 0 {
			out.body = data
		}
		return out
	}
	out.err = newAPIError(r.method, uri, status, resp.Header, data, signed)
	return out
}
