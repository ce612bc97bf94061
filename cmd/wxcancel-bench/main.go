// Command wxcancel-bench measures `wxcancel serve` against the machine's own
// limit: the CPU of one RSA-2048 signature and one verification per WeChat
// Pay request.
//
// In one run it measures that floor with the project's own wxpay.Signer and
// wxpay.Verifier (the signer this program is built with, which the service
// it builds uses too: `make bench` builds both with -tags openssl where
// libcrypto is installed), and the machine's best floor: the faster of
// those and `openssl speed rsa2048`, when the openssl command is there. It
// then runs the service as its own process (its CPU read
// from /proc/<pid>/stat, its peak RSS from VmHWM) against nats-server and
// the WeChat Pay simulator, each in a process of its own limited to one
// core's worth of threads (GOMAXPROCS=1, as is this load generator):
//
//   - peak: a fixed volume of commands (40% validate-cancel, 30%
//     query-cancel-withdraw, 20% confirm-cancel, 10% query-cancel-application)
//     as fast as the service takes them: commands/s, service CPU per
//     command, efficiency = floor ÷ service CPU per command, limit ratio =
//     the machine's best floor ÷ service CPU per command;
//   - latency-c64, latency-c256: the same with 100 ms of simulated WeChat Pay
//     latency at concurrency 64 and 256: commands/s ÷ min(CPU bound,
//     concurrency ÷ latency), the CPU bound being the peak run's rate;
//   - open-half-peak: an open loop at half the peak rate: p50/p99 of
//     publish → outcome event minus the simulated WeChat Pay latency;
//   - system-error: the peak run with 10% SYSTEM_ERROR answers;
//   - peak-gomaxprocs1: for comparison only, the peak run with the service
//     limited to GOMAXPROCS=1;
//   - tracking-100k: one instance tracking 100,000 resources: its memory,
//     its CPU while nothing is due, and the rate and CPU per poll of a
//     backlog of due ones against WXCANCEL_TRACK_RATE.
//
// It prints one table and writes it as JSON (-out). Run it with `make bench`;
// `-h` lists the flags. The whole run takes under 3 minutes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/wxcancel/wxcancel/internal/childproc"
	"github.com/wxcancel/wxcancel/wxpay"
)

func main() {
	if isChild(os.Args[1:]) {
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	out         string
	label       string
	serviceBin  string
	commands    int
	concurrency int
	latency     time.Duration
	runSeconds  float64
	openSeconds float64
	faults      string
	pool        int
	phases      string
	logLevel    string
	profileDir  string
	profileFor  time.Duration
	keep        bool
	serviceEnv  stringList
	peakRate    float64
	quietWait   time.Duration
	verbose     bool
	strict      bool
	tracked     int
	trackRate   float64
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("wxcancel-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wxcancel-bench [flags]\n\nMeasures `wxcancel serve` against the machine's CPU floor (see the package documentation).\n\nFlags:")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.out, "out", filepath.Join("bench", "results.json"), "write the results as JSON to this file (\"\": don't)")
	fs.StringVar(&o.label, "label", "", "name of the version measured, recorded in the results (default: the git commit)")
	fs.StringVar(&o.serviceBin, "service-bin", "", "use this wxcancel binary instead of building ./cmd/wxcancel")
	fs.IntVar(&o.commands, "commands", 20000, "commands of the peak and system-error runs")
	fs.IntVar(&o.concurrency, "concurrency", 64, "WXCANCEL_CONCURRENCY of the peak and system-error runs")
	fs.DurationVar(&o.latency, "latency", 100*time.Millisecond, "simulated WeChat Pay latency of the latency and open-loop runs")
	fs.Float64Var(&o.runSeconds, "run-seconds", 8, "target length of each latency run (its command count is sized from its bound)")
	fs.Float64Var(&o.openSeconds, "open-seconds", 10, "length of the open-loop run")
	fs.StringVar(&o.faults, "faults", "system_error:rate=0.1", "faults of the system-error run (wxpaysim.ParseFaults syntax)")
	fs.IntVar(&o.pool, "pool", 64, "distinct sub-merchants and applications the queries cycle over")
	fs.StringVar(&o.phases, "runs", allPhases, "comma-separated runs to make")
	fs.StringVar(&o.logLevel, "log-level", "info", "WXCANCEL_LOG_LEVEL of the service (its log goes to a file)")
	fs.StringVar(&o.profileDir, "profile", "", "save CPU and allocation profiles of the service (WXCANCEL_PPROF) in this directory")
	fs.DurationVar(&o.profileFor, "profile-for", 5*time.Second, "length of each CPU profile")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (stores, keys, logs, per-command latencies)")
	fs.BoolVar(&o.verbose, "v", false, "report the steps of each run with their times")
	fs.BoolVar(&o.strict, "strict", false, "exit 3 when a target is missed (runs that fail always exit 1)")
	fs.DurationVar(&o.quietWait, "quiet-wait", 5*time.Second, "before each run, wait up to this long for the machine to be idle (it is shared)")
	fs.Float64Var(&o.peakRate, "peak-rate", 0, "CPU bound (commands/s) to use when the peak run is not made (default: cores ÷ floor)")
	fs.IntVar(&o.tracked, "tracked", 100000, "resources tracked in the tracking run")
	fs.Float64Var(&o.trackRate, "track-rate", 200, "WXCANCEL_TRACK_RATE of the tracking run")
	fs.Var(&o.serviceEnv, "service-env", "KEY=VALUE added to the service's environment, for experiments (repeatable)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var problems []string
	if o.commands < 1 || o.concurrency < 1 || o.pool < 1 || o.tracked < 1 || o.trackRate <= 0 {
		problems = append(problems, "-commands, -concurrency, -pool, -tracked and -track-rate must be positive")
	}
	if o.latency <= 0 || o.runSeconds <= 0 || o.openSeconds <= 0 || o.profileFor < time.Second {
		problems = append(problems, "-latency, -run-seconds and -open-seconds must be positive, -profile-for at least 1s")
	}
	for _, p := range strings.Split(o.phases, ",") {
		if !strings.Contains(","+allPhases+",", ","+strings.TrimSpace(p)+",") {
			problems = append(problems, fmt.Sprintf("unknown run %q (runs: %s)", p, allPhases))
		}
	}
	if len(problems) > 0 {
		return o, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "wxcancel-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Every exit path ends the processes started, even a panic.
	defer childproc.StopAll()

	res, err := benchmark(ctx, o, stderr)
	if res != nil {
		fmt.Fprintln(stdout)
		res.printTable(stdout)
		if o.out != "" && ctx.Err() == nil { // an interrupted run is not a result to compare with
			if werr := res.writeJSON(o.out); werr != nil {
				fmt.Fprintln(stderr, "wxcancel-bench: writing results:", werr)
				return 1
			}
			fmt.Fprintf(stdout, "\nresults written to %s\n", o.out)
		}
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "wxcancel-bench: interrupted")
		return 130
	case err != nil:
		fmt.Fprintln(stderr, "wxcancel-bench:", err)
		return 1
	case o.strict && !res.AllMet:
		return 3
	}
	return 0
}

func benchmark(ctx context.Context, o options, progress io.Writer) (*Results, error) {
	start := time.Now()
	tmp, err := os.MkdirTemp("", "wxcancel-bench-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		fmt.Fprintln(progress, "keeping", tmp)
	} else {
		// Processes are stopped before the directory goes (the deferred
		// childproc.StopAll in benchMain runs after this; stop them here first).
		defer func() { childproc.StopAll(); _ = os.RemoveAll(tmp) }()
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b := &bench{self: self, serviceBin: o.serviceBin, tmp: tmp, floorSigns: 150, pool: o.pool, logLevel: o.logLevel,
		profileDir: o.profileDir, profileFor: o.profileFor, progress: progress, serviceEnv: o.serviceEnv, keep: o.keep, verbose: o.verbose}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return nil, err
		}
	}
	if b.serviceBin == "" {
		fmt.Fprintln(progress, "building ./cmd/wxcancel ...")
		if b.serviceBin, err = childproc.BuildService(ctx, tmp, wxpay.OpenSSLSigner); err != nil {
			return nil, err
		}
	}

	res := &Results{Label: o.label, Time: time.Now().UTC().Format(time.RFC3339), Host: host()}
	if res.Label == "" {
		res.Label = gitCommit()
	}
	fmt.Fprintln(progress, "measuring the floor (RSA-2048 sign + verify) ...")
	if b.meter, err = newFloorMeter(); err != nil {
		return nil, err
	}
	if res.Floor, err = b.meter.measure(200, 5); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "  %s: %.3f ms + %.3f ms per request\n", res.Floor.Signer, res.Floor.SignMS, res.Floor.VerifyMS)
	res.Best = bestFloor(ctx, res.Floor)
	fmt.Fprintf(progress, "  the machine's best (%s): %.3f ms + %.3f ms per request\n", res.Best.Source, res.Best.SignMS, res.Best.VerifyMS)
	b.idle, b.best = res.Floor, res.Best

	// From here on the load generator takes one core's worth of threads.
	runtime.GOMAXPROCS(1)
	want := map[string]bool{}
	for _, p := range strings.Split(o.phases, ",") {
		want[strings.TrimSpace(p)] = true
	}
	var firstErr error
	do := func(spec runSpec) *Run {
		if ctx.Err() != nil {
			return nil
		}
		if busy := waitQuiet(ctx, o.quietWait); busy >= 0.15 {
			fmt.Fprintf(progress, "  the machine is busy (%.2f cores used by other processes): %s may be disturbed\n", busy, spec.Name)
		}
		r, err := b.run(ctx, spec)
		if err != nil {
			fmt.Fprintf(progress, "  %s failed: %v\n", spec.Name, err)
			if firstErr == nil {
				firstErr = fmt.Errorf("run %s: %w", spec.Name, err)
			}
		} else {
			fmt.Fprintf(progress, "  %-14s %.0f commands/s, service CPU %.3f ms/command, efficiency %.3f, %.1f KB allocated/command, peak RSS %.0f MB\n",
				spec.Name, r.Rate, r.CPUPerCommandMS, r.Efficiency, r.AllocKBPerCommand, r.PeakRSSMB)
		}
		res.Runs = append(res.Runs, r)
		return &res.Runs[len(res.Runs)-1]
	}

	// The CPU bound of the latency runs is the rate the service reached
	// when it was CPU-bound on this machine, sharing it as in every run.
	cpuBound, cpuBoundFloor := res.Floor.CPUBoundRate, 0.0
	if o.peakRate > 0 {
		cpuBound = o.peakRate
	}
	if want[runPeak] {
		if p := do(runSpec{Name: runPeak, Commands: o.commands, Concurrency: o.concurrency, Profile: o.profileDir != ""}); p != nil && p.Rate > 0 && p.AllOK {
			cpuBound, cpuBoundFloor = p.Rate, p.FloorPerRequestMS
		}
	}
	for _, c := range []int{64, 256} {
		name := runLat64
		if c == 256 {
			name = runLat256
		}
		if !want[name] {
			continue
		}
		concBound := float64(c) / o.latency.Seconds()
		n := max(int(min(cpuBound, concBound)*o.runSeconds), 500)
		do(runSpec{Name: name, Commands: n, Concurrency: c, Latency: o.latency, ConcBound: concBound,
			CPUBound: cpuBound, CPUBoundFloor: cpuBoundFloor, Profile: o.profileDir != ""})
	}
	if want[runOpen] {
		rate := cpuBound / 2
		// Enough workers for the latency at that rate, with room to spare.
		conc := max(256, int(2*rate*o.latency.Seconds()))
		do(runSpec{Name: runOpen, Open: true, Rate: rate, Duration: time.Duration(o.openSeconds * float64(time.Second)),
			Concurrency: conc, Latency: o.latency, Profile: o.profileDir != ""})
	}
	if want[runFaults] {
		do(runSpec{Name: runFaults, Commands: o.commands, Concurrency: o.concurrency, Faults: o.faults})
	}
	if want[runPeak1P] {
		// For comparison, not a target: the service on one core's worth of
		// threads, as one replica with a CPU limit of 1 would run.
		do(runSpec{Name: runPeak1P, Commands: o.commands / 2, Concurrency: o.concurrency, Env: []string{"GOMAXPROCS=1"}})
	}
	if want[runTracking] && ctx.Err() == nil {
		waitQuiet(ctx, o.quietWait)
		t, err := b.runTracking(ctx, trackingSpec{tracked: o.tracked, rate: o.trackRate, idle: 10 * time.Second, poll: 10 * time.Second})
		if err != nil {
			t.Error = err.Error()
			fmt.Fprintf(progress, "  %s failed: %v\n", runTracking, err)
			if firstErr == nil {
				firstErr = fmt.Errorf("run %s: %w", runTracking, err)
			}
		}
		res.Tracking = &t
	}
	res.TotalSecs = time.Since(start).Seconds()
	res.evaluate()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, firstErr
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func host() Host {
	h := Host{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}
