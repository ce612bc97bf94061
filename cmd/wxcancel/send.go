package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

const sendHelp = `Usage: wxcancel send TYPE (--data JSON | --file F) [--id ID] [--wait] [--timeout D]

Publishes one command on <prefix>.cmd.TYPE with Nats-Msg-Id = ID (generated
when not given). The body is checked against the command's schema first: an
invalid body or unknown type is refused without publishing (exit 2).

With --wait, prints the command's outcome event and exits 0 only if it
succeeded (1 when it failed, was rejected, or no outcome came in time).

Types: validate-cancel, query-cancel-withdraw, confirm-cancel,
query-cancel-application, cancel-applyment, apply-cancel-withdraw, track,
untrack.

Examples:
  wxcancel send validate-cancel --data '{"sub_mchid":"1900000109"}' --wait
  wxcancel send confirm-cancel --file confirm.json --id confirm-1900000109-1 --wait

Flags:
`

func runSend(ctx context.Context, a *app, args []string) error {
	var cf clientFlags
	fs := newFlagSet(a, "send", sendHelp)
	cf.bind(fs, a.getenv)
	data := fs.String("data", "", "the command body, JSON")
	file := fs.String("file", "", "read the command body from this file (- for stdin)")
	id := fs.String("id", "", "command id (Nats-Msg-Id); generated when empty")
	wait := fs.Bool("wait", false, "wait for the outcome event and print it")
	timeout := fs.Duration("timeout", time.Minute, "with --wait: how long to wait for the outcome")
	var typ string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		typ, args = args[0], args[1:]
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if typ == "" && fs.NArg() > 0 {
		typ = fs.Arg(0)
	}
	if typ == "" {
		return fmt.Errorf("%w: the command TYPE is required (see wxcancel send -h)", errUsage)
	}
	body, err := readBody(*data, *file)
	if err != nil {
		return err
	}
	if _, err := schemas.Parse(typ, body); err != nil {
		return fmt.Errorf("%w: the command is invalid: %v", errUsage, err)
	}
	if *id == "" {
		*id = newCommandID()
	} else if !schemas.ValidCommandID(*id) {
		return fmt.Errorf("%w: --id must be %s", errUsage, schemas.CommandIDRule)
	}

	nc, js, err := cf.connect("wxcancel send")
	if err != nil {
		return err
	}
	defer nc.Close()
	topo := consumer.NewTopology(cf.cfg.Config)

	if !*wait {
		ack, err := publishCommand(ctx, js, cf.cfg.Prefix, typ, *id, body)
		if err != nil {
			return err
		}
		dup := ""
		if ack.Duplicate {
			dup = " (duplicate id: already received)"
		}
		fmt.Fprintf(a.stdout, "sent %s id=%s stream=%s seq=%d%s\n", typ, *id, ack.Stream, ack.Sequence, dup)
		return nil
	}
	ev, err := sendAndAwait(ctx, js, topo, cf.cfg.Prefix, typ, *id, body, *timeout)
	if err != nil {
		return err
	}
	pretty, _ := json.MarshalIndent(ev, "", "  ")
	fmt.Fprintln(a.stdout, string(pretty))
	if ev.Outcome() != schemas.Succeeded {
		return fmt.Errorf("command %s did not succeed (%s)", *id, ev.Type)
	}
	return nil
}

// publishCommand publishes command id of type typ with body.
func publishCommand(ctx context.Context, js jetstream.JetStream, prefix, typ, id string, body []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(prefix + ".cmd." + typ)
	msg.Data = body
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
	if err != nil {
		return nil, fmt.Errorf("publishing: %w", err)
	}
	return ack, nil
}

// sendAndAwait publishes command id and returns its outcome event, watched
// from before the command is published; it fails when none comes within
// timeout.
func sendAndAwait(ctx context.Context, js jetstream.JetStream, topo consumer.Topology, prefix, typ, id string, body []byte, timeout time.Duration) (*publisher.Event, error) {
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	events, err := watchOutcome(waitCtx, js, topo, prefix, typ, id)
	if err != nil {
		return nil, err
	}
	if _, err := publishCommand(ctx, js, prefix, typ, id, body); err != nil {
		return nil, err
	}
	ev, ok := <-events
	if !ok {
		return nil, fmt.Errorf("no outcome for %s within %s", id, timeout)
	}
	return ev, nil
}

// watchOutcome delivers the outcome event of command id: from the outcomes
// bucket when it is already recorded (a re-sent id), else from the events
// stream, watched from before the command is published. The channel closes
// without a value when ctx ends first.
func watchOutcome(ctx context.Context, js jetstream.JetStream, topo consumer.Topology, prefix, typ, id string) (<-chan *publisher.Event, error) {
	out := make(chan *publisher.Event, 1)
	oc, err := js.OrderedConsumer(ctx, topo.Events.Name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + ".evt." + schemas.EncodeToken(typ) + ".*"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("watching events: %w", err)
	}
	if m, ok, err := consumer.RecordedOutcome(ctx, js, topo, id); err == nil && ok {
		var ev publisher.Event
		if err := json.Unmarshal(m.Data, &ev); err == nil {
			out <- &ev
			close(out)
			return out, nil
		}
	}
	it, err := oc.Messages()
	if err != nil {
		return nil, fmt.Errorf("watching events: %w", err)
	}
	go func() {
		defer close(out)
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			var ev publisher.Event
			if json.Unmarshal(m.Data(), &ev) == nil && ev.Subject == id {
				out <- &ev
				it.Stop()
				return
			}
		}
	}()
	return out, nil
}

func readBody(data, file string) ([]byte, error) {
	switch {
	case data != "" && file != "":
		return nil, fmt.Errorf("%w: give --data or --file, not both", errUsage)
	case data != "":
		return []byte(data), nil
	case file == "-":
		b, err := readAllLimited(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("%w: reading stdin: %v", errUsage, err)
		}
		return b, nil
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		defer f.Close()
		return readAllLimited(f)
	}
	return nil, fmt.Errorf("%w: the command body is required: --data JSON or --file F", errUsage)
}

// readAllLimited reads at most one byte more than a command may have, so
// that an oversized body is refused by validation, not read whole.
func readAllLimited(r io.Reader) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, schemas.MaxCommandSize+1))
}

func newCommandID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "cli-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}
