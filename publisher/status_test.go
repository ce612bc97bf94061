package publisher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))

// withdrawal is an observation of a cancel-withdraw application.
func withdrawal(key, state string, modified time.Time, command string) publisher.Observation {
	return publisher.Observation{
		Resource: schemas.ResourceCancelWithdraw, Key: key, SubMchid: "1900000201", State: state, ModifiedAt: modified,
		Snapshot:  json.RawMessage(fmt.Sprintf(`{"applyment_id":%q,"cancel_state":%q}`, key, state)),
		CommandID: command,
	}
}

// statusData decodes the data of a stored status event after checking the
// event itself.
func statusData(t *testing.T, m *jetstream.RawStreamMsg, traceparent string) (publisher.Event, publisher.StatusData) {
	t.Helper()
	checkEvent(t, m, traceparent)
	var ev publisher.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "wxpay.status.changed" {
		t.Errorf("type %q", ev.Type)
	}
	var d publisher.StatusData
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		t.Fatal(err)
	}
	return ev, d
}

// TestStatusChanges: the rules of a change, the same whether the instance
// decides from its copy of the bucket (Follow) or by reading it.
func TestStatusChanges(t *testing.T) {
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprintf("follow=%v", follow), func(t *testing.T) { statusChanges(t, follow) })
	}
}

func statusChanges(t *testing.T, follow bool) {
	e := newEnv(t, 0)
	in := e.instance(t)
	if follow {
		if err := in.tracker.Follow(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
	}
	const key = "2000000001"
	subject := "wxt.evt.status.cancel-withdraw." + key
	steps := []struct {
		name    string
		ob      publisher.Observation
		changed bool
		prev    string // previous_state of the event published, "" for none
	}{
		{"first seen: published without previous_state", withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0, "c1"), true, ""},
		{"same state again: nothing", withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0, "c2"), false, ""},
		{"same state, newer modify_time: nothing", withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0.Add(2*time.Hour), "c3"), false, ""},
		{"a state modified before the newest time seen: ignored", withdrawal(key, "REVOKED", t0.Add(time.Hour), "c4"), false, ""},
		{"a new state: published with previous_state", withdrawal(key, "SYSTEM_PROCESSING", t0.Add(3*time.Hour), "c5"), true, "WAITING_MERCHANT_CONFIRM"},
		{"an older answer does not move it back", withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0.Add(2*time.Hour), "c6"), false, ""},
		{"so the recorded state is unchanged", withdrawal(key, "SYSTEM_PROCESSING", t0.Add(3*time.Hour), "c7"), false, ""},
		{"equal modify_time, other state: taken", withdrawal(key, "CANCELED", t0.Add(3*time.Hour), "c8"), true, "SYSTEM_PROCESSING"},
		{"no modify_time: cannot be ordered, taken", withdrawal(key, "FUND_PROCESSING", time.Time{}, "c9"), true, "CANCELED"},
		{"still ordered by the newest time seen before", withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0.Add(time.Hour), "c10"), false, ""},
		{"newer again", withdrawal(key, "FINISH", t0.Add(5*time.Hour), "c11"), true, "FUND_PROCESSING"},
	}
	ids := map[string]bool{}
	events := 0
	for _, st := range steps {
		changed, err := in.tracker.Observe(t.Context(), st.ob)
		if err != nil {
			t.Fatalf("%s: Observe: %v", st.name, err)
		}
		if changed != st.changed {
			t.Errorf("%s: changed = %v, want %v", st.name, changed, st.changed)
		}
		if st.changed {
			events++
		}
		got := e.stored(t, subject)
		if len(got) != events {
			t.Fatalf("%s: %d events stored, want %d", st.name, len(got), events)
		}
		if !st.changed {
			continue
		}
		ev, d := statusData(t, got[len(got)-1], "")
		if ids[ev.ID] || !regexp.MustCompile(`^status/cancel-withdraw/2000000001/[0-9]+$`).MatchString(ev.ID) {
			t.Errorf("%s: event id %q is malformed or reused", st.name, ev.ID)
		}
		ids[ev.ID] = true
		if ev.Subject != "cancel-withdraw/"+key {
			t.Errorf("%s: subject attribute %q", st.name, ev.Subject)
		}
		want := fmt.Sprintf(`{"resource":"cancel-withdraw","key":%q,"sub_mchid":"1900000201","state":%q,"observed_at":%q,"command_id":%q,"snapshot":%s}`,
			key, st.ob.State, testNowText, st.ob.CommandID, st.ob.Snapshot)
		if st.prev != "" {
			want = strings.Replace(want, `"state"`, fmt.Sprintf(`"previous_state":%q,"state"`, st.prev), 1)
		}
		sameJSON(t, st.name+": data", ev.Data, want)
		if d.PreviousState != st.prev {
			t.Errorf("%s: previous_state %q, want %q", st.name, d.PreviousState, st.prev)
		}
	}
}

func TestStatusEventShape(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	tests := []struct {
		name     string
		ob       publisher.Observation
		subject  string
		ceSubj   string
		wantData string
	}{
		{
			name: "merchant, with a traceparent",
			ob: publisher.Observation{Resource: schemas.ResourceMerchant, Key: "1900000201", SubMchid: "1900000201",
				State: "NORMAL/ALLOW_CANCEL_WITHDRAW", Snapshot: json.RawMessage(`{"merchant_state":"NORMAL","validate_result":"ALLOW_CANCEL_WITHDRAW"}`),
				CommandID: "cmd:1", Traceparent: testTrace},
			subject: "wxt.evt.status.merchant.1900000201", ceSubj: "merchant/1900000201",
			wantData: `{"resource":"merchant","key":"1900000201","sub_mchid":"1900000201","state":"NORMAL/ALLOW_CANCEL_WITHDRAW",
				"observed_at":"` + testNowText + `","command_id":"cmd:1","snapshot":{"merchant_state":"NORMAL","validate_result":"ALLOW_CANCEL_WITHDRAW"}}`,
		},
		{
			name:    "applyment: no sub_mchid, no snapshot (204)",
			ob:      publisher.Observation{Resource: schemas.ResourceApplyment, Key: "APPLY_1", State: "CANCELED", CommandID: "c.2"},
			subject: "wxt.evt.status.applyment.APPLY_1", ceSubj: "applyment/APPLY_1",
			wantData: `{"resource":"applyment","key":"APPLY_1","state":"CANCELED","observed_at":"` + testNowText + `","command_id":"c.2","snapshot":null}`,
		},
		{
			name: "cancel-application, a key that is not a subject token",
			ob: publisher.Observation{Resource: schemas.ResourceCancelApplication, Key: "out:1.2 >*", State: "REVIEWING",
				Snapshot: json.RawMessage(`{"cancel_state":"REVIEWING"}`), CommandID: "c3"},
			subject: "wxt.evt.status.cancel-application.out=3A1=2E2=20=3E=2A", ceSubj: "cancel-application/out:1.2 >*",
			wantData: `{"resource":"cancel-application","key":"out:1.2 >*","state":"REVIEWING","observed_at":"` + testNowText + `",
				"command_id":"c3","snapshot":{"cancel_state":"REVIEWING"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed, err := in.tracker.Observe(t.Context(), tt.ob)
			if err != nil || !changed {
				t.Fatalf("Observe = %v, %v", changed, err)
			}
			got := e.stored(t, tt.subject)
			if len(got) != 1 {
				t.Fatalf("%d events on %s", len(got), tt.subject)
			}
			ev, _ := statusData(t, got[0], tt.ob.Traceparent)
			if ev.Subject != tt.ceSubj {
				t.Errorf("subject attribute %q, want %q", ev.Subject, tt.ceSubj)
			}
			sameJSON(t, "data", ev.Data, tt.wantData)
		})
	}
}

func TestObserveRejectsIncompleteObservations(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	good := withdrawal("2000000009", "CANCELED", t0, "c1")
	tests := []struct {
		name   string
		modify func(*publisher.Observation)
	}{
		{"unknown resource", func(o *publisher.Observation) { o.Resource = "account" }},
		{"empty key", func(o *publisher.Observation) { o.Key = "" }},
		{"empty state", func(o *publisher.Observation) { o.State = "" }},
		{"empty command id", func(o *publisher.Observation) { o.CommandID = "" }},
		{"state with a control character", func(o *publisher.Observation) { o.State = "A\x00" }},
		{"key that is not UTF-8", func(o *publisher.Observation) { o.Key = "\xfe" }},
		{"snapshot that is not JSON", func(o *publisher.Observation) { o.Snapshot = json.RawMessage(`{"a"`) }},
		{"malformed traceparent", func(o *publisher.Observation) { o.Traceparent = "01-abc" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ob := good
			tt.modify(&ob)
			if changed, err := in.tracker.Observe(t.Context(), ob); !errors.Is(err, publisher.ErrInvalidEvent) || changed {
				t.Fatalf("Observe = %v, %v; want ErrInvalidEvent", changed, err)
			}
		})
	}
	if _, err := in.pub.StatusTracker(nil, nil).Observe(t.Context(), good); !errors.Is(err, publisher.ErrInvalidConfig) {
		t.Errorf("Observe without a bucket = %v, want ErrInvalidConfig", err)
	}
	// A record that is not ours is reported, never overwritten.
	if _, err := e.kv.Put(t.Context(), "cancel-withdraw.2000000009", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := in.tracker.Observe(t.Context(), good); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("Observe over a corrupt record = %v", err)
	}
	if n := len(e.stored(t, "")); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

// TestStatusConcurrentInstances: two instances (own connections) and many
// goroutines observe the same changes at once; each change is published
// once, whether the instances follow the bucket or not.
func TestStatusConcurrentInstances(t *testing.T) {
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprintf("follow=%v", follow), func(t *testing.T) { concurrentInstances(t, follow) })
	}
}

func concurrentInstances(t *testing.T, follow bool) {
	e := newEnv(t, 0)
	a, b := e.instance(t), e.instance(t)
	if follow {
		for _, in := range []*instance{a, b} {
			if err := in.tracker.Follow(t.Context(), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	const key, workers = "2000000002", 12
	subject := "wxt.evt.status.cancel-withdraw." + key
	rounds := []struct{ state, prev string }{
		{"WAITING_MERCHANT_CONFIRM", ""},
		{"SYSTEM_PROCESSING", "WAITING_MERCHANT_CONFIRM"},
		{"CANCELED", "SYSTEM_PROCESSING"},
	}
	for r, round := range rounds {
		changed := observeAtOnce(t, workers, func(i int) (*publisher.StatusTracker, publisher.Observation) {
			tr := a.tracker
			if i%2 == 1 {
				tr = b.tracker
			}
			return tr, withdrawal(key, round.state, t0.Add(time.Duration(r)*time.Hour), fmt.Sprintf("c%d-%d", r, i))
		})
		if changed != 1 {
			t.Errorf("round %d: %d observers recorded the change, want 1", r, changed)
		}
		got := e.stored(t, subject)
		if len(got) != r+1 {
			t.Fatalf("round %d: %d events stored, want %d", r, len(got), r+1)
		}
		_, d := statusData(t, got[r], "")
		if d.State != round.state || d.PreviousState != round.prev {
			t.Errorf("round %d: event %s after %q, want %s after %q", r, d.State, d.PreviousState, round.state, round.prev)
		}
	}
}

// TestStatusObservationsTakeTurns: commands of one instance that see a new
// resource at once do not race each other to record it: one creates the
// record, and the others find it (in the bucket, or in the copy when
// following) instead of losing a compare-and-set.
func TestStatusObservationsTakeTurns(t *testing.T) {
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprintf("follow=%v", follow), func(t *testing.T) {
			e := newEnv(t, 0)
			in, counted := e.counted(t)
			if follow {
				if err := in.tracker.Follow(t.Context(), 0); err != nil {
					t.Fatal(err)
				}
			}
			const key, observers = "2000000003", 12
			changed := observeAtOnce(t, observers, func(i int) (*publisher.StatusTracker, publisher.Observation) {
				return in.tracker, withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0, fmt.Sprintf("c%d", i))
			})
			if changed != 1 {
				t.Errorf("%d observers recorded the change, want 1", changed)
			}
			if n := counted.creates.Load(); n != 1 {
				t.Errorf("%d attempts to create the record, want 1", n)
			}
			if n := len(e.stored(t, "wxt.evt.status.cancel-withdraw."+key)); n != 1 {
				t.Errorf("%d events stored, want 1", n)
			}
		})
	}
}

// observeAtOnce makes n observations at once, observation i through the
// tracker that pick(i) returns, and counts those that recorded a change.
func observeAtOnce(t *testing.T, n int, pick func(i int) (*publisher.StatusTracker, publisher.Observation)) int32 {
	t.Helper()
	var wg sync.WaitGroup
	var changed atomic.Int32
	for i := range n {
		tr, ob := pick(i)
		wg.Go(func() {
			ch, err := tr.Observe(t.Context(), ob)
			if err != nil {
				t.Errorf("Observe: %v", err)
			}
			if ch {
				changed.Add(1)
			}
		})
	}
	wg.Wait()
	return changed.Load()
}

// TestStatusTurnWaitEndsWithContext: an observation waiting for its turn
// gives up when its context ends, having written nothing, and goes through
// once the turn is free.
func TestStatusTurnWaitEndsWithContext(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	const key = "2000000004"
	done := publisher.TakeTurn(in.tracker, schemas.ResourceCancelWithdraw, key)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	ob := withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0, "c1")
	if _, err := in.tracker.Observe(ctx, ob); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Observe while the turn is taken = %v, want the context's end", err)
	}
	if _, err := e.kv.Get(t.Context(), string(schemas.ResourceCancelWithdraw)+"."+key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the record was written while the observation waited: %v", err)
	}
	done()
	if changed, err := in.tracker.Observe(t.Context(), ob); err != nil || !changed {
		t.Fatalf("Observe after the turn was freed = %v, %v", changed, err)
	}
}

// TestStatusCrashBetweenWriteAndPublish: an instance records a change and
// dies before publishing its event. The event is published exactly once by
// whatever touches the resource next.
func TestStatusCrashBetweenWriteAndPublish(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name    string
		recover func(t *testing.T, survivor *instance, key string)
		want    []string // states of the events, in order; the first has no previous_state
	}{
		{
			name: "the same state is observed again",
			recover: func(t *testing.T, s *instance, key string) {
				for range 2 {
					if changed, err := s.tracker.Observe(t.Context(), withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0, "c-next")); err != nil || changed {
						t.Fatalf("Observe = %v, %v; want the pending event published, nothing changed", changed, err)
					}
				}
			},
			want: []string{"WAITING_MERCHANT_CONFIRM"},
		},
		{
			name: "a newer state is observed",
			recover: func(t *testing.T, s *instance, key string) {
				if changed, err := s.tracker.Observe(t.Context(), withdrawal(key, "CANCELED", t0.Add(time.Hour), "c-next")); err != nil || !changed {
					t.Fatalf("Observe = %v, %v", changed, err)
				}
			},
			want: []string{"WAITING_MERCHANT_CONFIRM", "CANCELED"},
		},
		{
			name: "an older state is observed",
			recover: func(t *testing.T, s *instance, key string) {
				if changed, err := s.tracker.Observe(t.Context(), withdrawal(key, "APPLYMENT_CREATED", t0.Add(-time.Hour), "c-next")); err != nil || changed {
					t.Fatalf("Observe = %v, %v", changed, err)
				}
			},
			want: []string{"WAITING_MERCHANT_CONFIRM"},
		},
		{
			name: "PublishPending at start-up",
			recover: func(t *testing.T, s *instance, key string) {
				n, err := s.tracker.PublishPending(t.Context())
				if err != nil || n != 1 {
					t.Fatalf("PublishPending = %d, %v; want 1", n, err)
				}
				if n, err := s.tracker.PublishPending(t.Context()); err != nil || n != 0 {
					t.Fatalf("second PublishPending = %d, %v; want 0", n, err)
				}
				if changed, err := s.tracker.Observe(t.Context(), withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0, "c-next")); err != nil || changed {
					t.Fatalf("Observe = %v, %v", changed, err)
				}
			},
			want: []string{"WAITING_MERCHANT_CONFIRM"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("300000000%d", i)
			subject := "wxt.evt.status.cancel-withdraw." + key
			victim, survivor := e.instance(t), e.instance(t)
			victim.js.mode.Store(publishFailsBefore)
			changed, err := victim.tracker.Observe(t.Context(), withdrawal(key, "WAITING_MERCHANT_CONFIRM", t0, "c-first"))
			if !errors.Is(err, publisher.ErrPublish) || !errors.Is(err, errKilled) || changed {
				t.Fatalf("Observe with a dying publish = %v, %v; want ErrPublish", changed, err)
			}
			if n := len(e.stored(t, subject)); n != 0 {
				t.Fatalf("%d events stored before recovery", n)
			}
			tt.recover(t, survivor, key)
			got := e.stored(t, subject)
			if len(got) != len(tt.want) {
				t.Fatalf("%d events stored, want %d", len(got), len(tt.want))
			}
			for j, m := range got {
				_, d := statusData(t, m, "")
				prev := ""
				if j > 0 {
					prev = tt.want[j-1]
				}
				if d.State != tt.want[j] || d.PreviousState != prev {
					t.Errorf("event %d: %s after %q, want %s after %q", j, d.State, d.PreviousState, tt.want[j], prev)
				}
				if j == 0 && d.CommandID != "c-first" {
					t.Errorf("the recovered event names command %q, want the one that saw the change", d.CommandID)
				}
			}
		})
	}
}

// TestStatusCrashAfterPublish: the event reached JetStream but the instance
// died before marking it published, and nothing touched the resource until
// the duplicate window had passed. The event is still not stored twice.
func TestStatusCrashAfterPublish(t *testing.T) {
	e := newEnv(t, 100*time.Millisecond)
	victim, survivor := e.instance(t), e.instance(t)
	const key = "4000000001"
	subject := "wxt.evt.status.cancel-withdraw." + key
	victim.js.mode.Store(publishFailsAfterAck)
	if _, err := victim.tracker.Observe(t.Context(), withdrawal(key, "CANCELED", t0, "c1")); !errors.Is(err, publisher.ErrPublish) {
		t.Fatalf("Observe = %v, want ErrPublish", err)
	}
	got := e.stored(t, subject)
	if len(got) != 1 {
		t.Fatalf("%d events stored, want 1", len(got))
	}
	waitDuplicateWindow(t, e, got[0].Header.Get(jetstream.MsgIDHeader))

	if changed, err := survivor.tracker.Observe(t.Context(), withdrawal(key, "CANCELED", t0, "c2")); err != nil || changed {
		t.Fatalf("Observe = %v, %v", changed, err)
	}
	if n := len(e.stored(t, subject)); n != 1 {
		t.Fatalf("%d events stored after recovery, want 1", n)
	}
	if n := survivor.js.publishes.Load(); n != 0 {
		t.Errorf("the survivor published %d events; the event was already stored", n)
	}
	// The record is marked now: nothing is looked up or published again.
	if changed, err := survivor.tracker.Observe(t.Context(), withdrawal(key, "FINISH", t0.Add(time.Hour), "c3")); err != nil || !changed {
		t.Fatalf("Observe = %v, %v", changed, err)
	}
	if got := e.stored(t, subject); len(got) != 2 {
		t.Fatalf("%d events stored, want 2", len(got))
	}
}

// waitDuplicateWindow returns once the events stream no longer remembers id:
// a probe on another subject with the same Nats-Msg-Id is then stored.
func waitDuplicateWindow(t *testing.T, e *env, id string) {
	t.Helper()
	poll.True(t, 10*time.Second, "the duplicate window to pass", func() bool {
		probe := nats.NewMsg("wxt.evt.probe")
		ack, err := e.js.PublishMsg(t.Context(), probe, jetstream.WithMsgID(id))
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		return !ack.Duplicate
	})
}

// TestObservationBefore: an observation without a modification time, made
// before a different state was recorded (one published late, from a
// record), does not replace that newer state; one made after it does.
func TestObservationBefore(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	const key = "2000000077"
	made := time.Now().Add(-time.Second)
	observe(t, in, key, "SYSTEM_PROCESSING", "c2", true) // recorded after made
	late := withdrawal(key, "WAITING_MERCHANT_CONFIRM", time.Time{}, "c1")
	late.Before = made
	if changed, err := in.tracker.Observe(t.Context(), late); err != nil || changed {
		t.Fatalf("an older observation: changed %v, %v; want it ignored", changed, err)
	}
	if n := len(e.stored(t, "")); n != 1 {
		t.Errorf("%d events stored, want 1", n)
	}
	late.Before = time.Now().Add(time.Second)
	if changed, err := in.tracker.Observe(t.Context(), late); err != nil || !changed {
		t.Fatalf("a newer observation: changed %v, %v; want a change", changed, err)
	}
}
