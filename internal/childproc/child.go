package childproc

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
)

// ChildContext returns the context a child mode runs under: it ends on
// SIGTERM or SIGINT, or once the parent closes the child's stdin (the
// parent is done, or died).
func ChildContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	return ctx, stop
}

// NATSReady is the line a nats child prints on stdout once it serves.
type NATSReady struct {
	URL string `json:"url"`
}

// ServeNATS reports ns ready on stdout (one NATSReady line, the first line
// Start waits for), serves until ctx ends, and shuts ns down.
func ServeNATS(ctx context.Context, ns *server.Server) error {
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if err := json.NewEncoder(os.Stdout).Encode(NATSReady{URL: ns.ClientURL()}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
