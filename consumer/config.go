package consumer

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
)

// Config holds every setting of `wxcancel serve` (contract §2). Each field is
// an environment variable and a flag; [Config.Bind] wires both, flags winning.
// The zero Config is not usable: start from [DefaultConfig].
type Config struct {
	// NATSURLs are the server URLs. Empty: run an embedded JetStream server
	// in-process, storing under EmbeddedStoreDir (NATS_URL).
	NATSURLs []string
	// NATS credentials and TLS files (NATS_CREDS_FILE, NATS_NKEY_SEED_FILE,
	// NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE).
	NATSCredsFile, NATSNKeySeedFile, NATSTLSCAFile, NATSTLSCertFile, NATSTLSKeyFile string
	// EmbeddedStoreDir is where the embedded server keeps its streams
	// (WXCANCEL_EMBEDDED_STORE_DIR, default ./data/nats).
	EmbeddedStoreDir string

	// Prefix is the first token of every subject and, upper-cased, the prefix
	// of stream and bucket names (WXCANCEL_SUBJECT_PREFIX, default wxpay).
	Prefix string

	// MchID is the platform's merchant id (WXPAY_MCHID, required).
	MchID string
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
	// WXPAY_BACKUP_BASE_URL); https, or http to a loopback host.
	BaseURL, BackupBaseURL string
	// In-process backoff for one delivery (WXPAY_RETRY_INITIAL_INTERVAL,
	// WXPAY_RETRY_MAX_INTERVAL, WXPAY_RETRY_MAX_ELAPSED; 500ms, 10s, 30s).
	RetryInitialInterval, RetryMaxInterval, RetryMaxElapsed time.Duration

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
	// HTTPAddr serves /metrics, /healthz and /readyz (WXCANCEL_HTTP_ADDR,
	// default :9090; "-" disables it).
	HTTPAddr string

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

	// bindErrs collects environment values that could not be parsed, so that
	// Validate reports them with every other problem, but for those a flag
	// given on the command line replaced.
	bindErrs []*envError
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
func (c Config) envErrs() []error {
	var errs []error
	for _, e := range c.bindErrs {
		if !e.overridden {
			errs = append(errs, e.err)
		}
	}
	return errs
}

// MaxRedeliveryDelay caps the doubling redelivery delay (contract §2).
const MaxRedeliveryDelay = 10 * time.Minute

// DefaultConfig returns the defaults of contract §2.
func DefaultConfig() Config {
	return Config{
		EmbeddedStoreDir:     "./data/nats",
		Prefix:               "wxpay",
		BaseURL:              "https://api.mch.weixin.qq.com",
		BackupBaseURL:        "https://api2.mch.weixin.qq.com",
		RetryInitialInterval: 500 * time.Millisecond,
		RetryMaxInterval:     10 * time.Second,
		RetryMaxElapsed:      30 * time.Second,
		MaxDeliver:           5,
		RedeliveryDelay:      30 * time.Second,
		Concurrency:          64,
		HTTPAddr:             ":9090",
		AckWait:              30 * time.Second,
		ShutdownTimeout:      25 * time.Second,
		OutcomeTTL:           7 * 24 * time.Hour,
		Replicas:             1,
		Provision:            true,
	}
}

// setting is one row of the settings table: its environment variable, flag,
// usage and where it lands in Config.
type setting struct {
	env, flag, usage string
	bind             func(c *Config) any
}

var settings = []setting{
	{"NATS_URL", "nats-url", "NATS server URL(s), comma-separated; unset: embedded JetStream server", func(c *Config) any { return (*stringList)(&c.NATSURLs) }},
	{"NATS_CREDS_FILE", "nats-creds-file", "NATS user credentials file", func(c *Config) any { return &c.NATSCredsFile }},
	{"NATS_NKEY_SEED_FILE", "nats-nkey-seed-file", "NATS NKey seed file", func(c *Config) any { return &c.NATSNKeySeedFile }},
	{"NATS_TLS_CA_FILE", "nats-tls-ca-file", "CA certificates for the NATS server", func(c *Config) any { return &c.NATSTLSCAFile }},
	{"NATS_TLS_CERT_FILE", "nats-tls-cert-file", "client certificate for NATS", func(c *Config) any { return &c.NATSTLSCertFile }},
	{"NATS_TLS_KEY_FILE", "nats-tls-key-file", "client key for NATS", func(c *Config) any { return &c.NATSTLSKeyFile }},
	{"WXCANCEL_EMBEDDED_STORE_DIR", "embedded-store-dir", "store directory of the embedded NATS server", func(c *Config) any { return &c.EmbeddedStoreDir }},
	{"WXCANCEL_SUBJECT_PREFIX", "subject-prefix", "first token of every subject; stream name prefix (upper-cased)", func(c *Config) any { return &c.Prefix }},
	{"WXPAY_MCHID", "mchid", "platform merchant id (商户号), required", func(c *Config) any { return &c.MchID }},
	{"WXPAY_CERT_SERIAL_NO", "cert-serial-no", "merchant API certificate serial number, required", func(c *Config) any { return &c.CertSerialNo }},
	{"WXPAY_PRIVATE_KEY_FILE", "private-key-file", "merchant API private key PEM (PKCS#8 or PKCS#1), required", func(c *Config) any { return &c.PrivateKeyFile }},
	{"WXPAY_PUBLIC_KEY_ID", "public-key-id", "WeChat Pay public key id (PUB_KEY_ID_…)", func(c *Config) any { return &c.PublicKeyID }},
	{"WXPAY_PUBLIC_KEY_FILE", "public-key-file", "WeChat Pay public key PEM", func(c *Config) any { return &c.PublicKeyFile }},
	{"WXPAY_PLATFORM_CERT_FILE", "platform-cert-file", "WeChat Pay platform certificate(s) PEM", func(c *Config) any { return &c.PlatformCertFile }},
	{"WXPAY_BASE_URL", "base-url", "primary WeChat Pay API base URL", func(c *Config) any { return &c.BaseURL }},
	{"WXPAY_BACKUP_BASE_URL", "backup-base-url", "backup WeChat Pay API base URL (\"-\": none)", func(c *Config) any { return &c.BackupBaseURL }},
	{"WXPAY_RETRY_INITIAL_INTERVAL", "retry-initial-interval", "first in-process retry delay", func(c *Config) any { return &c.RetryInitialInterval }},
	{"WXPAY_RETRY_MAX_INTERVAL", "retry-max-interval", "largest in-process retry delay", func(c *Config) any { return &c.RetryMaxInterval }},
	{"WXPAY_RETRY_MAX_ELAPSED", "retry-max-elapsed", "in-process retry budget of one delivery", func(c *Config) any { return &c.RetryMaxElapsed }},
	{"WXCANCEL_MAX_DELIVER", "max-deliver", "deliveries of one command before it is dead-lettered", func(c *Config) any { return &c.MaxDeliver }},
	{"WXCANCEL_REDELIVERY_DELAY", "redelivery-delay", "delay before redelivery; doubles per delivery, capped at 10m", func(c *Config) any { return &c.RedeliveryDelay }},
	{"WXCANCEL_CONCURRENCY", "concurrency", "commands worked on at once per instance", func(c *Config) any { return &c.Concurrency }},
	{"WXCANCEL_HTTP_ADDR", "http-addr", "listen address for /metrics, /healthz, /readyz (\"-\": off)", func(c *Config) any { return &c.HTTPAddr }},
	{"WXCANCEL_ACK_WAIT", "ack-wait", "consumer acknowledgement deadline", func(c *Config) any { return &c.AckWait }},
	{"WXCANCEL_SHUTDOWN_TIMEOUT", "shutdown-timeout", "longest graceful drain on SIGTERM", func(c *Config) any { return &c.ShutdownTimeout }},
	{"WXCANCEL_OUTCOME_TTL", "outcome-ttl", "how long a command id's outcome is remembered", func(c *Config) any { return &c.OutcomeTTL }},
	{"WXCANCEL_REPLICAS", "replicas", "replicas of the streams and buckets the service creates", func(c *Config) any { return &c.Replicas }},
	{"WXCANCEL_PROVISION", "provision", "create or update streams, consumer and buckets at start", func(c *Config) any { return &c.Provision }},
}

// Bind applies the environment (through getenv, usually os.Getenv) to c and
// registers one flag per setting on fs, defaulting to the value from the
// environment so that a flag given on the command line wins. Values that do
// not parse are reported by [Config.Validate], unless their flag is given.
func (c *Config) Bind(fs *flag.FlagSet, getenv func(string) string) {
	c.bind(fs, getenv, func(setting) bool { return true })
}

// BindClient is Bind for the settings a NATS client of the service needs
// (send, events, dlq): the NATS connection and the subject prefix.
func (c *Config) BindClient(fs *flag.FlagSet, getenv func(string) string) {
	c.bind(fs, getenv, func(s setting) bool {
		return strings.HasPrefix(s.env, "NATS_") || s.env == "WXCANCEL_SUBJECT_PREFIX"
	})
}

// ValidateClient reports the problems of the settings BindClient binds.
func (c Config) ValidateClient() error {
	errs := c.envErrs()
	if len(c.NATSURLs) == 0 {
		errs = append(errs, errors.New("NATS_URL: required (the server the service uses)"))
	}
	if !prefixPattern.MatchString(c.Prefix) {
		errs = append(errs, fmt.Errorf("WXCANCEL_SUBJECT_PREFIX: %q must be 1-32 characters of [A-Za-z0-9_-]", c.Prefix))
	}
	return errors.Join(errs...)
}

func (c *Config) bind(fs *flag.FlagSet, getenv func(string) string, include func(setting) bool) {
	for _, s := range settings {
		if !include(s) {
			continue
		}
		target := s.bind(c)
		var failed *envError
		if v := getenv(s.env); v != "" {
			if err := setValue(target, v); err != nil {
				failed = &envError{err: fmt.Errorf("%s: %w", s.env, err)}
				c.bindErrs = append(c.bindErrs, failed)
			}
		}
		usage := s.usage + " (env " + s.env + ")"
		switch p := target.(type) {
		case *string:
			fs.StringVar(p, s.flag, *p, usage)
		case *int:
			fs.IntVar(p, s.flag, *p, usage)
		case *bool:
			fs.BoolVar(p, s.flag, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, s.flag, *p, usage)
		case flag.Value:
			fs.Var(p, s.flag, usage)
		}
		if f := fs.Lookup(s.flag); failed != nil && f != nil {
			f.Value = &overriding{Value: f.Value, env: failed}
		}
	}
}

// SettingNames returns the environment variables Config reads, in the order
// of the contract, for documentation and tests.
func SettingNames() []string {
	names := make([]string, len(settings))
	for i, s := range settings {
		names[i] = s.env
	}
	return names
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

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Validate reports every problem of c at once. It checks values and that the
// named files exist; the keys themselves are parsed by [LoadCredentials].
func (c Config) Validate() error {
	errs := c.envErrs()
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for _, u := range c.NATSURLs {
		if _, err := url.Parse(u); err != nil || strings.ContainsAny(u, " \t") {
			add("NATS_URL: %q is not a URL", u)
		}
	}
	if (c.NATSTLSCertFile == "") != (c.NATSTLSKeyFile == "") {
		add("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together")
	}
	if c.NATSCredsFile != "" && c.NATSNKeySeedFile != "" {
		add("NATS_CREDS_FILE and NATS_NKEY_SEED_FILE are exclusive")
	}
	for env, path := range map[string]string{
		"NATS_CREDS_FILE": c.NATSCredsFile, "NATS_NKEY_SEED_FILE": c.NATSNKeySeedFile,
		"NATS_TLS_CA_FILE": c.NATSTLSCAFile, "NATS_TLS_CERT_FILE": c.NATSTLSCertFile, "NATS_TLS_KEY_FILE": c.NATSTLSKeyFile,
		"WXPAY_PRIVATE_KEY_FILE": c.PrivateKeyFile, "WXPAY_PUBLIC_KEY_FILE": c.PublicKeyFile,
		"WXPAY_PLATFORM_CERT_FILE": c.PlatformCertFile,
	} {
		if path == "" {
			continue
		}
		if st, err := os.Stat(path); err != nil {
			add("%s: cannot read %s: %v", env, path, errors.Unwrap(err))
		} else if st.IsDir() {
			add("%s: %s is a directory", env, path)
		}
	}
	if len(c.NATSURLs) == 0 && c.EmbeddedStoreDir == "" {
		add("WXCANCEL_EMBEDDED_STORE_DIR: required when NATS_URL is unset")
	}
	if !prefixPattern.MatchString(c.Prefix) {
		add("WXCANCEL_SUBJECT_PREFIX: %q must be 1-32 characters of [A-Za-z0-9_-]", c.Prefix)
	}
	if c.MchID == "" {
		add("WXPAY_MCHID: required")
	} else if !isDigits(c.MchID) || len(c.MchID) > 32 {
		add("WXPAY_MCHID: %q must be up to 32 digits", c.MchID)
	}
	if c.CertSerialNo == "" {
		add("WXPAY_CERT_SERIAL_NO: required")
	}
	if c.PrivateKeyFile == "" {
		add("WXPAY_PRIVATE_KEY_FILE: required")
	}
	switch {
	case c.PublicKeyID == "" && c.PublicKeyFile == "" && c.PlatformCertFile == "":
		add("WXPAY_PUBLIC_KEY_ID and WXPAY_PUBLIC_KEY_FILE: required unless WXPAY_PLATFORM_CERT_FILE is set")
	case c.PublicKeyID != "" && c.PublicKeyFile == "":
		add("WXPAY_PUBLIC_KEY_FILE: required with WXPAY_PUBLIC_KEY_ID")
	case c.PublicKeyID == "" && c.PublicKeyFile != "":
		add("WXPAY_PUBLIC_KEY_ID: required with WXPAY_PUBLIC_KEY_FILE")
	}
	if c.PublicKeyID != "" && !strings.HasPrefix(c.PublicKeyID, "PUB_KEY_ID_") {
		add("WXPAY_PUBLIC_KEY_ID: %q must start with PUB_KEY_ID_", c.PublicKeyID)
	}
	if err := wxpay.CheckBaseURL(c.BaseURL); err != nil {
		add("WXPAY_BASE_URL: %v", err)
	}
	if c.BackupBaseURL != "-" && c.BackupBaseURL != "" {
		if err := wxpay.CheckBaseURL(c.BackupBaseURL); err != nil {
			add("WXPAY_BACKUP_BASE_URL: %v", err)
		}
	}
	positive := func(env string, d time.Duration) {
		if d <= 0 {
			add("%s: must be positive, got %s", env, d)
		}
	}
	positive("WXPAY_RETRY_INITIAL_INTERVAL", c.RetryInitialInterval)
	positive("WXPAY_RETRY_MAX_INTERVAL", c.RetryMaxInterval)
	positive("WXPAY_RETRY_MAX_ELAPSED", c.RetryMaxElapsed)
	positive("WXCANCEL_REDELIVERY_DELAY", c.RedeliveryDelay)
	positive("WXCANCEL_SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	positive("WXCANCEL_OUTCOME_TTL", c.OutcomeTTL)
	if c.RetryMaxInterval > 0 && c.RetryInitialInterval > c.RetryMaxInterval {
		add("WXPAY_RETRY_INITIAL_INTERVAL (%s) exceeds WXPAY_RETRY_MAX_INTERVAL (%s)", c.RetryInitialInterval, c.RetryMaxInterval)
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
	if c.HTTPAddr != "-" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			add("WXCANCEL_HTTP_ADDR: %q is not host:port", c.HTTPAddr)
		}
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
