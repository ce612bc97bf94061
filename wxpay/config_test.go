package wxpay

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{Signer: testSigner(t), Verifier: testVerifier(t, nil)}
	}
	tests := []struct {
		name  string
		mod   func(*Config)
		wants []string // each must appear; none means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"https hosts", func(c *Config) {
			c.BaseURL, c.BackupBaseURL = "https://api.example.com", "https://api2.example.com:8443/"
		}, nil},
		{"loopback http", func(c *Config) { c.BaseURL, c.BackupBaseURL = "http://127.0.0.1:8080", "http://[::1]:9" }, nil},
		{"loopback 127/8 and localhost", func(c *Config) { c.BaseURL, c.BackupBaseURL = "http://127.10.20.30", "http://LOCALHOST:1" }, nil},
		{"no backup", func(c *Config) { c.BackupBaseURL = NoBackup }, nil},
		{"http to a remote host", func(c *Config) { c.BaseURL = "http://api.mch.weixin.qq.com" }, []string{"base URL", "loopback"}},
		{"http to a private address", func(c *Config) { c.BackupBaseURL = "http://10.0.0.1" }, []string{"backup base URL", "loopback"}},
		{"lookalike loopback name", func(c *Config) { c.BaseURL = "http://localhost.evil.example" }, []string{"loopback"}},
		{"other scheme", func(c *Config) { c.BaseURL = "ftp://127.0.0.1" }, []string{"scheme"}},
		{"no host", func(c *Config) { c.BaseURL = "https://" }, []string{"no host"}},
		{"relative", func(c *Config) { c.BaseURL = "api.mch.weixin.qq.com" }, []string{"scheme", "no host"}},
		{"path query fragment", func(c *Config) { c.BaseURL = "https://h/v3?x=1#f" }, []string{"path", "query", "fragment"}},
		{"user info is refused and not echoed", func(c *Config) { c.BaseURL = "https://user:s3cret@h" }, []string{"user info"}},
		{"not a URL", func(c *Config) { c.BaseURL = "https://h\x7f/" }, []string{"not a valid URL"}},
		{"every problem at once", func(c *Config) {
			c.Signer, c.Verifier = nil, nil
			c.BaseURL = "http://example.com"
			c.MaxConcurrency = -1
			c.DialTimeout, c.TLSHandshakeTimeout, c.ResponseHeaderTimeout, c.AttemptTimeout, c.FailoverCooldown = -1, -1, -1, -1, -1
			c.Retry.Multiplier = 0.5
			c.UserAgent = "a\r\nX-Injected: 1"
		}, []string{"Signer", "Verifier", "loopback", "MaxConcurrency", "DialTimeout", "TLSHandshakeTimeout",
			"ResponseHeaderTimeout", "AttemptTimeout", "FailoverCooldown", "multiplier", "UserAgent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.mod(&cfg)
			err := cfg.Validate()
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				if _, err := NewClient(cfg); err != nil {
					t.Fatalf("NewClient() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("message shows the password: %v", err)
			}
			if _, err2 := NewClient(cfg); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("NewClient() = %v, want the Validate error", err2)
			}
		})
	}
}

func TestNewClientDefaults(t *testing.T) {
	tests := []struct {
		name        string
		base        string
		backup      string
		wantPrimary string
		wantBackup  string // "" for none
	}{
		{"all defaults", "", "", "https://api.mch.weixin.qq.com", "https://api2.mch.weixin.qq.com"},
		{"default given explicitly", DefaultBaseURL + "/", "", "https://api.mch.weixin.qq.com", "https://api2.mch.weixin.qq.com"},
		{"simulator never falls back to the real host", "http://127.0.0.1:9", "", "http://127.0.0.1:9", ""},
		{"explicit backup", "http://127.0.0.1:9", "http://127.0.0.1:10", "http://127.0.0.1:9", "http://127.0.0.1:10"},
		{"failover disabled", "", NoBackup, "https://api.mch.weixin.qq.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(Config{Signer: testSigner(t), Verifier: testVerifier(t, nil), BaseURL: tt.base, BackupBaseURL: tt.backup})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.hosts.primary.String(); got != tt.wantPrimary {
				t.Errorf("primary = %s, want %s", got, tt.wantPrimary)
			}
			got := ""
			if c.hosts.backup != nil {
				got = c.hosts.backup.String()
			}
			if got != tt.wantBackup {
				t.Errorf("backup = %q, want %q", got, tt.wantBackup)
			}
		})
	}

	c, err := NewClient(Config{Signer: testSigner(t), Verifier: testVerifier(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := c.http.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T", c.http.Transport)
	}
	if tr.MaxIdleConnsPerHost != DefaultMaxConcurrency || tr.TLSHandshakeTimeout != 5*time.Second || tr.ResponseHeaderTimeout != 10*time.Second {
		t.Errorf("transport = %+v", tr)
	}
	if c.attemptTimeout != 15*time.Second || c.hosts.cooldown != time.Minute || c.retry != (RetryPolicy{500 * time.Millisecond, 10 * time.Second, 30 * time.Second, 2, 0.5}) {
		t.Errorf("attempt timeout %v, cooldown %v, retry %+v", c.attemptTimeout, c.hosts.cooldown, c.retry)
	}
	if !strings.HasPrefix(c.userAgent, "wxcancel/") || !strings.HasSuffix(c.userAgent, " (+Go)") {
		t.Errorf("user agent = %q", c.userAgent)
	}
	c2, err := NewClient(Config{Signer: testSigner(t), Verifier: testVerifier(t, nil), MaxConcurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	if n := c2.http.Transport.(*http.Transport).MaxIdleConnsPerHost; n != 8 {
		t.Errorf("MaxIdleConnsPerHost = %d, want MaxConcurrency 8", n)
	}
	// A 3xx is never followed.
	if err := c.http.CheckRedirect(nil, nil); !errors.Is(err, http.ErrUseLastResponse) {
		t.Errorf("CheckRedirect = %v", err)
	}
}
