package poll

import (
	"errors"
	"testing"
	"time"
)

func TestWithin(t *testing.T) {
	n := 0
	if !Within(time.Minute, func() bool { n++; return n == 3 }) || n != 3 {
		t.Errorf("Within returned before the condition held, or checked it %d times", n)
	}
	if Within(30*time.Millisecond, func() bool { return false }) {
		t.Error("Within reported a condition that never held")
	}
}

// recorder is a testing.TB that records a failure instead of ending the
// test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
}

func TestUntilReportsTheLastError(t *testing.T) {
	r := &recorder{TB: t}
	Until(r, 30*time.Millisecond, "nothing", func() error { return errors.New("still not") })
	if r.failed == "" {
		t.Error("Until did not fail on a condition that never held")
	}
	r = &recorder{TB: t}
	True(r, time.Minute, "something", func() bool { return true })
	if r.failed != "" {
		t.Error("True failed on a condition that held")
	}
}
