package consumer_test

import (
	"fmt"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// workerGoroutines counts the goroutines of this process that are service
// workers, busy or idle.
func workerGoroutines(t *testing.T) int {
	t.Helper()
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "consumer.(*Service).worker(") {
			n++
		}
	}
	return n
}

// TestWorkersReusedAndBounded: the goroutines that work on commands are
// kept between commands, are never more than twice the concurrency (no
// retry waits here), and none outlives Run.
func TestWorkersReusedAndBounded(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true, Latency: 2 * time.Millisecond})
	h.cfg.Concurrency = 4
	if n := workerGoroutines(t); n != 0 {
		t.Fatalf("%d workers before the service started", n)
	}
	in := h.start("a")
	var ids []string
	for i := range 200 {
		id := fmt.Sprintf("w-%d", i)
		h.send("validate-cancel", id, map[string]any{"sub_mchid": fmt.Sprintf("19%08d", i%20)})
		ids = append(ids, id)
	}
	h.waitSucceeded(ids...)
	if n := workerGoroutines(t); n == 0 || n > 2*h.cfg.Concurrency {
		t.Errorf("%d workers after 200 commands at concurrency %d, want 1 to %d waiting for the next", n, h.cfg.Concurrency, 2*h.cfg.Concurrency)
	}
	in.stop(t)
	if n := workerGoroutines(t); n != 0 {
		t.Errorf("%d workers outlived Run", n)
	}
}

// TestConcurrencyBoundsRequests: an instance never has more WeChat Pay
// requests in progress than its concurrency, however its slots pass from
// finishing commands to the next (freed, or handed over to a puller while
// the outcome event is published), and a backlog keeps every slot busy.
func TestConcurrencyBoundsRequests(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true, Latency: 20 * time.Millisecond})
	h.cfg.Concurrency = 3
	h.start("a")
	var ids []string
	for i := range 60 {
		id := fmt.Sprintf("b-%d", i)
		switch i % 3 {
		case 0:
			h.send("validate-cancel", id, map[string]any{"sub_mchid": fmt.Sprintf("19%08d", i%7)})
		case 1:
			h.send("query-cancel-withdraw", id, map[string]any{"applyment_id": fmt.Sprintf("20%014d", i%5)})
		default:
			h.send("query-cancel-application", id, map[string]any{"out_apply_no": fmt.Sprintf("BOUND%03d", i%4)})
		}
		ids = append(ids, id)
	}
	h.waitSucceeded(ids...)
	if n := h.requests.peak(); n != h.cfg.Concurrency {
		t.Errorf("at most %d WeChat Pay requests were in progress at once, want the concurrency %d", n, h.cfg.Concurrency)
	}
}
