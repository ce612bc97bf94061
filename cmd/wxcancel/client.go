package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/internal/natsconn"
	"github.com/wxcancel/wxcancel/internal/settings"
)

// clientFlags are the NATS settings of the client subcommands (send, events,
// dlq): NATS_URL and its credentials, and the subject prefix.
type clientFlags struct{ cfg settings.Settings }

func (c *clientFlags) bind(fs *flag.FlagSet, getenv func(string) string) {
	c.cfg = settings.Default()
	c.cfg.BindClient(fs, getenv)
}

// connect validates the client settings and connects.
func (c *clientFlags) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	if err := c.cfg.ValidateClient(); err != nil {
		return nil, nil, fmt.Errorf("%w: invalid configuration:\n%v", errUsage, indent(err))
	}
	nc, err := natsconn.Connect(c.cfg.NATS, name, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// newFlagSet returns a flag set that prints help (with examples) to stderr.
func newFlagSet(a *app, name, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() { fmt.Fprint(a.stderr, help); fs.PrintDefaults() }
	return fs
}

// parseFlags parses args, mapping -h to a clean exit and other problems to
// errUsage.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, fmt.Errorf("%w: %v", errUsage, err)
	}
	return false, nil
}
