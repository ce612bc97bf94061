package wxpay

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// CheckBaseURL reports why raw cannot be a base URL of a [Client] (nil when
// it can): configuration layers call it to report every problem at once.
func CheckBaseURL(raw string) error {
	_, err := parseBaseURL("base URL", raw)
	return err
}

// parseBaseURL checks a base URL: https://host[:port], or http:// to a
// loopback host (127.0.0.0/8, ::1, localhost) for simulators and tests. No
// user info, path, query or fragment. Error messages show the URL without any
// user info.
func parseBaseURL(setting, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("wxpay: %s is not a valid URL", setting)
	}
	shown := u.Redacted()
	var problems []string
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			problems = append(problems, "http:// is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https://")
		}
	default:
		problems = append(problems, "the scheme must be https")
	}
	if u.Host == "" || u.Hostname() == "" {
		problems = append(problems, "it has no host")
	}
	if u.User != nil {
		problems = append(problems, "it must not carry user info")
	}
	if u.Path != "" && u.Path != "/" {
		problems = append(problems, "it must not have a path")
	}
	if u.RawQuery != "" || u.ForceQuery {
		problems = append(problems, "it must not have a query")
	}
	if u.Fragment != "" {
		problems = append(problems, "it must not have a fragment")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("wxpay: %s %q: %s", setting, shown, strings.Join(problems, "; "))
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newTransport builds the default HTTP transport from the configured
// timeouts: one keep-alive pool per host holding up to maxConns idle
// connections, TLS 1.2 or newer, proxies from the environment.
func newTransport(dial, tlsHandshake, responseHeader time.Duration, maxConns int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   tlsHandshake,
		ResponseHeaderTimeout: responseHeader,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2 * maxConns, // primary and backup
		MaxIdleConnsPerHost:   maxConns,
		IdleConnTimeout:       90 * time.Second,
	}
}

// hostSet chooses which host each attempt goes to. The primary is preferred;
// after it could not be reached (the request was never sent), the backup is
// preferred for the cool-down, then the primary is probed again.
type hostSet struct {
	primary, backup *url.URL // backup nil: no failover
	cooldown        time.Duration

	mu          sync.Mutex
	backupUntil time.Time // prefer the backup before this instant
}

// order returns the hosts to try for one attempt, preferred first.
func (h *hostSet) order(now time.Time) []*url.URL {
	if h.backup == nil {
		return []*url.URL{h.primary}
	}
	h.mu.Lock()
	preferBackup := now.Before(h.backupUntil)
	h.mu.Unlock()
	if preferBackup {
		return []*url.URL{h.backup, h.primary}
	}
	return []*url.URL{h.primary, h.backup}
}

// unreachable records that a request to u was never sent.
func (h *hostSet) unreachable(u *url.URL, now time.Time) {
	if h.backup == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if u == h.primary {
		h.backupUntil = now.Add(h.cooldown)
	} else {
		h.backupUntil = time.Time{}
	}
}

// reached records that a request to u was sent: the primary is preferred
// again as soon as it answers.
func (h *hostSet) reached(u *url.URL) {
	if h.backup == nil || u != h.primary {
		return
	}
	h.mu.Lock()
	h.backupUntil = time.Time{}
	h.mu.Unlock()
}
