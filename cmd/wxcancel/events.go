package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

const eventsHelp = `Usage: wxcancel events [--json] [--since D] [--limit N] [FILTER]

Tails outcome and status-change events, one readable line each (colour only
on a terminal), or the raw CloudEvents with --json. FILTER is a subject
filter below <prefix>.evt. (default ">"): "confirm-cancel.>" for one command
type, "*.failed" for every failure, "status.>" for status changes.
--since replays the events of that last period first.

Examples:
  wxcancel events
  wxcancel events --since 1h '*.failed'
  wxcancel events --json 'status.merchant.>'

Flags:
`

func runEvents(ctx context.Context, a *app, args []string) error {
	var cf clientFlags
	fs := newFlagSet(a, "events", eventsHelp)
	cf.bind(fs, a.getenv)
	asJSON := fs.Bool("json", false, "print raw CloudEvents, one JSON object per line")
	since := fs.Duration("since", 0, "replay events of this last period first (e.g. 10m, 2h)")
	limit := fs.Int("limit", 0, "exit after this many events (0: run until interrupted)")
	var filter string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		filter, args = args[0], args[1:]
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if filter == "" {
		filter = fs.Arg(0)
	}
	if filter == "" {
		filter = ">"
	}
	if *since < 0 || *limit < 0 {
		return fmt.Errorf("%w: --since and --limit must not be negative", errUsage)
	}
	nc, js, err := cf.connect("wxcancel events")
	if err != nil {
		return err
	}
	defer nc.Close()
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{cf.cfg.Prefix + ".evt." + filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if *since > 0 {
		start := time.Now().Add(-*since)
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	oc, err := js.OrderedConsumer(ctx, consumer.NewTopology(cf.cfg.Config).Events.Name, occ)
	if err != nil {
		return fmt.Errorf("watching events: %w", err)
	}
	it, err := oc.Messages()
	if err != nil {
		return fmt.Errorf("watching events: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	colour := isTerminalWriter(a.stdout)
	for n := 0; *limit == 0 || n < *limit; n++ {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading events: %w", err)
		}
		if *asJSON {
			fmt.Fprintln(a.stdout, strings.TrimSpace(string(m.Data())))
			continue
		}
		fmt.Fprintln(a.stdout, formatEvent(m.Data(), colour))
	}
	return nil
}

// formatEvent renders one event as a readable line.
func formatEvent(raw []byte, colour bool) string {
	var ev publisher.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return "(not an event: " + err.Error() + ")"
	}
	paint := func(code, s string) string {
		if !colour {
			return s
		}
		return "\x1b[" + code + "m" + s + "\x1b[0m"
	}
	ts := ev.Time
	if t, err := time.Parse(time.RFC3339Nano, ev.Time); err == nil {
		ts = t.Local().Format("15:04:05.000")
	}
	if ev.Type == schemas.EventTypeStatusChanged {
		var d publisher.StatusData
		_ = json.Unmarshal(ev.Data, &d)
		from := d.PreviousState
		if from == "" {
			from = "(new)"
		}
		return fmt.Sprintf("%s %s %s/%s %s → %s", ts, paint("36", "status "), d.Resource, d.Key, from, paint("1", d.State))
	}
	if ev.Type == schemas.EventTypeTrackingEnded {
		var d struct {
			Reason string `json:"reason"`
			State  string `json:"state"`
			Polls  int    `json:"polls"`
		}
		_ = json.Unmarshal(ev.Data, &d)
		state := d.State
		if state == "" {
			state = "no state seen"
		}
		return fmt.Sprintf("%s %s %s tracking ended: %s (%s) after %d polls", ts, paint("35", "tracked"), ev.Subject, paint("1", d.Reason), state, d.Polls)
	}
	var d publisher.OutcomeData
	_ = json.Unmarshal(ev.Data, &d)
	outcome := string(ev.Outcome())
	line := fmt.Sprintf("%s %s %s id=%s attempts=%d", ts, paintOutcome(paint, outcome), d.CommandType, ev.Subject, d.Attempts)
	if d.Reconciled {
		line += " reconciled"
	}
	if d.Error != nil {
		line += fmt.Sprintf(" %s: %s", d.Error.Code, d.Error.Message)
		if d.Error.HTTPStatus != 0 {
			line += fmt.Sprintf(" (HTTP %d)", d.Error.HTTPStatus)
		}
		for _, v := range d.Error.Violations {
			field := v.Field
			if field == "" {
				field = "(body)"
			}
			line += fmt.Sprintf("\n    %s: %s", field, v.Message)
		}
	} else if len(d.Result) > 0 && string(d.Result) != "null" {
		line += " result=" + abbreviate(string(d.Result), 160)
	}
	return line
}

func paintOutcome(paint func(code, s string) string, outcome string) string {
	label := fmt.Sprintf("%-9s", outcome)
	switch outcome {
	case string(schemas.Succeeded):
		return paint("32", label)
	case string(schemas.Failed):
		return paint("31", label)
	default:
		return paint("33", label)
	}
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
