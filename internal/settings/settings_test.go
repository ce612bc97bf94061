package settings

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func bindTest(t *testing.T, env map[string]string, args ...string) Settings {
	t.Helper()
	c := Default()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Bind(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return c
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaultsMatchContract(t *testing.T) {
	c := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"prefix", c.Prefix, "wxpay"},
		{"base url", c.BaseURL, "https://api.mch.weixin.qq.com"},
		{"backup base url", c.BackupBaseURL, "https://api2.mch.weixin.qq.com"},
		{"retry initial", c.RetryInitialInterval, 500 * time.Millisecond},
		{"retry max", c.RetryMaxInterval, 10 * time.Second},
		{"retry elapsed", c.RetryMaxElapsed, 30 * time.Second},
		{"max deliver", c.MaxDeliver, 5},
		{"redelivery delay", c.RedeliveryDelay, 30 * time.Second},
		{"concurrency", c.Concurrency, 64},
		{"http addr", c.HTTPAddr, ":9090"},
		{"embedded store", c.EmbeddedStoreDir, "./data/nats"},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestConfigEnvAndFlags(t *testing.T) {
	env := map[string]string{
		"NATS_URL":                  "nats://a:4222, nats://b:4222",
		"WXCANCEL_SUBJECT_PREFIX":   "acme",
		"WXPAY_MCHID":               "1900000001",
		"WXCANCEL_CONCURRENCY":      "8",
		"WXCANCEL_REDELIVERY_DELAY": "1s",
		"WXPAY_RETRY_MAX_ELAPSED":   "5s",
	}
	c := bindTest(t, env, "--concurrency", "16", "--mchid", "1900000002")
	if got := strings.Join(c.NATS.URLs, "|"); got != "nats://a:4222|nats://b:4222" {
		t.Errorf("NATS URLs = %q", got)
	}
	if c.Prefix != "acme" || c.RedeliveryDelay != time.Second || c.RetryMaxElapsed != 5*time.Second {
		t.Errorf("environment not applied: %+v", c)
	}
	if c.Concurrency != 16 || c.MchID != "1900000002" {
		t.Errorf("flags must win over the environment: concurrency %d, mchid %s", c.Concurrency, c.MchID)
	}
}

// TestConfigFlagWinsOverBadEnvironment: a flag given on the command line
// replaces an environment value that does not parse, whose error then goes.
func TestConfigFlagWinsOverBadEnvironment(t *testing.T) {
	env := map[string]string{
		"WXCANCEL_CONCURRENCY":     "abc",
		"WXPAY_RETRY_MAX_INTERVAL": "soon",
		"WXCANCEL_PROVISION":       "maybe",
		"WXCANCEL_MAX_DELIVER":     "many",
	}
	c := bindTest(t, env, "--concurrency", "8", "--retry-max-interval", "2s", "--provision")
	if c.Concurrency != 8 || c.RetryMaxInterval != 2*time.Second || !c.Provision {
		t.Errorf("flags not applied: concurrency %d, retry max %s, provision %v", c.Concurrency, c.RetryMaxInterval, c.Provision)
	}
	msg := c.Validate().Error()
	for _, env := range []string{"WXCANCEL_CONCURRENCY", "WXPAY_RETRY_MAX_INTERVAL", "WXCANCEL_PROVISION"} {
		if strings.Contains(msg, env) {
			t.Errorf("the error mentions %s, whose flag was given:\n%s", env, msg)
		}
	}
	if !strings.Contains(msg, "WXCANCEL_MAX_DELIVER") {
		t.Errorf("the error no longer mentions the bad WXCANCEL_MAX_DELIVER without a flag:\n%s", msg)
	}
	// The help lists the flags without failing on their wrappers.
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var help strings.Builder
	fs.SetOutput(&help)
	d := Default()
	d.Bind(fs, func(k string) string { return env[k] })
	fs.PrintDefaults()
	if !strings.Contains(help.String(), "-concurrency") || strings.Contains(help.String(), "panic") {
		t.Errorf("help:\n%s", help.String())
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	env := map[string]string{
		"WXCANCEL_CONCURRENCY":    "lots",
		"WXPAY_RETRY_MAX_ELAPSED": "forever",
		"WXCANCEL_SUBJECT_PREFIX": "wx.pay",
		"WXPAY_BASE_URL":          "http://api.example.com",
		"WXPAY_PUBLIC_KEY_ID":     "KEY_1",
		"WXCANCEL_MAX_DELIVER":    "0",
		"WXPAY_PRIVATE_KEY_FILE":  "/nonexistent/apiclient_key.pem",
		"WXCANCEL_ACK_WAIT":       "5m",
	}
	err := bindTest(t, env).Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid configuration")
	}
	msg := err.Error()
	for _, want := range []string{
		"WXCANCEL_CONCURRENCY", "WXPAY_RETRY_MAX_ELAPSED", "WXCANCEL_SUBJECT_PREFIX", "WXPAY_BASE_URL",
		"WXPAY_MCHID: required", "WXPAY_CERT_SERIAL_NO: required", "WXPAY_PUBLIC_KEY_FILE: required with WXPAY_PUBLIC_KEY_ID",
		"must start with PUB_KEY_ID_", "WXCANCEL_MAX_DELIVER", "WXPAY_PRIVATE_KEY_FILE: cannot read",
		"WXCANCEL_ACK_WAIT: must be 3s to 1m0s",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not mention %q:\n%s", want, msg)
		}
	}
}

func TestConfigValidateAcceptsAMinimalConfiguration(t *testing.T) {
	env := map[string]string{
		"WXPAY_MCHID":            "1900000001",
		"WXPAY_CERT_SERIAL_NO":   "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
		"WXPAY_PRIVATE_KEY_FILE": writeFile(t, "key.pem", "x"),
		"WXPAY_PUBLIC_KEY_ID":    "PUB_KEY_ID_0114232134912410000000000000",
		"WXPAY_PUBLIC_KEY_FILE":  writeFile(t, "pub.pem", "x"),
	}
	if err := bindTest(t, env).Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}
