// Command wxcancel off-boards WeChat Pay sub-merchants (二级商户注销) on
// commands received over NATS JetStream. Run `wxcancel help` for the
// subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wxcancel/wxcancel/wxpay"
)

// version is stamped at build time (-ldflags "-X main.version=…").
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the work failed (a command did not succeed, a run error)
	exitUsage   = 2 // bad flags or configuration
)

// errUsage marks errors caused by the invocation itself.
var errUsage = errors.New("usage")

// app is what a subcommand runs with: its streams and environment, so that
// tests can run every subcommand in-process.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

type subcommand struct {
	name, summary string
	run           func(ctx context.Context, a *app, args []string) error
}

func subcommands() []subcommand {
	return []subcommand{
		{"serve", "consume commands, call WeChat Pay, publish events (blocks until SIGINT/SIGTERM)", runServe},
		{"send", "publish one command; with --wait, print its outcome", runSend},
		{"events", "tail outcome and status events (--since replays)", runEvents},
		{"dlq", "list, show, replay or purge dead-lettered commands", runDLQ},
		{"track", "list the resources followed to their end, or add or remove one", runTrack},
		{"sim", "run the WeChat Pay simulator as a server and write the keys a serve needs", runSim},
		{"demo", "run everything in one process and show one command of each type", runDemo},
		{"version", "print the version and the RSA signer built in", func(_ context.Context, a *app, _ []string) error {
			_, err := fmt.Fprintf(a.stdout, "wxcancel %s\nsigner: %s\n", version, wxpay.SignerBackend())
			return err
		}},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "wxcancel %s — WeChat Pay sub-merchant cancellation over NATS JetStream\n\nUsage: wxcancel <command> [flags]\n\nCommands:\n", version)
	for _, c := range subcommands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'wxcancel <command> -h' for a command's flags.\nExit codes: 0 success, 1 failure, 2 usage or configuration error.\n")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &app{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, a *app, args []string) int {
	stderr := a.stderr
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(a.stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range subcommands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, a, args[1:])
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, errUsage):
			fmt.Fprintln(stderr, "wxcancel "+c.name+":", err)
			return exitUsage
		default:
			fmt.Fprintln(stderr, "wxcancel "+c.name+":", err)
			return exitFailure
		}
	}
	fmt.Fprintf(stderr, "wxcancel: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}
