package consumer_test

import (
	"fmt"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// trackFast makes the instances of h poll tracked resources every 100ms to
// 200ms, up to rate polls per second.
func (h *harness) trackFast(rate float64) {
	h.cfg.TrackInterval, h.cfg.TrackMaxInterval, h.cfg.TrackRate = 100*time.Millisecond, 200*time.Millisecond, rate
	h.attempt = 500 * time.Millisecond // a claim of a killed instance's poll expires sooner
}

// statesOf returns the states the status events of resource/key announced,
// in order, and fails the test for one that no poll published.
func (h *harness) statesOf(subject string, byPoll bool) []string {
	h.t.Helper()
	var out []string
	for _, e := range h.statuses()[subject] {
		out = append(out, fmt.Sprint(e.Data["state"]))
		if id, _ := e.Data["command_id"].(string); byPoll && id != "track:"+strings.Replace(subject, "/", ":", 1) {
			h.t.Errorf("%s: state %v published by %q, not by a poll", subject, e.Data["state"], id)
		}
	}
	return out
}

// ended returns the tracking-ended events by CloudEvent subject.
func (h *harness) ended() map[string][]event {
	out := map[string][]event{}
	for _, e := range h.events() {
		if e.Type == "wxpay.tracking.ended" {
			out[e.CESubj] = append(out[e.CESubj], e)
		}
	}
	return out
}

// waitEnded waits until each subject has its tracking-ended event and
// returns them, failing the test for a subject with more than one.
func (h *harness) waitEnded(subjects ...string) map[string]event {
	h.t.Helper()
	var got map[string][]event
	poll.True(h.t, 20*time.Second, fmt.Sprintf("the tracking of %v to end", subjects), func() bool {
		got = h.ended()
		for _, s := range subjects {
			if len(got[s]) == 0 {
				return false
			}
		}
		return true
	})
	out := map[string]event{}
	for _, s := range subjects {
		if len(got[s]) != 1 {
			h.t.Errorf("%s: %d tracking-ended events, want 1: %v", s, len(got[s]), got[s])
		}
		out[s] = got[s][0]
	}
	return out
}

// applied sends apply-cancel-withdraw commands for sub-merchants and
// returns the applyment ids WeChat Pay gave them.
func (h *harness) applied(withdraw bool, subMchids ...string) []string {
	h.t.Helper()
	var ids []string
	for i, sub := range subMchids {
		body := map[string]any{"sub_mchid": sub, "out_request_no": fmt.Sprintf("P%s%d", sub, i)}
		if withdraw {
			body["withdraw"] = "APPLY_WITHDRAW"
			body["payee_info"] = map[string]any{"account_type": "ACCOUNT_TYPE_CORPORATE",
				"bank_account_info": map[string]any{"account_name": "深圳某某科技有限公司", "account_number": "6222021234567890123"}}
		}
		id := "apply-" + sub
		h.send("apply-cancel-withdraw", id, body)
		ids = append(ids, id)
	}
	got := h.waitOutcomes(ids...)
	var out []string
	for _, id := range ids {
		e := one(h.t, got, id)
		a, _ := e.result()["applyment_id"].(string)
		if e.outcome() != "succeeded" || a == "" {
			h.t.Fatalf("%s: %s", id, e.Raw)
		}
		out = append(out, a)
	}
	return out
}

func withdrawPath(applymentID string) string {
	return "/v3/ecommerce/account/apply-cancel-withdraw/applyment-id/" + applymentID
}

// TestTrackingFollowsEveryStep: an application is followed from its
// submission, through its confirmation, to FINISH, and another until WeChat
// Pay revokes it unconfirmed, an old-flow application to CANCEL_SUCCESS:
// every state is published once, in order, by a poll, no query command
// sent; each tracking ends once, with the final state, and no request
// follows its end.
func TestTrackingFollowsEveryStep(t *testing.T) {
	const step = 600 * time.Millisecond
	h := newHarness(t, wxpaysim.Options{Step: step, RevokeAfter: 8 * step})
	h.trackFast(100)
	for _, sub := range []string{subMchid, "1900000110"} {
		h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: sub, Accounts: []wxpay.AccountInfo{{OutAccountType: wxpay.BasicAccount, Amount: 500}}})
	}
	h.start("a")
	ids := h.applied(true, subMchid)
	ids = append(ids, h.applied(false, "1900000110")...)
	confirmed, revoked := "cancel-withdraw/"+ids[0], "cancel-withdraw/"+ids[1]

	h.eventually("the first application to await confirmation", func() bool {
		return slices.Contains(h.statesOf(confirmed, false), "WAITING_MERCHANT_CONFIRM")
	})
	h.send("confirm-cancel", "confirm-1", confirmBody(ids[0]))
	defer func() {
		if t.Failed() {
			h.dump()
		}
	}()
	ends := h.waitEnded(confirmed, revoked)

	for subject, want := range map[string][]string{
		confirmed: {"ACCEPTED", "REVIEWING", "WAITING_MERCHANT_CONFIRM", "SYSTEM_PROCESSING", "CANCELED",
			"FUND_PROCESSING/WITHDRAW_PROCESSING", "FUND_PROCESSING/WITHDRAW_SUCCEED", "FINISH/WITHDRAW_SUCCEED"},
		revoked: {"ACCEPTED", "REVIEWING", "WAITING_MERCHANT_CONFIRM", "REVOKED"},
	} {
		if got := h.statesOf(subject, true); !slices.Equal(got, want) {
			t.Errorf("%s: states %v, want %v", subject, got, want)
		}
		e := ends[subject]
		if e.Data["reason"] != "final" || e.Data["state"] != want[len(want)-1] || e.Data["polls"].(float64) < float64(len(want)) {
			t.Errorf("%s: %s", subject, e.Raw)
		}
	}
	before := h.requests.times()

	// An old-flow application, to its end, while the two are no longer
	// tracked.
	h.sim.PutCancelApplication(wxpaysim.CancelApplication{OutApplyNo: "OA1", SubMchid: subMchid})
	h.send("query-cancel-application", "qa-1", map[string]any{"out_apply_no": "OA1"})
	e := h.waitEnded("cancel-application/OA1")["cancel-application/OA1"]
	if e.Data["reason"] != "final" || e.Data["state"] != "CANCEL_SUCCESS" {
		t.Errorf("old-flow application: %s", e.Raw)
	}
	if got := h.statesOf("cancel-application/OA1", false); !slices.Equal(got, []string{"REVIEWING", "CANCEL_SUCCESS"}) {
		t.Errorf("old-flow application: states %v", got)
	}
	after := h.requests.times()
	for _, id := range ids {
		if n, m := len(before[withdrawPath(id)]), len(after[withdrawPath(id)]); m != n {
			t.Errorf("%s: polled %d times after its tracking ended", id, m-n)
		}
	}
	h.eventually("no resource to be tracked", func() bool {
		tracked, err := consumer.TrackedResources(t.Context(), h.js, consumer.NewTopology(h.cfg))
		return err == nil && len(tracked) == 0
	})
}

func (h *harness) dump() {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "consumer.(*poller)") || strings.Contains(g, "consumer.(*tracks)") {
			h.t.Log(g)
		}
	}
	for _, e := range h.events() {
		h.t.Log(e.String())
	}
	h.t.Log(h.logs.String())
}

// queried sends a query-cancel-withdraw command for n applications
// (AutoCreate: awaiting confirmation, forever without a Step) and returns
// their applyment ids; each is tracked from then on.
func (h *harness) queried(prefix string, n int) []string {
	h.t.Helper()
	var ids, keys []string
	for i := range n {
		key := fmt.Sprintf("%s%06d", prefix, i)
		id := "q-" + key
		h.send("query-cancel-withdraw", id, map[string]any{"applyment_id": key})
		ids, keys = append(ids, id), append(keys, key)
	}
	h.waitSucceeded(ids...)
	return keys
}

// polls is the number of tracking polls the instances made.
func polls(ins ...*instance) int {
	n := 0
	for _, in := range ins {
		n += count(in.metrics.TrackPolls)
	}
	return n
}

// TestTrackingAcrossInstances: three instances share the tracking of 40
// resources: never two polls of one resource at once, none sooner than its
// cadence allows, and all the polls together within WXCANCEL_TRACK_RATE.
func TestTrackingAcrossInstances(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true, Latency: 30 * time.Millisecond})
	const rate = 20
	h.trackFast(rate)
	ins := []*instance{h.start("a"), h.start("b"), h.start("c")}
	keys := h.queried("AX", 40)
	commands := h.requests.times()
	h.eventually("150 polls", func() bool { return polls(ins...) >= 150 })

	if n := h.requests.peakPerPath(); n != 1 {
		t.Errorf("%d requests for one resource were in progress at once", n)
	}
	var all []time.Time
	for _, k := range keys {
		ts := h.requests.times()[withdrawPath(k)][len(commands[withdrawPath(k)]):] // the polls, after the command
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap < 90*time.Millisecond { // 100ms less 10% jitter
				t.Errorf("%s polled %s after the poll before, sooner than its cadence allows", k, gap)
			}
		}
		all = append(all, ts...)
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	span := all[len(all)-1].Sub(all[0]).Seconds()
	if got := float64(len(all)-1) / span; got > rate*1.05 {
		t.Errorf("%d polls in %.2fs: %.1f per second, above the %d allowed", len(all), span, got, rate)
	}
	t.Logf("%d polls in %.2fs by the instances a, b, c: %d, %d, %d", len(all), span,
		count(ins[0].metrics.TrackPolls), count(ins[1].metrics.TrackPolls), count(ins[2].metrics.TrackPolls))
}

// TestTrackingSurvivesKillAndRestart: every instance is killed while five
// applications move on, then NATS restarts; each application is still
// followed to its end, and its states come in order.
func TestTrackingSurvivesKillAndRestart(t *testing.T) {
	const step = 700 * time.Millisecond
	h := newHarness(t, wxpaysim.Options{Step: step})
	h.trackFast(100)
	subs := []string{"1900000201", "1900000202", "1900000203", "1900000204", "1900000205"}
	for _, sub := range subs {
		h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: sub})
	}
	a, b := h.start("a"), h.start("b")
	ids := h.applied(false, subs...)
	var subjects []string
	for _, id := range ids {
		subjects = append(subjects, "cancel-withdraw/"+id)
	}
	h.eventually("every application to be seen in review", func() bool {
		for _, s := range subjects {
			if !slices.Contains(h.statesOf(s, false), "REVIEWING") {
				return false
			}
		}
		return true
	})
	a.crash(t)
	b.crash(t)
	// Confirmed while no instance runs.
	for i, id := range ids {
		h.eventually("the application to await confirmation", func() bool {
			got, _ := h.sim.CancelWithdraw(id)
			return got.State == wxpay.CancelWaitingMerchantConfirm
		})
		body := confirmBody(id)
		body["sub_mchid"] = subs[i]
		h.send("confirm-cancel", "confirm-"+id, body)
	}
	c := h.start("c")
	h.eventually("the new instance to poll", func() bool { return polls(c) > 0 })
	h.ns.Shutdown()
	h.ns.WaitForShutdown()
	h.startNATS(h.port)
	ends := h.waitEnded(subjects...)

	order := []string{"ACCEPTED", "REVIEWING", "WAITING_MERCHANT_CONFIRM", "SYSTEM_PROCESSING", "CANCELED", "FINISH"}
	for _, s := range subjects {
		if e := ends[s]; e.Data["reason"] != "final" || e.Data["state"] != "FINISH" {
			t.Errorf("%s: %s", s, e.Raw)
		}
		last := -1
		for _, st := range h.statesOf(s, false) {
			i := slices.Index(order, st)
			if i <= last {
				t.Errorf("%s: states %v out of order", s, h.statesOf(s, false))
				break
			}
			last = i
		}
	}
	one(t, h.waitOutcomes("confirm-"+ids[0]), "confirm-"+ids[0])
}

// TestTrackUntrackAndTheEnds: track of an id WeChat Pay does not know ends
// after three NOT_FOUNDs; untrack ends a tracking and says whether there
// was one; a resource that never reaches a final state ends at the horizon.
func TestTrackUntrackAndTheEnds(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	h.trackFast(100)
	h.cfg.TrackHorizon = 3 * time.Second
	waiting := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
	forever := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelReviewing})
	h.start("a")

	h.send("track", "t-unknown", map[string]any{"applyment_id": "NOPE1"})
	h.send("track", "t-waiting", map[string]any{"applyment_id": waiting.ApplymentID})
	h.send("track", "t-forever", map[string]any{"applyment_id": forever.ApplymentID})
	got := h.waitOutcomes("t-unknown", "t-waiting", "t-forever")
	if e := one(t, got, "t-unknown"); e.outcome() != "failed" || e.errorCode() != "NOT_FOUND" {
		t.Errorf("track of an unknown id: %s", e.Raw)
	}
	if e := one(t, got, "t-waiting"); e.outcome() != "succeeded" || e.result()["cancel_state"] != "WAITING_MERCHANT_CONFIRM" {
		t.Errorf("track: %s", e.Raw)
	}

	e := h.waitEnded("cancel-withdraw/NOPE1")["cancel-withdraw/NOPE1"]
	if e.Data["reason"] != "not_found" || e.Data["polls"] != 3.0 || e.Data["state"] != nil {
		t.Errorf("unknown id: %s", e.Raw)
	}
	h.send("untrack", "u-1", map[string]any{"applyment_id": waiting.ApplymentID})
	h.send("untrack", "u-2", map[string]any{"out_apply_no": "NEVER1"})
	got = h.waitOutcomes("u-1", "u-2")
	for id, want := range map[string]bool{"u-1": true, "u-2": false} {
		if e := one(t, got, id); e.outcome() != "succeeded" || e.attempts() != 0 || e.result()["was_tracked"] != want {
			t.Errorf("%s: %s", id, e.Raw)
		}
	}
	if e := h.waitEnded("cancel-withdraw/" + waiting.ApplymentID)["cancel-withdraw/"+waiting.ApplymentID]; e.Data["reason"] != "untracked" || e.Data["state"] != "WAITING_MERCHANT_CONFIRM" {
		t.Errorf("untracked: %s", e.Raw)
	}
	// Seen again, in a state that is not final: tracked again.
	h.send("query-cancel-withdraw", "q-again", map[string]any{"applyment_id": waiting.ApplymentID})
	h.waitSucceeded("q-again")
	h.eventually("the resource untracked to be tracked again", func() bool {
		tracked, err := consumer.TrackedResources(t.Context(), h.js, consumer.NewTopology(h.cfg))
		return err == nil && slices.ContainsFunc(tracked, func(tr consumer.Tracked) bool { return tr.Key == waiting.ApplymentID })
	})
	e = h.waitEnded("cancel-withdraw/" + forever.ApplymentID)["cancel-withdraw/"+forever.ApplymentID]
	if e.Data["reason"] != "expired" || e.Data["state"] != "REVIEWING" {
		t.Errorf("horizon: %s", e.Raw)
	}
	if _, ok := h.ended()["cancel-application/NEVER1"]; ok {
		t.Error("an untrack of a resource never tracked ended a tracking")
	}
}

// TestTrackingOff: with WXCANCEL_TRACK off, track and untrack are
// rejected, and a query that shows an application awaiting confirmation
// tracks nothing (with tracking on, its record exists before its outcome
// event).
func TestTrackingOff(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	h.cfg.Track = false
	h.trackFast(100)
	in := h.start("a")
	h.send("query-cancel-withdraw", "off-q", map[string]any{"applyment_id": "2000001000000001"})
	h.waitSucceeded("off-q")
	h.send("track", "off-1", map[string]any{"applyment_id": "A1"})
	h.send("untrack", "off-2", map[string]any{"applyment_id": "A1"})
	got := h.waitOutcomes("off-1", "off-2")
	for _, id := range []string{"off-1", "off-2"} {
		e := one(t, got, id)
		vs, _ := e.Data["error"].(map[string]any)["violations"].([]any)
		if e.outcome() != "rejected" || len(vs) != 1 || vs[0].(map[string]any)["rule"] != "tracking_off" {
			t.Errorf("%s: %s", id, e.Raw)
		}
	}
	if n := h.sim.Total(); n != 1 || polls(in) != 0 {
		t.Errorf("WeChat Pay saw %d requests with tracking off, %d of them polls; want the query's only", n, polls(in))
	}
	if list, err := consumer.TrackedResources(t.Context(), h.js, consumer.NewTopology(h.cfg)); len(list) != 0 {
		t.Errorf("tracked with tracking off: %v (%v)", list, err)
	}
}

// TestCommandsComeFirst: a command sent while 500 polls are due, polled as
// fast as they come (the rate does not hold them back), is executed before
// they are all made, not behind them.
func TestCommandsComeFirst(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	h.trackFast(1000)
	in := h.start("a")
	h.queried("CF", 500)
	h.eventually("the polls to start", func() bool { return polls(in) > 0 })
	// The outcome is awaited on a subscription, not by reading the events
	// stream (which takes longer than many polls).
	sub, err := h.nc.SubscribeSync("wxpay.evt.validate-cancel.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	before := polls(in)
	h.send("validate-cancel", "first", map[string]any{"sub_mchid": subMchid})
	if _, err := sub.NextMsg(time.Minute); err != nil {
		t.Fatalf("no outcome: %v", err)
	}
	if n := polls(in) - before; n >= 500 {
		t.Errorf("the command waited for %d polls", n)
	} else {
		t.Logf("%d polls made while the command was executed", n)
	}
}

// TestTrackingStart: a resource brought in from outside is polled, without
// a command, and bringing it in again changes nothing.
func TestTrackingStart(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	h.trackFast(100)
	app := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelReviewing})
	in := h.start("a")
	tr, err := consumer.OpenTracking(t.Context(), h.js, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var since []time.Time // when the tracking started, after each Start
	for range 2 {
		if err := tr.Start(t.Context(), "cancel-withdraw", app.ApplymentID, subMchid); err != nil {
			t.Fatal(err)
		}
		list, err := consumer.TrackedResources(t.Context(), h.js, consumer.NewTopology(h.cfg))
		if err != nil || len(list) != 1 {
			t.Fatalf("tracked %v (%v), want the one resource", list, err)
		}
		since = append(since, list[0].Since)
	}
	if !since[0].Equal(since[1]) {
		t.Errorf("bringing the resource in again restarted its tracking: started %v, then %v", since[0], since[1])
	}
	h.eventually("the resource to be polled", func() bool {
		return slices.Equal(h.statesOf("cancel-withdraw/"+app.ApplymentID, true), []string{"REVIEWING"})
	})
	// Counted once the poll is over, after its status change is published.
	h.eventually("the poll to be counted", func() bool { return polls(in) > 0 })
	for _, bad := range []consumer.Tracked{{Resource: "merchant", Key: subMchid}, {Resource: "cancel-withdraw", Key: "a.b"}} {
		if err := tr.Start(t.Context(), bad.Resource, bad.Key, ""); err == nil {
			t.Errorf("%s/%s was accepted", bad.Resource, bad.Key)
		}
	}
}
