package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// stored is what the events stream holds, read from its first message.
type stored struct {
	outcomes map[string][]publisher.Event // by command id
	statuses map[string][]publisher.StatusData
	ended    map[string]int // tracking-ended events, by resource/key
}

// readEvents reads the whole events stream.
func readEvents(ctx context.Context, js jetstream.JetStream, stream string) (stored, error) {
	st := stored{outcomes: map[string][]publisher.Event{}, statuses: map[string][]publisher.StatusData{}, ended: map[string]int{}}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return st, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return st, err
	}
	if info.State.Msgs == 0 {
		return st, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("reading event %d: %w", seq, err)
		}
		var ev publisher.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return st, fmt.Errorf("event %d is not an event: %w", seq, err)
		}
		switch ev.Type {
		case schemas.EventTypeStatusChanged:
			var d publisher.StatusData
			_ = json.Unmarshal(ev.Data, &d)
			st.statuses[ev.Subject] = append(st.statuses[ev.Subject], d)
		case schemas.EventTypeTrackingEnded:
			st.ended[ev.Subject]++
		default:
			st.outcomes[ev.Subject] = append(st.outcomes[ev.Subject], ev)
		}
	}
	return st, nil
}

// waitOutcomes reads the events stream until every id has an outcome, or
// limit passed, and returns what it read last.
func waitOutcomes(ctx context.Context, js jetstream.JetStream, stream string, ids []string, limit time.Duration) (stored, error) {
	deadline := time.Now().Add(limit)
	for {
		st, err := readEvents(ctx, js, stream)
		missing := 0
		for _, id := range ids {
			if len(st.outcomes[id]) == 0 {
				missing++
			}
		}
		if err == nil && missing == 0 || time.Now().After(deadline) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// counts are the figures of the table; those in mustBeZero fail the run.
type counts struct {
	Commands, Resent, Kills, NATSRestarts, Outcomes     int
	Lost, Duplicated, AppliedTwice, FailedThoughApplied int
	CancelApplymentUnprovable                           int
	Backwards, TrackingLost                             int
	Hostile, HostileMisanswered, HostileRequests        int
	SecretLines                                         int
	Wall                                                time.Duration
}

func (c counts) mustBeZero() map[string]int {
	return map[string]int{
		"lost outcomes": c.Lost, "duplicated outcomes": c.Duplicated, "POSTs applied twice": c.AppliedTwice,
		"POSTs failed though applied": c.FailedThoughApplied, "status changes backwards": c.Backwards,
		"tracked resources lost": c.TrackingLost, "hostile inputs misanswered": c.HostileMisanswered,
		"requests for hostile inputs": c.HostileRequests, "log lines with secrets": c.SecretLines,
	}
}

// check counts, from the events stream and the simulator, what a correct
// service never does.
// tracked is what is tracked now, by resource/key.
func check(c *counts, l *load, st stored, sim *wxpaysim.Server, tracked map[string]bool) []string {
	var problems []string
	note := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for id := range l.byID {
		n := len(st.outcomes[id])
		c.Outcomes += min(n, 1)
		switch {
		case n == 0:
			c.Lost++
			note("lost: no outcome for %s", id)
		case n > 1:
			c.Duplicated++
			note("duplicated: %d outcome events for %s", n, id)
		}
	}
	// What the simulator applied, by POST endpoint and resource.
	applied := map[string]int{}
	for _, r := range sim.Requests() {
		if r.Applied && r.Method == "POST" && len(r.Keys) > 0 {
			applied[r.Endpoint+"/"+r.Keys[0]]++
		}
	}
	for k, n := range applied {
		if n > 1 {
			c.AppliedTwice++
			note("applied twice: %s %d times", k, n)
		}
	}
	for id, cmd := range l.byID {
		evs := st.outcomes[id]
		if cmd.key == "" || len(evs) == 0 || evs[0].Outcome() != schemas.Failed || applied[cmd.typ+"/"+cmd.key] == 0 {
			continue
		}
		if cmd.typ == string(schemas.TypeCancelApplyment) {
			c.CancelApplymentUnprovable++ // no query can prove a cancellation; the error says so
			continue
		}
		c.FailedThoughApplied++
		note("failed though applied: %s %s %s", id, cmd.typ, evs[0].Data)
	}
	for subject, evs := range st.statuses {
		resource, _, _ := strings.Cut(subject, "/")
		last := -1
		for i, d := range evs {
			r := rank(schemas.Resource(resource), d.State)
			if i > 0 && d.PreviousState != evs[i-1].State || r >= 0 && r < last {
				c.Backwards++
				note("backwards: %s %s → %s after %s", subject, d.PreviousState, d.State, evs[max(i-1, 0)].State)
				break
			}
			last = max(last, r)
		}
		// Tracked, not final, and never ended: lost.
		final := len(evs) > 0 && schemas.Resource(resource).Final(evs[len(evs)-1].State)
		if schemas.Resource(resource).Tracked() && !final && st.ended[subject] == 0 && !tracked[subject] {
			c.TrackingLost++
			note("tracking lost: %s last seen %s, no end", subject, evs[len(evs)-1].State)
		}
	}
	return problems
}

// rank orders the states of a resource as they follow each other; -1 for
// a state outside the order (it is not checked).
func rank(r schemas.Resource, state string) int {
	order := map[schemas.Resource][]string{
		schemas.ResourceCancelWithdraw: {"ACCEPTED", "REVIEWING", "WAITING_MERCHANT_CONFIRM|REJECTED", "SYSTEM_PROCESSING|REVOKED", "CANCELED",
			"FUND_PROCESSING/WITHDRAW_PROCESSING", "FUND_PROCESSING/WITHDRAW_SUCCEED", "FINISH|FINISH/WITHDRAW_SUCCEED"},
		schemas.ResourceCancelApplication: {"REVIEWING", "CANCEL_SUCCESS|REJECTED"},
	}[r]
	for i, s := range order {
		for alt := range strings.SplitSeq(s, "|") {
			if alt == state {
				return i
			}
		}
	}
	return -1
}
