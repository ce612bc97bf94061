package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/childproc"
)

// runSpec is one run of the service.
type runSpec struct {
	Name        string
	Open        bool          // open loop at Rate for Duration; else Commands as fast as possible
	Commands    int           // closed loop
	Rate        float64       // open loop: commands/s offered
	Duration    time.Duration // open loop
	Concurrency int           // WXCANCEL_CONCURRENCY
	Latency     time.Duration // the simulator's answer delay
	Faults      string        // the simulator's faults
	// The run is compared with min(CPU bound, concurrency ÷ latency) when
	// ConcBound is set. The CPU bound is CPUBound (the peak run's rate)
	// scaled by the floor of the peak run ÷ the floor of this run: the
	// machine's speed drifts from one run to the next.
	ConcBound     float64
	CPUBound      float64
	CPUBoundFloor float64
	Profile       bool     // save a CPU profile of the service during the run
	Env           []string // added to the service's environment
}

// Run is the result of one run, as printed and written to JSON.
type Run struct {
	Name        string  `json:"name"`
	Mode        string  `json:"mode"` // closed or open
	Concurrency int     `json:"concurrency"`
	LatencyMS   float64 `json:"latency_ms"`
	Faults      string  `json:"faults,omitempty"`
	Env         string  `json:"service_env,omitempty"`
	Commands    int     `json:"commands"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"` // commands/s (outcomes received ÷ first send to last outcome)
	// Rate95 counts the first 95% of the outcomes only: the throughput
	// while every worker has work, without the tail of the last commands
	// (a command retried three times near the end stretches a run by
	// seconds).
	Rate95 float64 `json:"rate_95"`
	// RateWarm counts, of a closed run, the outcomes after its first second
	// up to the 95% point: the service's cold start (new connections, the
	// first sight of every resource) left out, as the open loop leaves out
	// its first second. For information: targets use Rate.
	RateWarm    float64 `json:"rate_after_first_second,omitempty"`
	OfferedRate float64 `json:"offered_rate,omitempty"` // open loop

	ServiceCPUSeconds float64 `json:"service_cpu_seconds"`
	CPUPerCommandMS   float64 `json:"cpu_per_command_ms"`
	Attempts          int     `json:"attempts"`
	// FloorPerRequestMS is the floor during the run: the median of samples
	// (a few signs and verifies every half second, by a process of its own)
	// taken while the run goes on. The machine is shared and its speed
	// drifts by 10-20% from one minute to the next; the floor it costs
	// during the run is what the service's CPU compares with.
	FloorPerRequestMS float64 `json:"floor_per_request_ms"`
	// IdleFloorPerRequestMS is the floor measured on the idle machine just
	// before and just after the run (their mean), and IdleEfficiency the
	// efficiency against it.
	IdleFloorPerRequestMS float64 `json:"idle_floor_per_request_ms"`
	IdleEfficiency        float64 `json:"idle_efficiency"`
	FloorSamples          int     `json:"floor_samples"`
	// FloorPerCommandMS = FloorPerRequestMS × attempts ÷ commands.
	FloorPerCommandMS float64 `json:"floor_per_command_ms"`
	// Efficiency = FloorPerCommandMS ÷ CPUPerCommandMS.
	Efficiency float64 `json:"efficiency"`
	// LimitRatio = the machine's best floor per command ÷ CPUPerCommandMS:
	// Efficiency against the fastest RSA on the machine (Results.Best),
	// scaled by this run's floor ÷ the idle floor, as the machine's speed
	// drifts.
	LimitRatio float64 `json:"limit_ratio"`
	Bound      float64 `json:"bound,omitempty"`       // min(CPU bound, concurrency ÷ latency)
	CPUBound   float64 `json:"cpu_bound,omitempty"`   // the peak rate at this run's floor
	BoundRatio float64 `json:"bound_ratio,omitempty"` // Rate ÷ Bound

	// Latency from publish (open loop: its scheduled time) to the outcome
	// event, minus the simulated WeChat Pay latency, of the commands that
	// took one attempt, after the warm-up.
	P50OverheadMS float64 `json:"p50_overhead_ms"`
	P99OverheadMS float64 `json:"p99_overhead_ms"`
	MaxOverheadMS float64 `json:"max_overhead_ms"`
	// Of the commands that needed more than one attempt (faults run).
	RetriedCommands int     `json:"retried_commands,omitempty"`
	P50RetriedMS    float64 `json:"p50_retried_ms,omitempty"`

	// MeanInFlight is the service's wxcancel_commands_in_flight, sampled
	// once a second during the run.
	MeanInFlight float64 `json:"mean_in_flight"`
	// WaitMS is where a command's time goes, from the service's own
	// histograms at the end of the run (warm-up included): the mean wait
	// per JetStream step (wxcancel_jetstream_duration_seconds) and per
	// WeChat Pay request (wxpay_request, signing included).
	WaitMS map[string]float64 `json:"wait_ms,omitempty"`
	// WaitP99MS bounds the 99th percentile of each of those waits from
	// above: the upper bound of the histogram bucket it falls in (absent
	// beyond the last finite bound).
	WaitP99MS map[string]float64 `json:"wait_p99_ms,omitempty"`

	PeakRSSMB float64 `json:"peak_rss_mb"`
	// AllocKBPerCommand is what the service's heap allocated during the
	// run (go_memstats_alloc_bytes_total), per command: unlike CPU, it
	// hardly moves with the machine, so that it shows small changes.
	AllocKBPerCommand float64        `json:"alloc_kb_per_command,omitempty"`
	Outcomes          map[string]int `json:"outcomes"`
	AllOK             bool           `json:"all_succeeded"`

	StatusEvents   int `json:"status_events"`
	DuplicateEvent int `json:"duplicate_outcome_events"`

	// ForeignCores is the CPU (in cores, on average) that processes other
	// than the benchmark's used during the run: a disturbed run shows it.
	ForeignCores float64 `json:"foreign_cores"`
	// CPU per command of the processes that share the machine.
	NATSCPUPerCommandMS    float64 `json:"nats_cpu_per_command_ms"`
	SimCPUPerCommandMS     float64 `json:"sim_cpu_per_command_ms"`
	LoadgenCPUPerCommandMS float64 `json:"loadgen_cpu_per_command_ms"`

	Error string `json:"error,omitempty"`
}

// bench holds what every run needs.
type bench struct {
	self       string // this executable, for the child modes
	serviceBin string
	tmp        string
	pool       int
	logLevel   string
	profileDir string
	profileFor time.Duration
	meter      *floorMeter
	floorSigns int // signs of the floor measured around each run
	// idle and best are the floors measured at the start: the project's
	// signer's, and the machine's best.
	idle       Floor
	best       BestFloor
	progress   io.Writer
	serviceEnv []string
	keep       bool
	verbose    bool
}

const prefix = "wxpay"

// run starts nats-server, the simulator and the service, each in its own
// process, drives one run and stops them again.
func (b *bench) run(ctx context.Context, spec runSpec) (res Run, err error) {
	res = Run{Name: spec.Name, Mode: "closed", Concurrency: spec.Concurrency, LatencyMS: ms(spec.Latency), Faults: spec.Faults,
		Env: strings.Join(spec.Env, " ")}
	if spec.Open {
		res.Mode = "open"
	}
	began := time.Now()
	step := func(what string) {
		if b.verbose {
			fmt.Fprintf(b.progress, "    %-14s %7.3fs %s\n", spec.Name, time.Since(began).Seconds(), what)
		}
	}
	defer step("done")
	n := spec.Commands
	if spec.Open {
		n = int(spec.Rate * spec.Duration.Seconds())
		res.OfferedRate = spec.Rate
	}
	svcEnv := []string{"WXCANCEL_CONCURRENCY=" + strconv.Itoa(spec.Concurrency)}
	if spec.Profile {
		svcEnv = append(svcEnv, "WXCANCEL_PPROF=1")
	}
	dir := filepath.Join(b.tmp, spec.Name)
	st, err := b.startStack(ctx, dir,
		[]string{"-latency", spec.Latency.String(), "-faults", spec.Faults, "-presign", strconv.Itoa(n), "-pool", strconv.Itoa(b.pool)},
		append(svcEnv, spec.Env...), step)
	if err != nil {
		return res, err
	}
	defer st.stop()
	natsProc, simProc, svc, opsAddr := st.nats, st.sim, st.svc, st.opsAddr
	stopped := false
	defer func() {
		if !stopped {
			_ = svc.Stop(30 * time.Second)
		}
		if err != nil {
			err = fmt.Errorf("%w\n  service log %s:%s", err, st.svcLog, childproc.Tail(st.svcLog, 8))
		}
	}()

	nc, err := nats.Connect(st.natsURL, nats.Name("wxcancel-bench"))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	var pubErrs atomic.Int64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(2048),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { pubErrs.Add(1) }))
	if err != nil {
		return res, err
	}
	col := newCollector(spec.Name, prefix, n)
	sub, err := nc.Subscribe(prefix+".evt.>", func(m *nats.Msg) { col.event(m.Subject, m.Data, time.Now()) })
	if err != nil {
		return res, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		return res, err
	}

	floorBefore, err := b.meter.measure(b.floorSigns, 1)
	if err != nil {
		return res, err
	}
	sampler, _, err := childproc.Start(ctx, "floor sampler", b.self, []string{"-child=floor", "-every", "500ms"},
		kidEnv(), filepath.Join(dir, "floor.log"), true, 30*time.Second)
	if err != nil {
		return res, err
	}
	defer sampler.Stop(5 * time.Second)
	step("floor measured")
	cpu0, err := procCPU(svc.PID())
	if err != nil {
		return res, err
	}
	alloc0, allocErr := scrapeCounter(opsAddr, allocMetric)
	nats0, _ := procCPU(natsProc.PID())
	sampler0, _ := procCPU(sampler.PID())
	drain(sampler.Lines) // samples of the idle machine
	sim0, _ := procCPU(simProc.PID())
	self0 := selfCPU()
	mach0, _, _ := machineCPU()
	wall0 := time.Now()

	profDone := make(chan struct{})
	if spec.Profile && b.profileDir != "" {
		go func() {
			defer close(profDone)
			b.saveProfile(ctx, opsAddr, "profile?seconds="+strconv.Itoa(int(b.profileFor.Seconds())), spec.Name+".cpu.pprof")
		}()
	} else {
		close(profDone)
	}

	sampling := make(chan struct{})
	inFlight := make(chan float64, 1)
	go func() { inFlight <- sampleInFlight(opsAddr, sampling) }()
	fmt.Fprintf(b.progress, "  %-14s publishing %d commands (%s)...\n", spec.Name, n, describe(spec))
	sendErr := send(ctx, js, col, spec, n, b.pool)
	wait := 60*time.Second + time.Duration(float64(n)/max(min(spec.ConcBound, spec.CPUBound), 200)*3*float64(time.Second))
	select {
	case <-col.done:
	case <-time.After(wait):
		err = fmt.Errorf("%d of %d outcomes missing after %s", n-col.summarize(0).allSucceed, n, wait)
	case <-svc.Done():
		err = errors.New("the service exited during the run")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil && sendErr != nil {
		err = sendErr
	}
	close(sampling)
	res.MeanInFlight = <-inFlight
	step("outcomes received")
	if err == nil {
		err = waitSettled(ctx, js, 10*time.Second)
	}
	step("settled")
	cpu1, cpuErr := procCPU(svc.PID())
	nats1, _ := procCPU(natsProc.PID())
	sampler1, _ := procCPU(sampler.PID())
	samples := drain(sampler.Lines)
	sim1, _ := procCPU(simProc.PID())
	self1 := selfCPU()
	mach1, _, _ := machineCPU()
	wall := time.Since(wall0)
	hwm, _ := procHWM(svc.PID())
	res.WaitMS, res.WaitP99MS = scrapeWaits(opsAddr)
	if alloc1, err1 := scrapeCounter(opsAddr, allocMetric); err1 == nil && allocErr == nil && n > 0 {
		res.AllocKBPerCommand = (alloc1 - alloc0) / float64(n) / 1024
	}
	floorAfter, ferr := b.meter.measure(b.floorSigns, 1)
	if err == nil {
		err = ferr
	}
	if spec.Profile && b.profileDir != "" {
		<-profDone
		b.saveProfile(ctx, opsAddr, "allocs", spec.Name+".allocs.pprof")
	}
	step("floor measured")
	stopped = true
	if serr := svc.Stop(30 * time.Second); serr != nil && err == nil {
		err = fmt.Errorf("the service did not shut down cleanly: %w", serr)
	}
	step("service stopped")
	if err == nil && cpuErr != nil {
		err = cpuErr
	}
	if n := pubErrs.Load(); n > 0 && err == nil {
		err = fmt.Errorf("%d publishes failed", n)
	}

	if b.keep {
		col.writeCSV(filepath.Join(dir, "latencies.csv"))
	}
	skip := 0
	if spec.Open {
		skip = min(int(spec.Rate), n/5) // the first second warms up
	}
	s := col.summarize(skip)
	res.Commands = n
	res.Outcomes = s.outcomes
	res.AllOK = s.allSucceed == n
	res.Attempts = s.attempts
	res.StatusEvents, res.DuplicateEvent = s.status, s.dups
	if !s.last.IsZero() {
		res.Seconds = s.last.Sub(s.first).Seconds()
		res.Rate = float64(s.allSucceed+countFailed(s.outcomes)) / res.Seconds
	}
	if !s.last95.IsZero() {
		res.Rate95 = float64(n*95/100) / s.last95.Sub(s.first).Seconds()
		if d := s.last95.Sub(s.first) - time.Second; !spec.Open && d > time.Second {
			res.RateWarm = float64(s.warm) / d.Seconds()
		}
	}
	ours := (cpu1 - cpu0) + (nats1 - nats0) + (sim1 - sim0) + (self1 - self0) + (sampler1 - sampler0)
	res.ForeignCores = max(0, float64(mach1-mach0-ours)/float64(wall))
	res.ServiceCPUSeconds = (cpu1 - cpu0).Seconds()
	res.CPUPerCommandMS = ms(cpu1-cpu0) / float64(n)
	res.NATSCPUPerCommandMS = ms(nats1-nats0) / float64(n)
	res.SimCPUPerCommandMS = ms(sim1-sim0) / float64(n)
	res.LoadgenCPUPerCommandMS = ms(self1-self0) / float64(n)
	res.IdleFloorPerRequestMS = (floorBefore.PerRequestMS + floorAfter.PerRequestMS) / 2
	res.FloorPerRequestMS, res.FloorSamples = medianFloor(samples)
	if res.FloorSamples == 0 {
		res.FloorPerRequestMS = res.IdleFloorPerRequestMS
	}
	if s.attempts > 0 {
		perCommand := float64(s.attempts) / float64(n)
		res.FloorPerCommandMS = res.FloorPerRequestMS * perCommand
		res.Efficiency = res.FloorPerCommandMS / res.CPUPerCommandMS
		res.IdleEfficiency = res.IdleFloorPerRequestMS * perCommand / res.CPUPerCommandMS
		if b.best.PerRequestMS > 0 && b.idle.PerRequestMS > 0 {
			res.LimitRatio = b.best.PerRequestMS * res.FloorPerRequestMS / b.idle.PerRequestMS * perCommand / res.CPUPerCommandMS
		}
	}
	if spec.ConcBound > 0 {
		res.Bound = spec.ConcBound
		if spec.CPUBound > 0 {
			cpu := spec.CPUBound
			if spec.CPUBoundFloor > 0 && res.FloorPerRequestMS > 0 {
				cpu *= spec.CPUBoundFloor / res.FloorPerRequestMS
			}
			res.CPUBound = cpu
			res.Bound = min(cpu, spec.ConcBound)
		}
		res.BoundRatio = res.Rate / res.Bound
	}
	res.P50OverheadMS = ms(percentile(s.latencies, 50) - spec.Latency)
	res.P99OverheadMS = ms(percentile(s.latencies, 99) - spec.Latency)
	res.MaxOverheadMS = ms(percentile(s.latencies, 100) - spec.Latency)
	res.RetriedCommands = s.multiAttempt
	if spec.Open { // in a closed loop, latency is mostly time queued in the stream
		res.P50RetriedMS = ms(percentile(s.retriedLatencies, 50))
	}
	res.PeakRSSMB = float64(hwm) / (1 << 20)
	if err != nil {
		res.Error = err.Error()
	}
	return res, err
}

func countFailed(outcomes map[string]int) int {
	n := 0
	for k, v := range outcomes {
		if k != "succeeded" && k != "missing" {
			n += v
		}
	}
	return n
}

func describe(spec runSpec) string {
	s := "concurrency " + strconv.Itoa(spec.Concurrency)
	if spec.Latency > 0 {
		s += ", WeChat Pay latency " + spec.Latency.String()
	}
	if spec.Open {
		s += fmt.Sprintf(", open loop at %.0f/s", spec.Rate)
	}
	if spec.Faults != "" {
		s += ", faults " + spec.Faults
	}
	if len(spec.Env) > 0 {
		s += ", " + strings.Join(spec.Env, " ")
	}
	return s
}

// send publishes the run's commands: all at once (closed loop) or each at
// its scheduled time (open loop; latency is then measured from the schedule,
// so that a stalled sender does not hide a slow service).
func send(ctx context.Context, js jetstream.JetStream, col *collector, spec runSpec, n, pool int) error {
	publish := func(i int) error {
		c := makeCommand(spec.Name, i, pool)
		msg := &nats.Msg{Subject: prefix + ".cmd." + c.ctype, Data: c.body, Header: nats.Header{}}
		for {
			_, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(c.id), jetstream.WithStallWait(5*time.Second))
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				continue
			}
			return err
		}
	}
	start := time.Now()
	interval := time.Duration(0)
	if spec.Open {
		interval = time.Duration(float64(time.Second) / spec.Rate)
	}
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		at := time.Now()
		if spec.Open {
			at = start.Add(time.Duration(i) * interval)
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
		}
		col.sent(i, at)
		if err := publish(i); err != nil {
			return fmt.Errorf("publishing command %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("publishes not acknowledged within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitSettled waits until the service has acknowledged every command.
func waitSettled(ctx context.Context, js jetstream.JetStream, limit time.Duration) error {
	topo := consumer.NewTopology(consumer.DefaultConfig())
	deadline := time.Now().Add(limit)
	for {
		c, err := js.Consumer(ctx, topo.Commands.Name, topo.Consumer.Durable)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = c.Info(ctx); err == nil && info.NumAckPending == 0 && info.NumPending == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("commands still unacknowledged after %s (%v)", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stack is the processes of one run: nats-server and the simulator, child
// modes of this program with one core's worth of threads each, and the
// service, with every core.
type stack struct {
	nats, sim, svc *childproc.Proc
	natsURL        string
	opsAddr        string // the service's /metrics, /readyz
	svcLog         string
}

// startStack starts a run's stack in dir: the simulator with simArgs added
// to its child mode's, the service with env (and -service-env) added to
// what connects it to the other two. It returns once the service is ready;
// on an error it stops what it started. The caller stops the service (its
// exit matters to the run), then calls stop.
func (b *bench) startStack(ctx context.Context, dir string, simArgs, env []string, step func(string)) (_ *stack, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	st := &stack{svcLog: filepath.Join(dir, "service.log")}
	defer func() {
		if err != nil {
			_ = st.svc.Stop(30 * time.Second)
			st.stop()
		}
	}()
	var nr childproc.NATSReady
	if st.nats, nr, err = b.startNATS(ctx, dir, kidEnv()); err != nil {
		return nil, err
	}
	st.natsURL = nr.URL
	step("nats-server started")
	var line string
	st.sim, line, err = childproc.Start(ctx, "simulator", b.self, append([]string{"-child=sim", "-dir", filepath.Join(dir, "keys")}, simArgs...),
		kidEnv(), filepath.Join(dir, "sim.log"), true, 60*time.Second)
	if err != nil {
		return nil, err
	}
	step("simulator started")
	var sr simReady
	if err := json.Unmarshal([]byte(line), &sr); err != nil {
		return nil, fmt.Errorf("sim child: %q: %w", line, err)
	}
	if st.opsAddr, err = childproc.FreeAddr(); err != nil {
		return nil, err
	}
	svcEnv := append(childproc.Env(), sr.Keys.Env()...) // GOMAXPROCS unset: the service follows its load (internal/maxprocs)
	svcEnv = append(svcEnv, "NATS_URL="+st.natsURL, "WXPAY_BASE_URL="+sr.BaseURL, "WXPAY_BACKUP_BASE_URL=-",
		"WXCANCEL_HTTP_ADDR="+st.opsAddr, "WXCANCEL_LOG_LEVEL="+b.logLevel)
	svcEnv = append(append(svcEnv, env...), b.serviceEnv...)
	if st.svc, _, err = childproc.Start(ctx, "service", b.serviceBin, []string{"serve"}, svcEnv, st.svcLog, false, 0); err != nil {
		return nil, err
	}
	if err := st.svc.AwaitOK(ctx, "http://"+st.opsAddr+"/readyz", 60*time.Second); err != nil {
		return nil, err // AwaitOK's error ends with the log's tail
	}
	step("service ready")
	return st, nil
}

// kidEnv is the environment of this program's child modes: one core's
// worth of threads each.
func kidEnv() []string { return childproc.Env("GOMAXPROCS=1", benchChildEnv+"=1") }

// stop stops the simulator and nats-server (Stop of a nil proc does
// nothing).
func (st *stack) stop() {
	_ = st.sim.Stop(5 * time.Second)
	_ = st.nats.Stop(10 * time.Second)
}

// startNATS starts the nats-server child, storing under dir.
func (b *bench) startNATS(ctx context.Context, dir string, env []string) (*childproc.Proc, childproc.NATSReady, error) {
	var nr childproc.NATSReady
	p, line, err := childproc.Start(ctx, "nats-server", b.self, []string{"-child=nats", "-store", filepath.Join(dir, "nats")},
		env, filepath.Join(dir, "nats.log"), true, 30*time.Second)
	if err != nil {
		return nil, nr, err
	}
	if err := json.Unmarshal([]byte(line), &nr); err != nil {
		_ = p.Stop(10 * time.Second)
		return nil, nr, fmt.Errorf("nats child: %q: %w", line, err)
	}
	return p, nr, nil
}

// saveProfile fetches a pprof profile from the service into the profile
// directory.
func (b *bench) saveProfile(ctx context.Context, addr, what, name string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/"+what, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(b.progress, "  profile %s: %v\n", name, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(b.progress, "  profile %s: HTTP %d\n", name, resp.StatusCode)
		return
	}
	f, err := os.Create(filepath.Join(b.profileDir, name))
	if err == nil {
		_, err = io.Copy(f, resp.Body)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		fmt.Fprintf(b.progress, "  profile %s: %v\n", name, err)
	}
}

// sampleInFlight reads the service's wxcancel_commands_in_flight once a
// second until stop is closed, and returns the mean. Each read is a whole
// /metrics scrape, which the service's CPU pays for: four a second cost
// about 1.4% of it at concurrency 64 (a 5 s CPU profile at 61af4ca: 0.04 s
// of 2.79 s in prometheus.(*Registry).Gather), many times what a Prometheus
// scraping every 15 s or more costs in production.
func sampleInFlight(addr string, stop <-chan struct{}) float64 {
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var sum float64
	var n int
	for {
		select {
		case <-stop:
			if n == 0 {
				return 0
			}
			return sum / float64(n)
		case <-t.C:
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		req.Header.Set("Accept-Encoding", "identity") // no gzip: spare the service's CPU
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for line := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "wxcancel_commands_in_flight "); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					sum += f
					n++
				}
			}
		}
	}
}

// allocMetric counts the bytes the service's heap has allocated.
const allocMetric = "go_memstats_alloc_bytes_total"

// waitHistograms are the service's histograms scrapeWaits reads: metric
// name and label → the key of Result.WaitMS (the label's value, or the key
// given, summed over every label value).
var waitHistograms = []struct{ metric, label, key string }{
	{"wxcancel_jetstream_duration_seconds", "step", ""},
	{"wxcancel_wxpay_request_duration_seconds", "endpoint", "wxpay_request"},
}

// scrapeWaits reads every wait histogram from the service's /metrics: the
// mean and the 99th percentile bound of each, in milliseconds; nil when it
// cannot be read.
func scrapeWaits(addr string) (means, p99 map[string]float64) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, nil
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return parseWaits(string(body))
}

// parseWaits computes scrapeWaits' figures from a Prometheus text
// exposition, each histogram summed over its label values (or over the
// values of the label that names it). The 99th percentile is bounded from
// above by its bucket's upper bound; it is left out when it lies beyond
// the last finite bound.
func parseWaits(text string) (means, p99 map[string]float64) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, nil
	}
	type histogram struct {
		sum, count float64
		buckets    map[float64]float64 // upper bound (s) → cumulative count
	}
	hists := map[string]*histogram{}
	for _, h := range waitHistograms {
		f := families[h.metric]
		if f.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range f.GetMetric() {
			key := h.key
			if key == "" {
				for _, l := range m.GetLabel() {
					if l.GetName() == h.label {
						key = l.GetValue()
					}
				}
				if key == "" {
					continue
				}
			}
			w := hists[key]
			if w == nil {
				w = &histogram{buckets: map[float64]float64{}}
				hists[key] = w
			}
			mh := m.GetHistogram()
			w.sum += mh.GetSampleSum()
			w.count += float64(mh.GetSampleCount())
			for _, b := range mh.GetBucket() {
				w.buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
	}
	means, p99 = map[string]float64{}, map[string]float64{}
	for k, w := range hists {
		if w.count == 0 {
			continue
		}
		means[k] = w.sum / w.count * 1000
		for _, bound := range slices.Sorted(maps.Keys(w.buckets)) {
			if w.buckets[bound] >= 0.99*w.count {
				if !math.IsInf(bound, 1) {
					p99[k] = bound * 1000
				}
				break
			}
		}
	}
	if len(means) == 0 {
		return nil, nil
	}
	if len(p99) == 0 {
		p99 = nil
	}
	return means, p99
}

// drain returns the lines waiting in ch.
func drain(ch <-chan string) []string {
	var out []string
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, l)
		default:
			return out
		}
	}
}

// medianFloor is the median sign + verify of the floor sampler's lines.
func medianFloor(lines []string) (float64, int) {
	var xs []float64
	for _, l := range lines {
		var f floorSample
		if json.Unmarshal([]byte(l), &f) == nil && f.SignMS > 0 {
			xs = append(xs, f.SignMS+f.VerifyMS)
		}
	}
	return median(xs), len(xs)
}
