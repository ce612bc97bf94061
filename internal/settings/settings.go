// Package settings reads the configuration of `wxcancel serve` and of the
// client subcommands from the environment and from flags (the flag wins),
// as docs/interface.md's Configuration table lists it, and reports every
// problem at once. It hands each part to its owner: the service's own
// settings ([consumer.Config]), the NATS connection ([natsconn.Options]) and
// the WeChat Pay client ([Settings.ClientConfig]).
package settings

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/natsconn"
	"github.com/wxcancel/wxcancel/wxpay"
)

// Settings is every setting of `wxcancel serve`. Each field is an
// environment variable and a flag; [Settings.Bind] wires both. Start from
// [Default].
type Settings struct {
	// Config holds the service's own settings (prefix, merchant id,
	// deliveries, concurrency, …).
	consumer.Config

	// NATS is where the NATS servers are and how to authenticate. No URL:
	// serve runs an embedded JetStream server in-process.
	NATS natsconn.Options
	// EmbeddedStoreDir is where the embedded server keeps its streams
	// (WXCANCEL_EMBEDDED_STORE_DIR, default ./data/nats).
	EmbeddedStoreDir string

	// CertSerialNo is the merchant API certificate serial (WXPAY_CERT_SERIAL_NO, required).
	CertSerialNo string
	// PrivateKeyFile is the merchant API private key PEM (WXPAY_PRIVATE_KEY_FILE, required).
	PrivateKeyFile string
	// PublicKeyID and PublicKeyFile are the WeChat Pay public key
	// (WXPAY_PUBLIC_KEY_ID, WXPAY_PUBLIC_KEY_FILE); required unless
	// PlatformCertFile is set.
	PublicKeyID, PublicKeyFile string
	// PlatformCertFile holds WeChat Pay platform certificates (WXPAY_PLATFORM_CERT_FILE).
	PlatformCertFile string
	// BaseURL and BackupBaseURL are the API hosts (WXPAY_BASE_URL,
	// WXPAY_BACKUP_BASE_URL; wxpay.NoBackup for none); https, or http to a
	// loopback host.
	BaseURL, BackupBaseURL string
	// In-process backoff of one delivery (WXPAY_RETRY_INITIAL_INTERVAL,
	// WXPAY_RETRY_MAX_INTERVAL, WXPAY_RETRY_MAX_ELAPSED).
	RetryInitialInterval, RetryMaxInterval, RetryMaxElapsed time.Duration

	// HTTPAddr serves /metrics, /healthz and /readyz (WXCANCEL_HTTP_ADDR,
	// default :9090; "-" disables it).
	HTTPAddr string

	// bindErrs collects environment values that could not be parsed, so that
	// Validate reports them with every other problem, but for those a flag
	// given on the command line replaced.
	bindErrs []*envError
}

// Default returns the defaults of every setting.
func Default() Settings {
	return Settings{
		Config:               consumer.DefaultConfig(),
		EmbeddedStoreDir:     "./data/nats",
		BaseURL:              wxpay.DefaultBaseURL,
		BackupBaseURL:        wxpay.DefaultBackupBaseURL,
		RetryInitialInterval: wxpay.DefaultInitialInterval,
		RetryMaxInterval:     wxpay.DefaultMaxInterval,
		RetryMaxElapsed:      wxpay.DefaultMaxElapsed,
		HTTPAddr:             ":9090",
	}
}

// setting is one row of the settings table: its environment variable, flag,
// usage and where it lands in Settings.
type setting struct {
	env, flag, usage string
	bind             func(s *Settings) any
}

var table = []setting{
	{"NATS_URL", "nats-url", "NATS server URL(s), comma-separated; unset: embedded JetStream server", func(s *Settings) any { return (*stringList)(&s.NATS.URLs) }},
	{"NATS_CREDS_FILE", "nats-creds-file", "NATS user credentials file", func(s *Settings) any { return &s.NATS.CredsFile }},
	{"NATS_NKEY_SEED_FILE", "nats-nkey-seed-file", "NATS NKey seed file", func(s *Settings) any { return &s.NATS.NKeySeedFile }},
	{"NATS_TLS_CA_FILE", "nats-tls-ca-file", "CA certificates for the NATS server", func(s *Settings) any { return &s.NATS.TLSCAFile }},
	{"NATS_TLS_CERT_FILE", "nats-tls-cert-file", "client certificate for NATS", func(s *Settings) any { return &s.NATS.TLSCertFile }},
	{"NATS_TLS_KEY_FILE", "nats-tls-key-file", "client key for NATS", func(s *Settings) any { return &s.NATS.TLSKeyFile }},
	{"WXCANCEL_EMBEDDED_STORE_DIR", "embedded-store-dir", "store directory of the embedded NATS server", func(s *Settings) any { return &s.EmbeddedStoreDir }},
	{"WXCANCEL_SUBJECT_PREFIX", "subject-prefix", "first token of every subject; stream name prefix (upper-cased)", func(s *Settings) any { return &s.Prefix }},
	{"WXPAY_MCHID", "mchid", "platform merchant id (商户号), required", func(s *Settings) any { return &s.MchID }},
	{"WXPAY_CERT_SERIAL_NO", "cert-serial-no", "merchant API certificate serial number, required", func(s *Settings) any { return &s.CertSerialNo }},
	{"WXPAY_PRIVATE_KEY_FILE", "private-key-file", "merchant API private key PEM (PKCS#8 or PKCS#1), required", func(s *Settings) any { return &s.PrivateKeyFile }},
	{"WXPAY_PUBLIC_KEY_ID", "public-key-id", "WeChat Pay public key id (PUB_KEY_ID_…)", func(s *Settings) any { return &s.PublicKeyID }},
	{"WXPAY_PUBLIC_KEY_FILE", "public-key-file", "WeChat Pay public key PEM", func(s *Settings) any { return &s.PublicKeyFile }},
	{"WXPAY_PLATFORM_CERT_FILE", "platform-cert-file", "WeChat Pay platform certificate(s) PEM", func(s *Settings) any { return &s.PlatformCertFile }},
	{"WXPAY_BASE_URL", "base-url", "primary WeChat Pay API base URL", func(s *Settings) any { return &s.BaseURL }},
	{"WXPAY_BACKUP_BASE_URL", "backup-base-url", "backup WeChat Pay API base URL (\"-\": none)", func(s *Settings) any { return &s.BackupBaseURL }},
	{"WXPAY_RETRY_INITIAL_INTERVAL", "retry-initial-interval", "first in-process retry delay", func(s *Settings) any { return &s.RetryInitialInterval }},
	{"WXPAY_RETRY_MAX_INTERVAL", "retry-max-interval", "largest in-process retry delay", func(s *Settings) any { return &s.RetryMaxInterval }},
	{"WXPAY_RETRY_MAX_ELAPSED", "retry-max-elapsed", "in-process retry budget of one delivery", func(s *Settings) any { return &s.RetryMaxElapsed }},
	{"WXCANCEL_MAX_DELIVER", "max-deliver", "deliveries of one command before it is dead-lettered", func(s *Settings) any { return &s.MaxDeliver }},
	{"WXCANCEL_REDELIVERY_DELAY", "redelivery-delay", "delay before redelivery; doubles per delivery, capped at 10m", func(s *Settings) any { return &s.RedeliveryDelay }},
	{"WXCANCEL_CONCURRENCY", "concurrency", "commands worked on at once per instance", func(s *Settings) any { return &s.Concurrency }},
	{"WXCANCEL_HTTP_ADDR", "http-addr", "listen address for /metrics, /healthz, /readyz (\"-\": off)", func(s *Settings) any { return &s.HTTPAddr }},
	{"WXCANCEL_ACK_WAIT", "ack-wait", "consumer acknowledgement deadline", func(s *Settings) any { return &s.AckWait }},
	{"WXCANCEL_SHUTDOWN_TIMEOUT", "shutdown-timeout", "longest graceful drain on SIGTERM", func(s *Settings) any { return &s.ShutdownTimeout }},
	{"WXCANCEL_OUTCOME_TTL", "outcome-ttl", "how long a command id's outcome is remembered", func(s *Settings) any { return &s.OutcomeTTL }},
	{"WXCANCEL_REPLICAS", "replicas", "replicas of the streams and buckets the service creates", func(s *Settings) any { return &s.Replicas }},
	{"WXCANCEL_PROVISION", "provision", "create or update streams, consumer and buckets at start", func(s *Settings) any { return &s.Provision }},
	{"WXCANCEL_TRACK", "track", "follow every application seen to its end (lifecycle tracking)", func(s *Settings) any { return &s.Track }},
	{"WXCANCEL_TRACK_INTERVAL", "track-interval", "wait before the first poll of a tracked resource, and after a change", func(s *Settings) any { return &s.TrackInterval }},
	{"WXCANCEL_TRACK_MAX_INTERVAL", "track-max-interval", "longest wait between polls of a tracked resource", func(s *Settings) any { return &s.TrackMaxInterval }},
	{"WXCANCEL_TRACK_HORIZON", "track-horizon", "how long a resource is tracked at most", func(s *Settings) any { return &s.TrackHorizon }},
	{"WXCANCEL_TRACK_RATE", "track-rate", "polls per second, all instances together", func(s *Settings) any { return &s.TrackRate }},
}

// Names returns the environment variables Settings reads, in the order of
// the configuration table, for documentation and tests.
func Names() []string {
	names := make([]string, len(table))
	for i, s := range table {
		names[i] = s.env
	}
	return names
}

// Bind applies the environment (through getenv, usually os.Getenv) to s and
// registers one flag per setting on fs, defaulting to the value from the
// environment so that a flag given on the command line wins. Values that do
// not parse are reported by [Settings.Validate], unless their flag is given.
func (s *Settings) Bind(fs *flag.FlagSet, getenv func(string) string) {
	s.bind(fs, getenv, func(setting) bool { return true })
}

// BindClient is Bind for the settings a NATS client of the service needs
// (send, events, dlq, track): the NATS connection and the subject prefix.
func (s *Settings) BindClient(fs *flag.FlagSet, getenv func(string) string) {
	s.bind(fs, getenv, func(st setting) bool {
		return strings.HasPrefix(st.env, "NATS_") || st.env == "WXCANCEL_SUBJECT_PREFIX"
	})
}

// ValidateClient reports the problems of the settings BindClient binds.
func (s Settings) ValidateClient() error {
	errs := s.envErrs()
	if len(s.NATS.URLs) == 0 {
		errs = append(errs, errors.New("NATS_URL: required (the server the service uses)"))
	}
	if err := consumer.CheckPrefix(s.Prefix); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.NATS.Validate())
	return errors.Join(errs...)
}

// Validate reports every problem of s at once, each naming its environment
// variable: values that did not parse, and every rule of each part. It checks
// that the named files exist; the keys themselves are parsed by
// [Settings.ClientConfig].
func (s Settings) Validate() error {
	errs := s.envErrs()
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	errs = append(errs, s.NATS.Validate())
	if len(s.NATS.URLs) == 0 && s.EmbeddedStoreDir == "" {
		add("WXCANCEL_EMBEDDED_STORE_DIR: required when NATS_URL is unset")
	}
	errs = append(errs, s.Config.Validate())
	if s.CertSerialNo == "" {
		add("WXPAY_CERT_SERIAL_NO: required")
	}
	if s.PrivateKeyFile == "" {
		add("WXPAY_PRIVATE_KEY_FILE: required")
	}
	for _, f := range []struct{ env, path string }{
		{"WXPAY_PRIVATE_KEY_FILE", s.PrivateKeyFile}, {"WXPAY_PUBLIC_KEY_FILE", s.PublicKeyFile}, {"WXPAY_PLATFORM_CERT_FILE", s.PlatformCertFile},
	} {
		errs = append(errs, natsconn.CheckFile(f.env, f.path))
	}
	switch {
	case s.PublicKeyID == "" && s.PublicKeyFile == "" && s.PlatformCertFile == "":
		add("WXPAY_PUBLIC_KEY_ID and WXPAY_PUBLIC_KEY_FILE: required unless WXPAY_PLATFORM_CERT_FILE is set")
	case s.PublicKeyID != "" && s.PublicKeyFile == "":
		add("WXPAY_PUBLIC_KEY_FILE: required with WXPAY_PUBLIC_KEY_ID")
	case s.PublicKeyID == "" && s.PublicKeyFile != "":
		add("WXPAY_PUBLIC_KEY_ID: required with WXPAY_PUBLIC_KEY_FILE")
	}
	if s.PublicKeyID != "" && !strings.HasPrefix(s.PublicKeyID, wxpay.PublicKeyIDPrefix) {
		add("WXPAY_PUBLIC_KEY_ID: %q must start with %s", s.PublicKeyID, wxpay.PublicKeyIDPrefix)
	}
	if err := wxpay.CheckBaseURL(s.BaseURL); err != nil {
		add("WXPAY_BASE_URL: %v", err)
	}
	if s.BackupBaseURL != wxpay.NoBackup && s.BackupBaseURL != "" {
		if err := wxpay.CheckBaseURL(s.BackupBaseURL); err != nil {
			add("WXPAY_BACKUP_BASE_URL: %v", err)
		}
	}
	for _, d := range []struct {
		env string
		d   time.Duration
	}{
		{"WXPAY_RETRY_INITIAL_INTERVAL", s.RetryInitialInterval},
		{"WXPAY_RETRY_MAX_INTERVAL", s.RetryMaxInterval},
		{"WXPAY_RETRY_MAX_ELAPSED", s.RetryMaxElapsed},
	} {
		if d.d <= 0 {
			add("%s: must be positive, got %s", d.env, d.d)
		}
	}
	if s.RetryMaxInterval > 0 && s.RetryInitialInterval > s.RetryMaxInterval {
		add("WXPAY_RETRY_INITIAL_INTERVAL (%s) exceeds WXPAY_RETRY_MAX_INTERVAL (%s)", s.RetryInitialInterval, s.RetryMaxInterval)
	}
	if s.HTTPAddr != "-" {
		if _, _, err := net.SplitHostPort(s.HTTPAddr); err != nil {
			add("WXCANCEL_HTTP_ADDR: %q is not host:port", s.HTTPAddr)
		}
	}
	return errors.Join(errs...)
}

// ClientConfig reads the key files s names and returns the WeChat Pay
// client configuration, or every problem found in one error. Errors name the
// setting and the file, never the file's content.
func (s Settings) ClientConfig() (wxpay.Config, error) {
	var errs []error
	read := func(env, path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: cannot read %s", env, path))
			return nil
		}
		return b
	}
	var signer *wxpay.Signer
	if s.PrivateKeyFile != "" {
		if b := read("WXPAY_PRIVATE_KEY_FILE", s.PrivateKeyFile); b != nil {
			key, err := wxpay.ParsePrivateKey(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("WXPAY_PRIVATE_KEY_FILE %s: %w", s.PrivateKeyFile, err))
			} else if signer, err = wxpay.NewSigner(s.MchID, s.CertSerialNo, key); err != nil {
				errs = append(errs, err)
			}
		}
	}
	vc := wxpay.VerifierConfig{PublicKeyID: s.PublicKeyID}
	if s.PublicKeyFile != "" {
		if b := read("WXPAY_PUBLIC_KEY_FILE", s.PublicKeyFile); b != nil {
			key, err := wxpay.ParsePublicKey(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("WXPAY_PUBLIC_KEY_FILE %s: %w", s.PublicKeyFile, err))
			}
			vc.PublicKey = key
		}
	}
	if s.PlatformCertFile != "" {
		if b := read("WXPAY_PLATFORM_CERT_FILE", s.PlatformCertFile); b != nil {
			certs, err := wxpay.ParseCertificates(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("WXPAY_PLATFORM_CERT_FILE %s: %w", s.PlatformCertFile, err))
			}
			vc.Certificates = certs
		}
	}
	var verifier *wxpay.Verifier
	if len(errs) == 0 {
		var err error
		if verifier, err = wxpay.NewVerifier(vc); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return wxpay.Config{}, err
	}
	return wxpay.Config{
		Signer:        signer,
		Verifier:      verifier,
		BaseURL:       s.BaseURL,
		BackupBaseURL: s.BackupBaseURL,
		Retry: wxpay.RetryPolicy{
			InitialInterval: s.RetryInitialInterval,
			MaxInterval:     s.RetryMaxInterval,
			MaxElapsed:      s.RetryMaxElapsed,
		},
		MaxConcurrency: s.Concurrency,
	}, nil
}

// envError is an environment value that could not be parsed.
type envError struct {
	err        error
	overridden bool // the setting's flag was given: it wins
}

// overriding wraps the flag of a setting whose environment value could not
// be parsed: setting the flag clears the error.
type overriding struct {
	flag.Value
	env *envError
}

func (o *overriding) Set(v string) error {
	o.env.overridden = true
	return o.Value.Set(v)
}

func (o *overriding) String() string {
	if o.Value == nil { // the zero value flag.PrintDefaults makes
		return ""
	}
	return o.Value.String()
}

// IsBoolFlag keeps a boolean flag usable without a value.
func (o *overriding) IsBoolFlag() bool {
	b, ok := o.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// envErrs returns the errors of the environment values no flag replaced.
func (s Settings) envErrs() []error {
	var errs []error
	for _, e := range s.bindErrs {
		if !e.overridden {
			errs = append(errs, e.err)
		}
	}
	return errs
}

func (s *Settings) bind(fs *flag.FlagSet, getenv func(string) string, include func(setting) bool) {
	for _, st := range table {
		if !include(st) {
			continue
		}
		target := st.bind(s)
		var failed *envError
		if v := getenv(st.env); v != "" {
			if err := setValue(target, v); err != nil {
				failed = &envError{err: fmt.Errorf("%s: %w", st.env, err)}
				s.bindErrs = append(s.bindErrs, failed)
			}
		}
		usage := st.usage + " (env " + st.env + ")"
		switch p := target.(type) {
		case *string:
			fs.StringVar(p, st.flag, *p, usage)
		case *int:
			fs.IntVar(p, st.flag, *p, usage)
		case *bool:
			fs.BoolVar(p, st.flag, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, st.flag, *p, usage)
		case *float64:
			fs.Float64Var(p, st.flag, *p, usage)
		case flag.Value:
			fs.Var(p, st.flag, usage)
		}
		if f := fs.Lookup(st.flag); failed != nil && f != nil {
			f.Value = &overriding{Value: f.Value, env: failed}
		}
	}
}

func setValue(target any, v string) error {
	switch p := target.(type) {
	case *string:
		*p = v
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a boolean", v)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 500ms, 30s, 2m)", v)
		}
		*p = d
	case *float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		*p = f
	case flag.Value:
		return p.Set(v)
	}
	return nil
}

// stringList is a comma-separated flag value.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	*l = nil
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}
