package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
)

const trackHelp = `Usage: wxcancel track list [--json]
       wxcancel track add (--applyment-id ID | --out-apply-no NO) [--timeout D]
       wxcancel track remove (--applyment-id ID | --out-apply-no NO) [--timeout D]

Lifecycle tracking: the service polls every cancel-withdraw application
(applyment_id) and old-flow cancel application (out_apply_no) it has seen in
a state that is not final, until it is, and publishes each change on
<prefix>.evt.status.> and the end on <prefix>.evt.tracking.>.

  list    the resources tracked now: resource, key, sub-merchant, last state,
          since when, polls made, next poll (--json: one object per line)
  add     send a track command (it queries the resource at once and tracks it
          unless it is final) and print its outcome; a resource answered
          NOT_FOUND exits 1 and is tracked all the same, until 3 polls in a
          row are answered NOT_FOUND
  remove  send an untrack command and print whether it was tracked

add and remove exit 0 only when the command succeeded.

Examples:
  wxcancel track list
  wxcancel track add --applyment-id 2000001000000123
  wxcancel track remove --out-apply-no 123283928932

Flags:
`

func runTrack(ctx context.Context, a *app, args []string) error {
	var verb string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		verb, args = args[0], args[1:]
	}
	var cf clientFlags
	fs := newFlagSet(a, "track", trackHelp)
	cf.bind(fs, a.getenv)
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	applymentID := fs.String("applyment-id", "", "add, remove: a cancel-withdraw application")
	outApplyNo := fs.String("out-apply-no", "", "add, remove: an old-flow cancel application")
	timeout := fs.Duration("timeout", time.Minute, "add, remove: how long to wait for the outcome")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var typ schemas.Type
	switch verb {
	case "list":
	case "add":
		typ = schemas.TypeTrack
	case "remove":
		typ = schemas.TypeUntrack
	default:
		return fmt.Errorf("%w: track needs list, add or remove (see wxcancel track -h)", errUsage)
	}
	var body []byte
	var resource schemas.Resource
	if typ != "" {
		b, err := json.Marshal(struct {
			ApplymentID string `json:"applyment_id,omitempty"`
			OutApplyNo  string `json:"out_apply_no,omitempty"`
		}{*applymentID, *outApplyNo})
		if err != nil {
			return err
		}
		cmd, err := schemas.Parse(string(typ), b)
		if err != nil {
			return fmt.Errorf("%w: give --applyment-id or --out-apply-no, one of them: %v", errUsage, err)
		}
		body = b
		if t, ok := cmd.(interface {
			Target() (schemas.Resource, string)
		}); ok {
			resource, _ = t.Target()
		}
	}
	nc, js, err := cf.connect("wxcancel track")
	if err != nil {
		return err
	}
	defer nc.Close()
	topo := consumer.NewTopology(cf.cfg.Config)
	if typ == "" {
		return listTracked(ctx, a, js, topo, *asJSON)
	}
	return sendTrack(ctx, a, js, topo, cf.cfg.Prefix, typ, resource, body, *timeout)
}

func listTracked(ctx context.Context, a *app, js jetstream.JetStream, topo consumer.Topology, asJSON bool) error {
	tracked, err := consumer.TrackedResources(ctx, js, topo)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		for _, t := range tracked {
			if err := enc.Encode(t); err != nil {
				return err
			}
		}
		return nil
	}
	if len(tracked) == 0 {
		fmt.Fprintln(a.stdout, "nothing is tracked")
		return nil
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RESOURCE\tKEY\tSUB_MCHID\tSTATE\tSINCE\tPOLLS\tNEXT POLL")
	for _, t := range tracked {
		state, next := t.State, t.NextPoll.Local().Format(time.DateTime)
		if state == "" {
			state = "(not seen yet)"
		}
		if t.Polling {
			next = "polling now"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.Resource, t.Key, t.SubMchid, state, t.Since.Local().Format(time.DateTime), t.Polls, next)
	}
	return w.Flush()
}

// sendTrack sends a track or untrack command of resource and prints what
// its outcome says: whether the resource is tracked now, or was.
func sendTrack(ctx context.Context, a *app, js jetstream.JetStream, topo consumer.Topology, prefix string, typ schemas.Type, resource schemas.Resource, body []byte, timeout time.Duration) error {
	ev, err := sendAndAwait(ctx, js, topo, prefix, string(typ), newCommandID(), body, timeout)
	if err != nil {
		return err
	}
	var data publisher.OutcomeData
	_ = json.Unmarshal(ev.Data, &data)
	var result struct {
		CancelState string `json:"cancel_state"`
		WasTracked  bool   `json:"was_tracked"`
	}
	_ = json.Unmarshal(data.Result, &result)
	switch {
	case ev.Outcome() != schemas.Succeeded && data.Error != nil && typ == schemas.TypeTrack && data.Error.Code == wxpay.CodeNotFound:
		return fmt.Errorf("%s %s: %s %s (tracked all the same: the tracking ends after 3 polls in a row answered NOT_FOUND)",
			typ, ev.Outcome(), data.Error.Code, data.Error.Message)
	case ev.Outcome() != schemas.Succeeded && data.Error != nil:
		return fmt.Errorf("%s %s: %s %s", typ, ev.Outcome(), data.Error.Code, data.Error.Message)
	case ev.Outcome() != schemas.Succeeded:
		return fmt.Errorf("%s %s", typ, ev.Outcome())
	case typ == schemas.TypeTrack && resource.Final(result.CancelState):
		fmt.Fprintf(a.stdout, "not tracked: WeChat Pay answered cancel_state %s, a final state\n", result.CancelState)
	case typ == schemas.TypeTrack:
		fmt.Fprintf(a.stdout, "tracked; WeChat Pay answered cancel_state %s\n", result.CancelState)
	case result.WasTracked:
		fmt.Fprintln(a.stdout, "no longer tracked")
	default:
		fmt.Fprintln(a.stdout, "it was not tracked")
	}
	return nil
}
