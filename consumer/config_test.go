package consumer

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestConfigDefaults(t *testing.T) {
	c := DefaultConfig()
	checks := []struct {
		name      string
		got, want any
	}{
		{"prefix", c.Prefix, "wxpay"},
		{"max deliver", c.MaxDeliver, 5},
		{"redelivery delay", c.RedeliveryDelay, 30 * time.Second},
		{"concurrency", c.Concurrency, 64},
		{"ack wait", c.AckWait, 30 * time.Second},
		{"shutdown timeout", c.ShutdownTimeout, 25 * time.Second},
		{"outcome ttl", c.OutcomeTTL, 7 * 24 * time.Hour},
		{"replicas", c.Replicas, 1},
		{"provision", c.Provision, true},
		{"track", c.Track, true},
		{"track interval", c.TrackInterval, time.Minute},
		{"track max interval", c.TrackMaxInterval, time.Hour},
		{"track horizon", c.TrackHorizon, 1440 * time.Hour},
		{"track rate", c.TrackRate, 5.0},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	c.MchID = "1900000001"
	if err := c.Validate(); err != nil {
		t.Errorf("the defaults with a merchant id do not validate: %v", err)
	}
	// The shortest tracking durations, for tests, are accepted.
	c.TrackInterval, c.TrackMaxInterval, c.TrackHorizon = 100*time.Millisecond, 100*time.Millisecond, time.Second
	if err := c.Validate(); err != nil {
		t.Errorf("the shortest tracking durations do not validate: %v", err)
	}
}

func TestConfigValidateNamesEverySetting(t *testing.T) {
	c := Config{Prefix: "wx.pay", MchID: "19x", AckWait: 5 * time.Minute, Replicas: 7,
		TrackInterval: 10 * time.Millisecond, TrackMaxInterval: time.Millisecond, TrackHorizon: time.Millisecond, TrackRate: -1}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid configuration")
	}
	for _, want := range []string{
		"WXCANCEL_SUBJECT_PREFIX", "WXPAY_MCHID", "WXCANCEL_REDELIVERY_DELAY", "WXCANCEL_SHUTDOWN_TIMEOUT",
		"WXCANCEL_OUTCOME_TTL", "WXCANCEL_ACK_WAIT: must be 3s to 1m0s", "WXCANCEL_MAX_DELIVER",
		"WXCANCEL_CONCURRENCY", "WXCANCEL_REPLICAS", "WXCANCEL_TRACK_INTERVAL: must be at least 100ms",
		"WXCANCEL_TRACK_MAX_INTERVAL", "WXCANCEL_TRACK_HORIZON: must be at least 1s", "WXCANCEL_TRACK_RATE",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not mention %q:\n%v", want, err)
		}
	}
}

func TestDLQHeaderValue(t *testing.T) {
	long := strings.Repeat("错", 200) // 600 bytes, 3 per character
	for _, tc := range []struct{ in, want string }{
		{"SYSTEM_ERROR: busy", "SYSTEM_ERROR: busy"},
		{"line\r\nbreak\tand\x00nul", "line  break and nul"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{long, strings.Repeat("错", 170)},
	} {
		got := dlqHeaderValue(tc.in)
		if got != tc.want || !utf8.ValidString(got) || len(got) > 512 {
			t.Errorf("dlqHeaderValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
