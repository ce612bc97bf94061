package wxpaysim

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FaultKind is what a fault does to a request.
type FaultKind int

// Fault kinds. The first group answers instead of WeChat Pay's business
// logic (nothing takes effect); DropAfter and the signature faults let the
// request take effect and then spoil the answer.
const (
	// SystemError answers 500 SYSTEM_ERROR (signed).
	SystemError FaultKind = iota + 1
	// RateLimit answers 429 RATELIMIT_EXCEEDED with Retry-After.
	RateLimit
	// Latency delays the answer by Delay, then answers normally.
	Latency
	// Hang holds the request for Delay (default: until the client gives
	// up), then closes the connection without an answer.
	Hang
	// DropBefore closes the connection without executing the request.
	DropBefore
	// Gateway answers an unsigned 502 with an HTML body, as a proxy would.
	Gateway
	// DropAfter executes the request, then closes the connection without
	// an answer: the caller cannot know it took effect.
	DropAfter
	// SlowAfter executes the request, then delays the answer by Delay: the
	// request has taken effect long before its caller learns so.
	SlowAfter
	// BadSignature answers with a signature that does not verify.
	BadSignature
	// MissingSignature answers without any Wechatpay-* header.
	MissingSignature
	// ProbeSignature answers with a WECHATPAY/SIGNTEST/ signature.
	ProbeSignature
	// StaleTimestamp signs the answer with a timestamp 6 minutes old.
	StaleTimestamp
	// UnknownSerial names a WeChat Pay key the client does not have.
	UnknownSerial
)

var kindNames = map[FaultKind]string{
	SystemError: "system_error", RateLimit: "rate_limit", Latency: "latency", Hang: "hang",
	DropBefore: "drop_before", Gateway: "gateway", DropAfter: "drop_after", SlowAfter: "slow_after", BadSignature: "bad_signature",
	MissingSignature: "missing_signature", ProbeSignature: "probe_signature", StaleTimestamp: "stale_timestamp",
	UnknownSerial: "unknown_serial",
}

// String returns the kind's name as [ParseFaults] spells it.
func (k FaultKind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

// before reports whether the fault answers before the business logic runs.
func (k FaultKind) before() bool { return k >= SystemError && k <= Gateway }

// FaultKinds lists every fault kind's name.
func FaultKinds() []string {
	out := make([]string, 0, len(kindNames))
	for k := SystemError; k <= UnknownSerial; k++ {
		out = append(out, k.String())
	}
	return out
}

// Fault injects one kind of failure into matching requests.
type Fault struct {
	Kind FaultKind
	// Endpoint limits the fault to one endpoint (see [Endpoints]); "" is all.
	Endpoint string
	// Key limits the fault to requests naming this id (sub_mchid,
	// applyment_id, out_request_no, out_apply_no or business_code); "" is
	// any.
	Key string
	// Times is how many requests the fault hits before it is spent; 0 is
	// unlimited.
	Times int
	// Rate is the probability that a matching request is hit; 0 is 1.
	Rate float64
	// Delay is the latency added (Latency, SlowAfter) or how long a
	// request is held (Hang; 0 holds it until the client gives up).
	Delay time.Duration
	// RetryAfter is the Retry-After of a RateLimit answer; default 1s.
	RetryAfter time.Duration
}

// String formats f in the syntax [ParseFaults] reads.
func (f Fault) String() string {
	var b strings.Builder
	b.WriteString(f.Kind.String())
	if f.Endpoint != "" || f.Key != "" {
		b.WriteString("@" + f.Endpoint)
		if f.Key != "" {
			b.WriteString("/" + f.Key)
		}
	}
	var opts []string
	if f.Times > 0 {
		opts = append(opts, "times="+strconv.Itoa(f.Times))
	}
	if f.Rate > 0 {
		opts = append(opts, "rate="+strconv.FormatFloat(f.Rate, 'g', -1, 64))
	}
	if f.Delay > 0 {
		opts = append(opts, "delay="+f.Delay.String())
	}
	if f.RetryAfter > 0 {
		opts = append(opts, "retry_after="+f.RetryAfter.String())
	}
	if len(opts) > 0 {
		b.WriteString(":" + strings.Join(opts, ","))
	}
	return b.String()
}

// Validate reports every problem of f at once.
func (f Fault) Validate() error {
	var errs []error
	if _, ok := kindNames[f.Kind]; !ok {
		errs = append(errs, fmt.Errorf("unknown fault kind %d", f.Kind))
	}
	if f.Endpoint != "" && !slices.Contains(Endpoints(), f.Endpoint) {
		errs = append(errs, fmt.Errorf("unknown endpoint %q (want one of %s)", f.Endpoint, strings.Join(Endpoints(), ", ")))
	}
	if f.Times < 0 {
		errs = append(errs, errors.New("times must not be negative"))
	}
	if f.Rate < 0 || f.Rate > 1 || f.Rate != f.Rate {
		errs = append(errs, errors.New("rate must be within 0..1"))
	}
	if f.Delay < 0 || f.RetryAfter < 0 {
		errs = append(errs, errors.New("delay and retry_after must not be negative"))
	}
	if (f.Kind == Latency || f.Kind == SlowAfter) && f.Delay == 0 {
		errs = append(errs, fmt.Errorf("%s needs a delay", f.Kind))
	}
	return errors.Join(errs...)
}

// ErrFaultSpec is matched by every error [ParseFaults] returns.
var ErrFaultSpec = errors.New("wxpaysim: invalid fault specification")

type specError struct {
	index int
	fault string
	err   error
}

func (e *specError) Error() string {
	return fmt.Sprintf("wxpaysim: fault %d %q: %v", e.index+1, e.fault, e.err)
}
func (e *specError) Is(target error) bool { return target == ErrFaultSpec }
func (e *specError) Unwrap() error        { return e.err }

// ParseFaults reads faults written as
//
//	kind[@endpoint[/key]][:option=value[,option=value…]][;…]
//
// with kind one of [FaultKinds], endpoint one of [Endpoints] (or empty for
// all), and options times=N, rate=F (0..1), delay=D and retry_after=D (Go
// durations). Examples:
//
//	system_error@confirm-cancel:times=2
//	latency:delay=100ms;system_error:rate=0.1
//	drop_after@confirm-cancel/2000001234:times=1
//
// An empty spec yields no faults. Errors match [ErrFaultSpec] and name the
// fault at fault.
func ParseFaults(spec string) ([]Fault, error) {
	var out []Fault
	for i, raw := range strings.Split(spec, ";") {
		item := strings.TrimSpace(raw)
		if item == "" {
			continue
		}
		f, err := parseFault(item)
		if err == nil {
			err = f.Validate()
		}
		if err != nil {
			return nil, &specError{index: i, fault: printableSpec(item), err: err}
		}
		out = append(out, f)
	}
	return out, nil
}

func parseFault(item string) (Fault, error) {
	var f Fault
	head, opts, hasOpts := strings.Cut(item, ":")
	kind, target, hasTarget := strings.Cut(head, "@")
	found := false
	for k, n := range kindNames {
		if n == strings.TrimSpace(kind) {
			f.Kind, found = k, true
		}
	}
	if !found {
		return f, fmt.Errorf("unknown kind %q (want one of %s)", printableSpec(kind), strings.Join(FaultKinds(), ", "))
	}
	if hasTarget {
		f.Endpoint, f.Key, _ = strings.Cut(strings.TrimSpace(target), "/")
		if f.Endpoint == "*" {
			f.Endpoint = ""
		}
		if hasTarget && f.Endpoint == "" && f.Key == "" {
			return f, errors.New("empty target after @")
		}
	}
	if !hasOpts {
		return f, nil
	}
	for _, opt := range strings.Split(opts, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(opt), "=")
		if !ok {
			return f, fmt.Errorf("option %q is not name=value", printableSpec(opt))
		}
		var err error
		switch name {
		case "times":
			f.Times, err = strconv.Atoi(value)
		case "rate":
			f.Rate, err = strconv.ParseFloat(value, 64)
		case "delay":
			f.Delay, err = time.ParseDuration(value)
		case "retry_after":
			f.RetryAfter, err = time.ParseDuration(value)
		default:
			return f, fmt.Errorf("unknown option %q (want times, rate, delay or retry_after)", printableSpec(name))
		}
		if err != nil {
			return f, fmt.Errorf("option %s: %q is not a valid value", name, printableSpec(value))
		}
	}
	return f, nil
}

// printableSpec shortens and sanitises user input quoted in an error.
func printableSpec(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if r := []rune(s); len(r) > 64 {
		s = string(r[:64]) + "…"
	}
	return s
}

type activeFault struct {
	Fault
	left int // remaining hits when Times > 0
}

// SetFaults replaces the faults in force. Every fault is validated first;
// on error none is installed.
func (s *Server) SetFaults(faults ...Fault) error {
	var errs []error
	active := make([]*activeFault, 0, len(faults))
	for i, f := range faults {
		if err := f.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("fault %d (%s): %w", i+1, f, err))
		}
		active = append(active, &activeFault{Fault: f, left: f.Times})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = active
	return nil
}

// AddFaults adds faults to those in force.
func (s *Server) AddFaults(faults ...Fault) error {
	for i, f := range faults {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("fault %d (%s): %w", i+1, f, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		s.faults = append(s.faults, &activeFault{Fault: f, left: f.Times})
	}
	return nil
}

// pickFault returns the fault that hits a request, if any: the first
// matching non-latency fault that fires, else the first latency fault that
// fires (its delay then applies before a normal answer).
func (s *Server) pickFault(endpoint string, keys []string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	var latency *Fault
	for _, f := range s.faults {
		if f.Endpoint != "" && f.Endpoint != endpoint {
			continue
		}
		if f.Key != "" && !slices.Contains(keys, f.Key) {
			continue
		}
		if f.Times > 0 && f.left == 0 {
			continue
		}
		if f.Kind == Latency && latency != nil {
			continue
		}
		if f.Rate > 0 && f.Rate < 1 && s.rng.Float64() >= f.Rate {
			continue
		}
		if f.Times > 0 {
			f.left--
		}
		if f.Kind == Latency {
			ff := f.Fault
			latency = &ff
			continue
		}
		ff := f.Fault
		return &ff
	}
	return latency
}
