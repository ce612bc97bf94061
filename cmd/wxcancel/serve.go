package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/embeddednats"
	"github.com/wxcancel/wxcancel/internal/maxprocs"
	"github.com/wxcancel/wxcancel/internal/natsconn"
	"github.com/wxcancel/wxcancel/internal/settings"
	"github.com/wxcancel/wxcancel/wxpay"
)

const serveHelp = `Usage: wxcancel serve [flags]

Consumes commands from <prefix>.cmd.>, executes them against WeChat Pay and
publishes outcome and status events. Every flag is also an environment
variable (named in its description); a flag wins. Invalid or missing settings
stop the program at start with one message naming every problem (exit 2).

Example:
  WXPAY_MCHID=1900000001 WXPAY_CERT_SERIAL_NO=… WXPAY_PRIVATE_KEY_FILE=apiclient_key.pem \
  WXPAY_PUBLIC_KEY_ID=PUB_KEY_ID_… WXPAY_PUBLIC_KEY_FILE=pub_key.pem \
  NATS_URL=nats://127.0.0.1:4222 wxcancel serve

Flags:
`

// serveFlags parses the configuration of serve (and of demo, which runs the
// same service).
type serveFlags struct {
	cfg      settings.Settings
	logLevel string
	logFile  string
}

func parseServeFlags(a *app, name, help string, args []string, extra func(fs *flag.FlagSet)) (*serveFlags, error) {
	sf := &serveFlags{cfg: settings.Default()}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() { fmt.Fprint(a.stderr, help); fs.PrintDefaults() }
	sf.cfg.Bind(fs, a.getenv)
	fs.StringVar(&sf.logLevel, "log-level", envOr(a.getenv, "WXCANCEL_LOG_LEVEL", "info"), "debug, info, warn or error (env WXCANCEL_LOG_LEVEL)")
	fs.StringVar(&sf.logFile, "log-file", a.getenv("WXCANCEL_LOG_FILE"), "also append JSON logs to this file (env WXCANCEL_LOG_FILE)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	return sf, nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func runServe(ctx context.Context, a *app, args []string) error {
	var profiling bool
	sf, err := parseServeFlags(a, "serve", serveHelp, args, func(fs *flag.FlagSet) {
		fs.BoolVar(&profiling, "pprof", envBool(a.getenv, "WXCANCEL_PPROF"),
			"also serve /debug/pprof/ on the ops HTTP server, for profiling; off by default (env WXCANCEL_PPROF)")
	})
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, closeLog, err := newLogger(logOptions{level: sf.logLevel, file: sf.logFile, w: a.stderr, text: isTerminalWriter(a.stderr)})
	if err != nil {
		_, err = checkConfig(sf.cfg, err) // one message naming every problem
		return err
	}
	defer closeLog()
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	return serve(ctx, sf.cfg, log, &serveHooks{pprof: profiling})
}

// defaultGCPercent is serve's GOGC when the environment sets none. The
// service's live heap is small (a few MB at concurrency 256) and it
// allocates some 26 KB per command (make bench: alloc_kb_per_command), so
// Go's default of 100 collects several times a second for little memory
// saved; at 400 the heap peaks at a few tens of MB and the collector costs
// a quarter as much (README, Performance).
const defaultGCPercent = 400

// envBool reads a boolean environment variable: true for 1, t, true, yes or
// on (any case); anything else, or unset, is false.
func envBool(getenv func(string) string, key string) bool {
	switch strings.ToLower(strings.TrimSpace(getenv(key))) {
	case "1", "t", "true", "yes", "on":
		return true
	}
	return false
}

// embeddedPort is where the embedded JetStream server of a serve without
// NATS_URL listens (on 127.0.0.1 only).
const embeddedPort = 4222

// serveHooks lets the demo and tests observe a running service.
type serveHooks struct {
	// clientOverride adjusts the WeChat Pay client configuration.
	clientOverride func(*wxpay.Config)
	// started is called once the service consumes.
	started func(*consumer.Service, jetstream.JetStream)
	// pprof also serves net/http/pprof under /debug/pprof/ on the ops HTTP
	// server (WXCANCEL_PPROF, -pprof): for profiling, never on by default.
	pprof bool
}

// checkConfig reports every problem of cfg, after those found before it
// (the logging settings), in one usage error, and returns the WeChat Pay
// client's configuration.
func checkConfig(cfg settings.Settings, earlier ...error) (wxpay.Config, error) {
	vErr := cfg.Validate()
	wcfg, cErr := cfg.ClientConfig()
	if err := errors.Join(append(earlier, vErr, cErr)...); err != nil {
		return wcfg, fmt.Errorf("%w: invalid configuration:\n%v", errUsage, indent(err))
	}
	return wcfg, nil
}

// serve runs the service until ctx ends. Configuration problems are reported
// all at once and wrapped in errUsage.
func serve(ctx context.Context, cfg settings.Settings, log *slog.Logger, hooks *serveHooks) error {
	wcfg, err := checkConfig(cfg)
	if err != nil {
		return err
	}
	if hooks != nil && hooks.clientOverride != nil {
		hooks.clientOverride(&wcfg)
	}
	client, err := wxpay.NewClient(wcfg)
	if err != nil {
		return fmt.Errorf("%w: invalid configuration:\n%v", errUsage, indent(err))
	}
	tp, err := tracing(ctx, os.Getenv, log)
	if err != nil {
		return fmt.Errorf("%w: invalid configuration:\n%v", errUsage, indent(err))
	}
	var tracerProvider trace.TracerProvider // nil (not a nil *TracerProvider) when off
	if tp != nil {
		tracerProvider = tp
		defer func() {
			// The spans of the last commands are still in the batch.
			shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(shutCtx); err != nil {
				log.Warn("tracing: flushing the last spans failed", "err", err)
			}
		}()
	}
	govCtx, stopGov := context.WithCancel(ctx)
	waitGov, governed := maxprocs.Start(govCtx, os.Getenv, log)
	defer func() { stopGov(); waitGov() }()
	log.Info("starting", "version", version, "signer", wxpay.SignerBackend(), "tracing", tp != nil,
		"gomaxprocs", runtime.GOMAXPROCS(0), "gomaxprocs_follows_load", governed)

	if len(cfg.NATS.URLs) == 0 {
		dir, _ := filepath.Abs(cfg.EmbeddedStoreDir)
		log.Warn("NATS_URL is unset: running an embedded JetStream server in-process; not for production", "store_dir", dir)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("embedded NATS store: %w", err)
		}
		// The standard port on loopback, so that send, events and dlq on
		// the same machine reach it with NATS_URL=nats://127.0.0.1:4222.
		ns, err := embeddednats.Start("127.0.0.1", embeddedPort, dir)
		if err != nil {
			return fmt.Errorf("%w (is 127.0.0.1:%d taken? set NATS_URL to use a running server)", err, embeddedPort)
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		cfg.NATS.URLs = []string{ns.ClientURL()}
		log.Info("embedded JetStream server listening", "url", ns.ClientURL())
	}
	nc, err := natsconn.Connect(cfg.NATS, "wxcancel serve", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := consumer.NewMetrics(reg)

	startCtx, cancelStart := context.WithTimeout(ctx, 30*time.Second)
	svc, err := consumer.New(startCtx, cfg.Config, consumer.Options{JetStream: js, Client: client, Logger: log, Metrics: metrics,
		TracerProvider: tracerProvider})
	cancelStart()
	if err != nil {
		return err
	}

	var srv *http.Server
	if cfg.HTTPAddr != "-" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("WXCANCEL_HTTP_ADDR: %w", err)
		}
		handler := opsHandler(reg, svc, nc.IsConnected)
		if hooks != nil && hooks.pprof {
			handler = withPprof(handler)
			log.Warn("serving /debug/pprof/ on the ops HTTP server (WXCANCEL_PPROF); do not expose it")
		}
		srv = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("ops HTTP server stopped", "err", err)
			}
		}()
		log.Info("serving /metrics, /healthz, /readyz", "addr", ln.Addr().String())
	}

	ran := make(chan struct{})
	go func() {
		defer close(ran)
		svc.Run(ctx)
	}()
	if hooks != nil && hooks.started != nil && waitReady(svc, ran) {
		hooks.started(svc, js)
	}
	<-ran
	if srv != nil {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(shutCtx)
		cancel()
	}
	if dErr := nc.Drain(); dErr != nil {
		log.Warn("draining the NATS connection", "err", dErr)
	}
	return nil
}

// waitReady waits until svc consumes, or ran is closed first (false).
func waitReady(svc *consumer.Service, ran <-chan struct{}) bool {
	for !svc.Ready() {
		select {
		case <-ran:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// opsHandler serves /metrics, /healthz (the process is alive) and /readyz
// (provisioned, consuming and connected to NATS).
func opsHandler(reg *prometheus.Registry, svc *consumer.Service, connected func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !svc.Ready():
			http.Error(w, "not consuming", http.StatusServiceUnavailable)
		case !connected():
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	return mux
}

// withPprof adds the net/http/pprof endpoints under /debug/pprof/ to h.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// indent lists the problems of a joined error one per line.
func indent(err error) string {
	var out string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		out += "  - " + e.Error() + "\n"
	}
	walk(err)
	return out
}

func isTerminalWriter(w any) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}
