package publisher_test

import (
	"errors"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

func TestTrackingEnded(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	started := time.Date(2026, 11, 30, 10, 0, 0, 123, time.UTC)
	tests := []struct {
		name     string
		ended    publisher.TrackingEnded
		subject  string
		id       string
		wantData string
	}{
		{"final, with every field", publisher.TrackingEnded{Resource: schemas.ResourceCancelWithdraw, Key: "2000001000000123", SubMchid: "1900000109",
			Reason: schemas.EndFinal, State: "FINISH/WITHDRAW_SUCCEED", StartedAt: started, Polls: 7},
			"wxt.evt.tracking.cancel-withdraw.2000001000000123", "tracking/cancel-withdraw/2000001000000123/1796032800000000123",
			`{"resource":"cancel-withdraw","key":"2000001000000123","sub_mchid":"1900000109","reason":"final","state":"FINISH/WITHDRAW_SUCCEED","started_at":"2026-11-30T10:00:00.000000123Z","polls":7}`},
		{"not found, no state ever seen", publisher.TrackingEnded{Resource: schemas.ResourceCancelApplication, Key: "OA9",
			Reason: schemas.EndNotFound, StartedAt: started},
			"wxt.evt.tracking.cancel-application.OA9", "tracking/cancel-application/OA9/1796032800000000123",
			`{"resource":"cancel-application","key":"OA9","reason":"not_found","started_at":"2026-11-30T10:00:00.000000123Z","polls":0}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := in.pub.NewTrackingEnded(tt.ended, publisher.TraceContext{Traceparent: testTrace})
			if err != nil {
				t.Fatal(err)
			}
			if msg.Subject != tt.subject || msg.ID != tt.id {
				t.Errorf("subject %s, id %s; want %s, %s", msg.Subject, msg.ID, tt.subject, tt.id)
			}
			// Built again, the same event: a republish is a duplicate.
			for range 2 {
				again, err := in.pub.NewTrackingEnded(tt.ended, publisher.TraceContext{Traceparent: testTrace})
				if err != nil {
					t.Fatal(err)
				}
				if err := in.pub.Publish(t.Context(), again); err != nil {
					t.Fatal(err)
				}
			}
			got := e.stored(t, tt.subject)
			if len(got) != 1 {
				t.Fatalf("%d events stored, want 1", len(got))
			}
			ev := checkEvent(t, got[0], testTrace)
			if ev.Type() != schemas.EventTypeTrackingEnded || ev.Subject() != string(tt.ended.Resource)+"/"+tt.ended.Key {
				t.Errorf("type %s subject %s", ev.Type(), ev.Subject())
			}
			sameJSON(t, "data", ev.Data(), tt.wantData)
		})
	}
	for name, bad := range map[string]publisher.TrackingEnded{
		"a merchant":     {Resource: schemas.ResourceMerchant, Key: "1900000109", Reason: schemas.EndFinal, StartedAt: started},
		"no key":         {Resource: schemas.ResourceCancelWithdraw, Reason: schemas.EndFinal, StartedAt: started},
		"unknown reason": {Resource: schemas.ResourceCancelWithdraw, Key: "1", Reason: "bored", StartedAt: started},
		"no start":       {Resource: schemas.ResourceCancelWithdraw, Key: "1", Reason: schemas.EndFinal},
	} {
		if _, err := in.pub.NewTrackingEnded(bad, publisher.TraceContext{}); !errors.Is(err, publisher.ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrInvalidEvent", name, err)
		}
	}
}
