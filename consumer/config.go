package consumer

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Config holds the service's own settings. Each is an environment variable
// of `wxcancel serve` (named beside it, with its default; docs/interface.md,
// Configuration), and problems are reported under that name. The zero
// Config is not usable: start from [DefaultConfig].
type Config struct {
	// Prefix is the first token of every subject and, upper-cased, the prefix
	// of stream and bucket names (WXCANCEL_SUBJECT_PREFIX, default wxpay).
	Prefix string
	// MchID is the platform's merchant id: events carry the source
	// wxcancel/<MchID> (WXPAY_MCHID, required).
	MchID string

	// MaxDeliver is how many deliveries a command gets before it is failed and
	// dead-lettered (WXCANCEL_MAX_DELIVER, default 5).
	MaxDeliver int
	// RedeliveryDelay is the wait before the next delivery of a command whose
	// in-process retries ran out; it doubles with each delivery, capped at
	// MaxRedeliveryDelay (WXCANCEL_REDELIVERY_DELAY, default 30s).
	RedeliveryDelay time.Duration
	// Concurrency is how many commands one instance works on at once
	// (WXCANCEL_CONCURRENCY, default 64). A command waiting out a retry
	// backoff gives its place up, so up to twice as many may be
	// unacknowledged.
	Concurrency int

	// AckWait is the consumer's acknowledgement deadline; in-flight commands
	// are kept alive with InProgress well within it (WXCANCEL_ACK_WAIT, 30s).
	AckWait time.Duration
	// ShutdownTimeout bounds the drain on SIGTERM: commands still running
	// then are cancelled and handed back for redelivery
	// (WXCANCEL_SHUTDOWN_TIMEOUT, default 25s).
	ShutdownTimeout time.Duration
	// OutcomeTTL is how long the outcome of a command id is remembered; a
	// command re-sent with the same id within it is answered from the record
	// and never executed again (WXCANCEL_OUTCOME_TTL, default 168h).
	OutcomeTTL time.Duration
	// Replicas is the replica count of every stream and bucket the service
	// creates (WXCANCEL_REPLICAS, default 1; 3 on a cluster).
	Replicas int
	// Provision: create or update streams, consumer and buckets at start
	// (WXCANCEL_PROVISION, default true). When false they must exist.
	Provision bool

	// Track turns lifecycle tracking on: every cancel-withdraw and
	// cancel-application seen in a state that is not final is polled until
	// it is (WXCANCEL_TRACK, default true; docs/interface.md, Lifecycle
	// tracking).
	Track bool
	// TrackInterval is the wait before the first poll of a tracked resource,
	// and after a change (WXCANCEL_TRACK_INTERVAL, default 1m, at least
	// 100ms).
	TrackInterval time.Duration
	// TrackMaxInterval caps the wait between polls, which doubles while the
	// state stays the same (WXCANCEL_TRACK_MAX_INTERVAL, default 1h).
	TrackMaxInterval time.Duration
	// TrackHorizon is how long a resource is tracked at most
	// (WXCANCEL_TRACK_HORIZON, default 1440h, at least 1s).
	TrackHorizon time.Duration
	// TrackRate bounds the polls of all instances together, per second
	// (WXCANCEL_TRACK_RATE, default 5).
	TrackRate float64
}

// MaxRedeliveryDelay caps the doubling redelivery delay.
const MaxRedeliveryDelay = 10 * time.Minute

// DefaultConfig returns the defaults of every setting; MchID, which has
// none, is empty.
func DefaultConfig() Config {
	return Config{
		Prefix:          "wxpay",
		MaxDeliver:      5,
		RedeliveryDelay: 30 * time.Second,
		Concurrency:     64,
		AckWait:         30 * time.Second,
		ShutdownTimeout: 25 * time.Second,
		OutcomeTTL:      7 * 24 * time.Hour,
		Replicas:        1,
		Provision:       true,

		Track:            true,
		TrackInterval:    time.Minute,
		TrackMaxInterval: time.Hour,
		TrackHorizon:     60 * 24 * time.Hour,
		TrackRate:        5,
	}
}

// The smallest tracking durations accepted (for tests), and the highest
// poll rate.
const (
	MinTrackInterval = 100 * time.Millisecond
	MinTrackHorizon  = time.Second
	MaxTrackRate     = 1000
)

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// CheckPrefix reports why p cannot be the subject prefix, or nil.
func CheckPrefix(p string) error {
	if !prefixPattern.MatchString(p) {
		return fmt.Errorf("WXCANCEL_SUBJECT_PREFIX: %q must be 1-32 characters of [A-Za-z0-9_-]", p)
	}
	return nil
}

// Validate reports every problem of c at once, each under the name of its
// environment variable.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := CheckPrefix(c.Prefix); err != nil {
		errs = append(errs, err)
	}
	if c.MchID == "" {
		add("WXPAY_MCHID: required")
	} else if !isDigits(c.MchID) || len(c.MchID) > 32 {
		add("WXPAY_MCHID: %q must be up to 32 digits", c.MchID)
	}
	for _, d := range []struct {
		env string
		d   time.Duration
	}{
		{"WXCANCEL_REDELIVERY_DELAY", c.RedeliveryDelay},
		{"WXCANCEL_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"WXCANCEL_OUTCOME_TTL", c.OutcomeTTL},
	} {
		if d.d <= 0 {
			add("%s: must be positive, got %s", d.env, d.d)
		}
	}
	// A delivery that stored its outcome event and died before its ack is
	// redelivered an ack wait later and republishes the event, which the
	// events stream must still drop as a duplicate: half its window.
	if c.AckWait < 3*time.Second || c.AckWait > EventsDuplicateWindow/2 {
		add("WXCANCEL_ACK_WAIT: must be 3s to %s (half the events stream's duplicate window, which drops the outcome event a redelivery republishes), got %s",
			EventsDuplicateWindow/2, c.AckWait)
	}
	if c.MaxDeliver < 1 {
		add("WXCANCEL_MAX_DELIVER: must be at least 1, got %d", c.MaxDeliver)
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		add("WXCANCEL_CONCURRENCY: must be 1-4096, got %d", c.Concurrency)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		add("WXCANCEL_REPLICAS: must be 1-5, got %d", c.Replicas)
	}
	if c.TrackInterval < MinTrackInterval {
		add("WXCANCEL_TRACK_INTERVAL: must be at least %s, got %s", MinTrackInterval, c.TrackInterval)
	}
	if c.TrackMaxInterval < c.TrackInterval {
		add("WXCANCEL_TRACK_MAX_INTERVAL (%s) must be at least WXCANCEL_TRACK_INTERVAL (%s)", c.TrackMaxInterval, c.TrackInterval)
	}
	if c.TrackHorizon < MinTrackHorizon {
		add("WXCANCEL_TRACK_HORIZON: must be at least %s, got %s", MinTrackHorizon, c.TrackHorizon)
	}
	if !(c.TrackRate > 0 && c.TrackRate <= MaxTrackRate) { // NaN too
		add("WXCANCEL_TRACK_RATE: must be more than 0 and at most %d polls per second, got %g", MaxTrackRate, c.TrackRate)
	}
	return errors.Join(errs...)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
