package consumer_test

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// gathered gathers reg: the names of the families with series, and the
// value of every unlabelled gauge.
func gathered(t *testing.T, reg *prometheus.Registry) (families map[string]bool, gauges map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families, gauges = map[string]bool{}, map[string]float64{}
	for _, mf := range mfs {
		ms := mf.GetMetric()
		families[mf.GetName()] = len(ms) > 0
		if len(ms) == 1 && len(ms[0].GetLabel()) == 0 && ms[0].Gauge != nil {
			gauges[mf.GetName()] = ms[0].GetGauge().GetValue()
		}
	}
	return families, gauges
}

// gauges is the value of every unlabelled gauge of reg.
func gauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	_, g := gathered(t, reg)
	return g
}

// The metrics an operator alerts on are there before anything happened,
// and the lag and readiness read when scraped follow the consumer: commands
// sent while no instance consumes are pending, then consumed.
func TestMetricsReportLagAndReadiness(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	a := h.start("a")
	h.eventually("instance a ready", a.svc.Ready)

	fams, _ := gathered(t, a.reg)
	for _, name := range []string{"wxcancel_commands_total", "wxcancel_dead_letters_total", "wxcancel_redeliveries_total",
		"wxcancel_wxpay_signature_failures_total", "wxcancel_wxpay_retries_total", "wxcancel_wxpay_request_duration_seconds",
		"wxcancel_jetstream_failures_total", "wxcancel_jetstream_duration_seconds", "wxcancel_track_polls_total",
		"wxcancel_track_ended_total", "wxcancel_event_lookups_total", "wxcancel_ready", "wxcancel_wxpay_requests_total",
		"wxcancel_reconciliations_total", "wxcancel_tracked_resources",
		"wxcancel_consumer_pending_messages", "wxcancel_consumer_ack_pending_messages"} {
		if !fams[name] {
			t.Errorf("%s: no series before any command", name)
		}
	}
	if g := gauges(t, a.reg); g["wxcancel_ready"] != 1 || g["wxcancel_consumer_pending_messages"] != 0 {
		t.Errorf("consuming, idle: ready %v, pending %v; want 1, 0", g["wxcancel_ready"], g["wxcancel_consumer_pending_messages"])
	}

	a.stop(t)
	if g := gauges(t, a.reg); g["wxcancel_ready"] != 0 {
		t.Errorf("stopped: ready %v, want 0", g["wxcancel_ready"])
	}
	const n = 5
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("lag-%d", i)
		h.send("validate-cancel", ids[i], map[string]any{"sub_mchid": fmt.Sprintf("19000000%02d", i)})
	}
	if g := gauges(t, a.reg); g["wxcancel_consumer_pending_messages"] != n {
		t.Errorf("%d commands sent while no instance consumes: pending %v", n, g["wxcancel_consumer_pending_messages"])
	}

	b := h.start("b")
	h.waitSucceeded(ids...)
	h.eventually("the consumer's counts back at zero", func() bool {
		g := gauges(t, b.reg)
		return g["wxcancel_consumer_pending_messages"] == 0 && g["wxcancel_consumer_ack_pending_messages"] == 0 && g["wxcancel_ready"] == 1
	})
}
