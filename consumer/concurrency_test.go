package consumer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

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
