package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wxcancel/wxcancel/internal/embeddednats"
)

// isChild reports whether args select the nats-server child mode.
func isChild(args []string) bool { return len(args) > 0 && args[0] == "-child=nats" }

// natsReady is what the nats child prints once it serves.
type natsReady struct {
	URL string `json:"url"`
}

// runChild runs nats-server with JetStream on a fixed port and store,
// syncing every write to disk (a kill -9 must lose nothing the server
// acknowledged), until SIGTERM or its stdin closes.
func runChild(args []string) int {
	fs := flag.NewFlagSet("wxcancel-chaos child", flag.ContinueOnError)
	fs.String("child", "", "nats")
	store := fs.String("store", "", "JetStream store directory")
	port := fs.Int("port", 0, "port to listen on (127.0.0.1)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	if err := childNATS(ctx, *store, *port); err != nil {
		fmt.Fprintln(os.Stderr, "wxcancel-chaos child:", err)
		return 1
	}
	return 0
}

func childNATS(ctx context.Context, store string, port int) error {
	if store == "" || port <= 0 {
		return errors.New("-store and -port are required")
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "wxcancel-chaos", Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: store,
		NoSigs: true, NoLog: true, MaxPayload: embeddednats.MaxPayload,
		// sync_interval: always. The file store's default fsyncs every two
		// minutes: a kill -9 could lose writes it acknowledged.
		SyncAlways: true,
	})
	if err != nil {
		return err
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(30 * time.Second) {
		return errors.New("nats-server did not start within 30s")
	}
	if err := json.NewEncoder(os.Stdout).Encode(natsReady{URL: ns.ClientURL()}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
