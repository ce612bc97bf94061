// Package poll waits, in tests, for a condition that becomes true on its
// own time: an event stored, a consumer idle, a server ready. It is the one
// polling loop of the project's tests; none of them sleeps to synchronise.
package poll

import (
	"testing"
	"time"
)

// Interval is the pause between two checks of a condition.
const Interval = 10 * time.Millisecond

// Within checks cond every Interval until it holds (true) or timeout has
// passed (false). Use it in goroutines other than the test's own, which
// must not call t.Fatal.
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Interval)
	}
	return true
}

// Until checks cond every Interval until it returns nil, and fails t,
// naming what it waited for and cond's last error, once timeout has
// passed. Timeouts are generous: the machines are shared, and only the end
// state is asserted.
func Until(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var last error
	if !Within(timeout, func() bool { last = cond(); return last == nil }) {
		t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, last)
	}
}

// True is Until for a condition without an error to report.
func True(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Within(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
