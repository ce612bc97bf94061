package wxpay

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Retry policy defaults (WXPAY_RETRY_* in the README's configuration table).
const (
	DefaultInitialInterval     = 500 * time.Millisecond
	DefaultMaxInterval         = 10 * time.Second
	DefaultMaxElapsed          = 30 * time.Second
	DefaultMultiplier          = 2.0
	DefaultRandomizationFactor = 0.5
)

// RetryPolicy shapes the exponential backoff (with jitter) between the
// attempts of one call. A zero field takes its default.
type RetryPolicy struct {
	// InitialInterval is the delay before the first retry; default 500ms.
	InitialInterval time.Duration
	// MaxInterval caps the growing interval and any Retry-After delay;
	// default 10s.
	MaxInterval time.Duration
	// MaxElapsed bounds the whole call, measured from its first attempt:
	// no retry starts after it; default 30s. Negative: no retries at all
	// (one attempt, plus failover to the backup host if the primary cannot
	// be reached).
	MaxElapsed time.Duration
	// Multiplier grows the interval after each retry; default 2, at least 1.
	Multiplier float64
	// RandomizationFactor spreads each delay uniformly over
	// interval·[1−f, 1+f]; default 0.5, at most 1. Negative: no jitter.
	RandomizationFactor float64
}

// Validate reports every problem of the policy at once.
func (p RetryPolicy) Validate() error {
	var errs []error
	if p.InitialInterval < 0 {
		errs = append(errs, errors.New("wxpay: retry initial interval must not be negative"))
	}
	if p.MaxInterval < 0 {
		errs = append(errs, errors.New("wxpay: retry max interval must not be negative"))
	}
	if p.Multiplier != 0 && (p.Multiplier < 1 || math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0)) {
		errs = append(errs, fmt.Errorf("wxpay: retry multiplier must be at least 1 (got %g)", p.Multiplier))
	}
	if p.RandomizationFactor > 1 || math.IsNaN(p.RandomizationFactor) {
		errs = append(errs, fmt.Errorf("wxpay: retry randomization factor must be at most 1 (got %g)", p.RandomizationFactor))
	}
	d := p.withDefaults()
	if p.InitialInterval >= 0 && p.MaxInterval >= 0 && d.InitialInterval > d.MaxInterval {
		errs = append(errs, fmt.Errorf("wxpay: retry initial interval %s exceeds the max interval %s", d.InitialInterval, d.MaxInterval))
	}
	return errors.Join(errs...)
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.InitialInterval == 0 {
		p.InitialInterval = DefaultInitialInterval
	}
	if p.MaxInterval == 0 {
		p.MaxInterval = DefaultMaxInterval
	}
	if p.MaxElapsed == 0 {
		p.MaxElapsed = DefaultMaxElapsed
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	switch {
	case p.RandomizationFactor == 0:
		p.RandomizationFactor = DefaultRandomizationFactor
	case p.RandomizationFactor < 0:
		p.RandomizationFactor = 0
	}
	return p
}

type clockFunc func() time.Time

func (f clockFunc) Now() time.Time { return f() }

// schedule decides the delays between the attempts of one call.
type schedule struct {
	policy RetryPolicy // with defaults
	clock  func() time.Time
	start  time.Time
	b      *backoff.ExponentialBackOff
}

func newSchedule(p RetryPolicy, clock func() time.Time) *schedule {
	s := &schedule{policy: p, clock: clock, start: clock()}
	if p.MaxElapsed > 0 {
		s.b = &backoff.ExponentialBackOff{
			InitialInterval:     p.InitialInterval,
			RandomizationFactor: p.RandomizationFactor,
			Multiplier:          p.Multiplier,
			MaxInterval:         p.MaxInterval,
			MaxElapsedTime:      p.MaxElapsed,
			Stop:                backoff.Stop,
			Clock:               clockFunc(clock),
		}
		s.b.Reset()
	}
	return s
}

// next returns the delay before the next attempt, or false when the budget
// is spent. A retryAfter longer than the backoff delay replaces it, capped
// by MaxInterval and by what is left of MaxElapsed; a shorter one (zero for
// "now" or a date in the past) leaves the backoff delay, so that a server
// that keeps answering "retry now" is not asked again at once, over and
// over, for the whole budget.
func (s *schedule) next(retryAfter time.Duration, haveRetryAfter bool) (time.Duration, bool) {
	if s.b == nil {
		return 0, false
	}
	d := s.b.NextBackOff()
	if d == backoff.Stop {
		return 0, false
	}
	if haveRetryAfter && retryAfter > d {
		remaining := s.policy.MaxElapsed - s.clock().Sub(s.start)
		if remaining <= 0 {
			return 0, false
		}
		d = min(retryAfter, s.policy.MaxInterval, remaining)
	}
	return d, true
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date
// (RFC 9110 §10.2.3). A date in the past gives 0. Garbage gives false.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 32)
		if errors.Is(err, strconv.ErrRange) {
			secs = math.MaxUint32 // absurdly long; capped by the policy
		} else if err != nil {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
