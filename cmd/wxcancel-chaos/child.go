package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/wxcancel/wxcancel/internal/childproc"
	"github.com/wxcancel/wxcancel/internal/embeddednats"
)

// isChild reports whether args select the nats-server child mode.
func isChild(args []string) bool { return len(args) > 0 && args[0] == "-child=nats" }

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
	ctx, stop := childproc.ChildContext()
	defer stop()
	err := errors.New("-store and -port are required")
	if *store != "" && *port > 0 {
		ns, serr := embeddednats.Start("127.0.0.1", *port, *store, embeddednats.SyncAlways())
		if err = serr; err == nil {
			err = childproc.ServeNATS(ctx, ns)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wxcancel-chaos child:", err)
		return 1
	}
	return 0
}
