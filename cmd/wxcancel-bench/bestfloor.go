package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// BestFloor is the machine's best RSA-2048 sign + verify on one core: the
// faster of the project's signer and of OpenSSL's `openssl speed`, when the
// openssl command is installed.
type BestFloor struct {
	SignMS       float64 `json:"sign_ms"`
	VerifyMS     float64 `json:"verify_ms"`
	PerRequestMS float64 `json:"per_request_ms"`
	// Source says where each figure comes from.
	Source string `json:"source"`
	// OpenSSL is `openssl version`, when it was measured.
	OpenSSL string `json:"openssl,omitempty"`
}

// bestFloor returns the machine's best floor: own, the project's, or
// OpenSSL's where it is faster. OpenSSL missing or failing, it is own
// (Source says so).
func bestFloor(ctx context.Context, own Floor) BestFloor {
	b := BestFloor{SignMS: own.SignMS, VerifyMS: own.VerifyMS, Source: "the project's signer (no openssl command)"}
	sign, verify, version, err := opensslSpeed(ctx)
	if err == nil {
		b.OpenSSL = version
		b.Source = "the project's signer, OpenSSL's where faster"
		b.SignMS, b.VerifyMS = min(b.SignMS, sign), min(b.VerifyMS, verify)
	} else if !errors.Is(err, exec.ErrNotFound) {
		b.Source = "the project's signer (openssl speed failed: " + err.Error() + ")"
	}
	b.PerRequestMS = b.SignMS + b.VerifyMS
	return b
}

// opensslSpeed runs `openssl speed -mr rsa2048` for two seconds per
// operation and returns its sign and verify times in ms. Its
// machine-readable result line is +F2:<n>:2048:<signs/s>:<verifies/s>
// (OpenSSL 3 apps/speed.c).
func opensslSpeed(ctx context.Context) (signMS, verifyMS float64, version string, err error) {
	path, err := exec.LookPath("openssl")
	if err != nil {
		return 0, 0, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	v, err := exec.CommandContext(ctx, path, "version").Output()
	if err != nil {
		return 0, 0, "", fmt.Errorf("openssl version: %w", err)
	}
	out, err := exec.CommandContext(ctx, path, "speed", "-seconds", "2", "-mr", "rsa2048").Output()
	if err != nil {
		return 0, 0, "", fmt.Errorf("openssl speed: %w", err)
	}
	signMS, verifyMS, err = parseSpeed(string(out))
	return signMS, verifyMS, strings.TrimSpace(string(v)), err
}

// parseSpeed reads the rsa2048 line of `openssl speed -mr` output.
func parseSpeed(out string) (signMS, verifyMS float64, err error) {
	for line := range strings.Lines(out) {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 5 || f[0] != "+F2" || f[2] != "2048" {
			continue
		}
		signs, err1 := strconv.ParseFloat(f[3], 64)
		verifies, err2 := strconv.ParseFloat(f[4], 64)
		if err1 != nil || err2 != nil || signs <= 0 || verifies <= 0 {
			return 0, 0, fmt.Errorf("openssl speed: unreadable result %q", strings.TrimSpace(line))
		}
		return 1000 / signs, 1000 / verifies, nil
	}
	return 0, 0, errors.New("openssl speed: no rsa2048 result in its output")
}
