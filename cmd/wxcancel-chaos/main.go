// Command wxcancel-chaos proves the delivery guarantees of `wxcancel serve`
// under faults, on one machine, every loop bounded and all traffic on
// 127.0.0.1. It runs nats-server as a process of its own (file store,
// every write synced) that it kills with SIGKILL and restarts on the same
// port and store; the WeChat Pay simulator, served over HTTP by this
// program (so that it can tell what took effect), with
// random latency, a share of SYSTEM_ERROR answers and, for the three POSTs,
// a share of requests that take effect and then lose their answer; and N
// `serve` processes with short retry and ack settings.
//
// While it publishes a steady mix of every command type (POSTs on
// applications the simulator knows, a tenth of ids sent again), it kills a
// random instance with SIGKILL and restarts it every 0.5–2 s, and kills and
// restarts nats-server a few times, publishing again what fails while NATS
// is down. Then it waits, bounded, for every outcome and for tracking to
// drain, and counts from the events stream and the simulator: outcomes lost
// or duplicated, POSTs applied twice, POSTs answered failed although they
// took effect, status changes that move backwards, tracked resources lost.
// A hostile phase follows: inputs no service may act on, each of which
// must get exactly one rejected outcome and no request to WeChat Pay.
// Last, every log line of the run is scanned for secrets and personal
// data. It prints one table and exits 0 only when every count that must be
// 0 is.
//
// `make chaos` runs the full version; a short one runs in `make test`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if isChild(os.Args[1:]) {
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(chaosMain(os.Args[1:], os.Stdout, os.Stderr))
}

// options shape a run.
type options struct {
	instances    int
	kills        int
	natsRestarts int
	rate         float64 // commands per second
	seed         uint64
	serviceBin   string
	keep         bool
	revokeAfter  time.Duration // how long the simulator's applications await confirmation
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("wxcancel-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wxcancel-chaos [flags]\n\nKills instances of wxcancel serve and nats-server under load and checks the delivery guarantees (see the package documentation).\n\nFlags:")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.instances, "instances", 3, "serve processes")
	fs.IntVar(&o.kills, "kills", 100, "instances killed with SIGKILL (and restarted), one every 0.5-2s")
	fs.IntVar(&o.natsRestarts, "nats-restarts", 5, "times nats-server is killed with SIGKILL and restarted, spread over the kills")
	fs.Float64Var(&o.rate, "rate", 40, "commands published per second")
	fs.Uint64Var(&o.seed, "seed", uint64(time.Now().UnixNano()), "seed of every random choice")
	fs.StringVar(&o.serviceBin, "service-bin", "", "the wxcancel binary (default: build ./cmd/wxcancel)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (stores, logs); it is kept anyway when a check fails")
	fs.DurationVar(&o.revokeAfter, "revoke-after", 20*time.Second, "how long the simulator's applications await confirmation before they are revoked")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.instances < 1 || o.kills < 0 || o.natsRestarts < 0 || o.rate <= 0 || o.revokeAfter <= 0 {
		return o, errors.New("-instances, -rate and -revoke-after must be positive, -kills and -nats-restarts not negative")
	}
	return o, nil
}

func chaosMain(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "wxcancel-chaos:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, problems, err := run(ctx, o, stderr)
	fmt.Fprintln(stdout)
	c.print(stdout, o)
	for _, p := range problems {
		fmt.Fprintln(stdout, "  "+p)
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "wxcancel-chaos:", err)
		return 1
	case !c.ok():
		return 1
	}
	return 0
}

// ok reports whether every count that must be zero is.
func (c counts) ok() bool {
	for _, n := range c.mustBeZero() {
		if n != 0 {
			return false
		}
	}
	return true
}

// print writes the run as one table.
func (c counts) print(w io.Writer, o options) {
	fmt.Fprintf(w, "wxcancel-chaos seed %d: %d instances, %d commands at %g/s\n", o.seed, o.instances, c.Commands, o.rate)
	rows := []struct {
		name string
		n    int
	}{
		{"commands (distinct ids)", c.Commands}, {"of them sent again", c.Resent},
		{"instances killed (SIGKILL)", c.Kills}, {"nats-server killed and restarted", c.NATSRestarts},
		{"commands with an outcome", c.Outcomes},
		{"lost outcomes", c.Lost}, {"duplicated outcomes", c.Duplicated},
		{"POSTs applied twice", c.AppliedTwice}, {"POSTs failed though applied", c.FailedThoughApplied},
		{"cancel-applyments failed though applied (no query can prove them; the error says so)", c.CancelApplymentUnprovable},
		{"status changes backwards", c.Backwards}, {"tracked resources lost", c.TrackingLost},
		{"hostile inputs", c.Hostile}, {"hostile inputs misanswered", c.HostileMisanswered},
		{"requests for hostile inputs", c.HostileRequests}, {"log lines with secrets", c.SecretLines},
	}
	zero := c.mustBeZero() // the rows marked ✓
	for _, r := range rows {
		mark := "  "
		if _, z := zero[r.name]; z {
			mark = "✓ "
			if r.n != 0 {
				mark = "✗ "
			}
		}
		fmt.Fprintf(w, "  %s%-90s %6d\n", mark, r.name, r.n)
	}
	fmt.Fprintf(w, "  %-92s %6s\n", "wall time", c.Wall.Round(time.Second))
}
