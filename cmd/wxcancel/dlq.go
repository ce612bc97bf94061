package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/consumer/deadletter"
)

const dlqHelp = `Usage: wxcancel dlq list [--limit N]
       wxcancel dlq show SEQ
       wxcancel dlq replay (SEQ... | --all)
       wxcancel dlq purge (SEQ... | --all)

Commands that failed after WXCANCEL_MAX_DELIVER deliveries are copied to
<prefix>.dlq.<type> with the reason (Wxcancel-Error-Code, -Message,
-Deliveries) and their original headers, and answered with a failed event.

  list    one line per dead letter: sequence, time, type, command id, reason
  show    one dead letter in full: headers and body
  replay  send the command again with the same command id, once the cause is
          fixed: its recorded outcome is cleared, it runs again and gets a
          new outcome event (id outcome/<command id>/replay-<n>). A command id
          still inside the commands stream's 5-minute duplicate window is
          refused; replay it later. The dead letter stays until purged.
  purge   delete dead letters that were handled

Examples:
  wxcancel dlq list
  wxcancel dlq show 12
  wxcancel dlq replay 12 13
  wxcancel dlq replay --all && wxcancel dlq purge --all

Flags:
`

func runDLQ(ctx context.Context, a *app, args []string) error {
	var cf clientFlags
	fs := newFlagSet(a, "dlq", dlqHelp)
	cf.bind(fs, a.getenv)
	all := fs.Bool("all", false, "replay or purge every dead letter")
	limit := fs.Int("limit", 0, "list: at most this many (0: all)")
	var action string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	// Sequences may come before or after the flags.
	var seqArgs []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		seqArgs, args = append(seqArgs, args[0]), args[1:]
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	seqArgs = append(seqArgs, fs.Args()...)
	var seqs []uint64
	for _, s := range seqArgs {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return fmt.Errorf("%w: %q is not a dead-letter sequence number", errUsage, s)
		}
		seqs = append(seqs, n)
	}
	switch action {
	case "list":
		if len(seqs) > 0 || *all {
			return fmt.Errorf("%w: list takes no sequence numbers", errUsage)
		}
	case "show":
		if len(seqs) != 1 {
			return fmt.Errorf("%w: show takes one sequence number", errUsage)
		}
	case "replay", "purge":
		if (len(seqs) > 0) == *all {
			return fmt.Errorf("%w: %s takes sequence numbers or --all", errUsage, action)
		}
	case "":
		return fmt.Errorf("%w: an action is required: list, show, replay or purge (see wxcancel dlq -h)", errUsage)
	default:
		return fmt.Errorf("%w: unknown action %q: want list, show, replay or purge", errUsage, action)
	}

	nc, js, err := cf.connect("wxcancel dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	topo := consumer.NewTopology(cf.cfg.Config)

	targets := func() ([]deadletter.Letter, error) {
		if *all {
			return deadletter.List(ctx, js, topo, 0)
		}
		var out []deadletter.Letter
		for _, s := range seqs {
			dl, err := deadletter.At(ctx, js, topo, s)
			if err != nil {
				return nil, err
			}
			out = append(out, dl)
		}
		return out, nil
	}

	switch action {
	case "list":
		dls, err := deadletter.List(ctx, js, topo, *limit)
		if err != nil {
			return err
		}
		if len(dls) == 0 {
			fmt.Fprintln(a.stdout, "no dead letters")
			return nil
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tCOMMAND ID\tDELIVERIES\tREASON")
		for _, dl := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s: %s\n", dl.Seq, dl.Time.Local().Format("2006-01-02 15:04:05"),
				dl.CommandType, dl.CommandID, dl.Deliveries, dl.ErrorCode, abbreviate(dl.ErrorMessage, 80))
		}
		return tw.Flush()
	case "show":
		dl, err := deadletter.At(ctx, js, topo, seqs[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "seq %d, dead-lettered %s\n", dl.Seq, dl.Time.Local().Format("2006-01-02 15:04:05 MST"))
		keys := make([]string, 0, len(dl.Header))
		for k := range dl.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, v := range dl.Header[k] {
				fmt.Fprintf(a.stdout, "%s: %s\n", k, v)
			}
		}
		fmt.Fprintf(a.stdout, "\n%s\n", dl.Data)
		return nil
	case "replay":
		dls, err := targets()
		if err != nil {
			return err
		}
		var errs []error
		for _, dl := range dls {
			if err := deadletter.Replay(ctx, js, topo, cf.cfg.Prefix, dl); err != nil {
				errs = append(errs, fmt.Errorf("seq %d: %w", dl.Seq, err))
				continue
			}
			fmt.Fprintf(a.stdout, "replayed seq %d: %s %s\n", dl.Seq, dl.CommandType, dl.CommandID)
		}
		return errors.Join(errs...)
	default: // purge
		dls, err := targets()
		if err != nil {
			return err
		}
		var errs []error
		for _, dl := range dls {
			if err := deadletter.Purge(ctx, js, topo, dl.Seq); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(a.stdout, "purged seq %d: %s %s\n", dl.Seq, dl.CommandType, dl.CommandID)
		}
		return errors.Join(errs...)
	}
}
