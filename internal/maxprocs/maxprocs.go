// Package maxprocs runs the service's Go code on one P (GOMAXPROCS=1), its
// threads on one CPU, while its load fits comfortably on one core, and on
// the runtime's default number of Ps and every CPU it was given when it
// does not.
//
// With two Ps or more and a light load, each goroutine made ready (a NATS
// reply, nats.go's flusher woken by a publish, an HTTP answer) wakes a
// thread on an idle core, which takes the goroutine and runs it there, its
// caches cold. With one P those goroutines run one after the other on the
// thread at hand. On the 2-core machine class, at concurrency 64 and 100 ms
// of WeChat Pay latency, one P spends about 7% less CPU per command
// (12% by efficiency; make bench, seven alternated pairs; README,
// Performance), while a fixed one P would cost 15–19% of the rate at full
// load: hence a governor rather than a setting. One P still runs beside
// other threads: the runtime's monitor, and with the OpenSSL signer the
// threads that sign (wxpay), which the kernel would run on another core.
// Holding every thread of the process on one CPU keeps them, their
// wake-ups and the threads' caches on one core: about a fifth less CPU per
// command there again (seven alternated pairs, measured while signatures
// were C calls of the goroutines; README, Performance). The CPU is the
// idlest of the process's when the governor goes to one P, and another
// once that one has been much idler for a second (Move: a neighbour has
// taken to the CPU held); when a sample finds the CPU held all but full
// (less than MinIdle of it idle: other programs pinned there, say), the
// governor goes back to every CPU and the default Ps at once, as it does
// when the process's own load grows.
//
// The governor never acts when GOMAXPROCS is set in the environment: an
// operator's setting is kept as it is (see Start). Pinning needs Linux
// (sched_setaffinity(2), /proc/stat); elsewhere, or when the kernel
// refuses it, the governor only moves GOMAXPROCS.
package maxprocs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// config is how the governor decides. The zero value of a field means its
// default.
type config struct {
	// Interval between two samples of the process. Default 250ms.
	Interval time.Duration
	// Down: the governor goes to one P once the process has used less than
	// this many cores of CPU (user and system, C calls included) for Settle
	// samples in a row. Default 0.75.
	Down float64
	// Settle is how many samples in a row must be under Down before the
	// governor goes to one P. Default 4 (one second at the default
	// Interval).
	Settle int
	// Up: at one P, the governor goes back to the runtime's default as soon
	// as one sample finds the process using more than this many cores.
	// Default 0.85: one P is saturated at about 0.9 cores on the machine
	// class (make bench, the peak-gomaxprocs1 run). Up must
	// be above Down, and the load that reaches it at one P costs more at the
	// default: the two apart keep the governor from going back and forth.
	Up float64
	// MinIdle: at one P, on one CPU, the governor goes back to the default
	// (every CPU, the default Ps) as soon as one sample finds that CPU idle
	// for less than this share of the interval: the CPU is full, whoever
	// fills it. Default 0.1 (at concurrency 64 on the machine class, the
	// CPU held is about half idle).
	MinIdle float64
	// Move: at one P, on one CPU, the governor moves the threads to
	// another of the process's CPUs once that one has been idle for at
	// least this share of the interval more than the CPU held, Settle
	// samples in a row: a neighbour has taken to the CPU held. Default 0.3.
	Move float64
}

// Defaults of [config].
const (
	defaultInterval = 250 * time.Millisecond
	defaultDown     = 0.75
	defaultSettle   = 4
	defaultUp       = 0.85
	defaultMinIdle  = 0.1
	defaultMove     = 0.3
)

func (c config) withDefaults() config {
	if c.Interval == 0 {
		c.Interval = defaultInterval
	}
	if c.Down == 0 {
		c.Down = defaultDown
	}
	if c.Settle == 0 {
		c.Settle = defaultSettle
	}
	if c.Up == 0 {
		c.Up = defaultUp
	}
	if c.MinIdle == 0 {
		c.MinIdle = defaultMinIdle
	}
	if c.Move == 0 {
		c.Move = defaultMove
	}
	return c
}

// validate reports every problem of c (after defaults) at once.
func (c config) validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("maxprocs: Interval %s is negative", c.Interval))
	}
	if c.Down < 0 {
		errs = append(errs, fmt.Errorf("maxprocs: Down %g is negative", c.Down))
	}
	if c.Settle < 0 {
		errs = append(errs, fmt.Errorf("maxprocs: Settle %d is negative", c.Settle))
	}
	if c.Up < 0 {
		errs = append(errs, fmt.Errorf("maxprocs: Up %g is negative", c.Up))
	}
	if c.MinIdle < 0 || c.MinIdle >= 1 {
		errs = append(errs, fmt.Errorf("maxprocs: MinIdle %g is not in [0, 1)", c.MinIdle))
	}
	if c.Move <= 0 || c.Move > 1 {
		errs = append(errs, fmt.Errorf("maxprocs: Move %g is not in (0, 1]", c.Move))
	}
	if c.Up <= c.Down {
		errs = append(errs, fmt.Errorf("maxprocs: Up %g is not above Down %g", c.Up, c.Down))
	}
	return errors.Join(errs...)
}

// sample is what the governor reads of the process and of the machine:
// totals since it started, on a monotonic clock.
type sample struct {
	Wall time.Duration // time on the clock
	CPU  time.Duration // process CPU time, user and system
	// Idle is the idle time of each CPU the process may run on, by CPU
	// number (absent: not one of them); nil when it cannot be read.
	Idle map[int]time.Duration
}

// procsRuntime is what the governor changes: the process's GOMAXPROCS,
// and the CPUs its threads run on.
type procsRuntime interface {
	// Procs returns the current GOMAXPROCS.
	Procs() int
	// SetOne sets GOMAXPROCS to 1.
	SetOne()
	// SetDefault sets GOMAXPROCS back to the runtime's default, which the
	// runtime then keeps up to date with the CPU limit.
	SetDefault()
	// Pin holds every thread of the process on cpu; on failure the
	// threads may run where they ran before.
	Pin(cpu int) error
	// Unpin gives every thread back the CPUs the process had before Pin.
	Unpin() error
}

// governor moves GOMAXPROCS between 1 and the runtime's default, and the
// threads between one CPU and every CPU, as the load asks (see the package
// documentation). It is not safe for concurrent use: run is its one loop.
type governor struct {
	cfg  config
	rt   procsRuntime
	read func() sample
	log  *slog.Logger
	one  bool // GOMAXPROCS was set to 1 by the governor
	// pinned is the CPU the governor holds the threads on, -1 for none.
	pinned int
	below  int // samples in a row under Down
	idler  int // samples in a row with another CPU idler than pinned by Move
	last   sample
	begun  bool
}

// newGovernor returns a governor of rt that samples the process with
// read. It fails when cfg does not validate.
func newGovernor(cfg config, rt procsRuntime, read func() sample, log *slog.Logger) (*governor, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &governor{cfg: cfg.withDefaults(), rt: rt, read: read, log: log, pinned: -1}, nil
}

// run samples the process every Interval and moves GOMAXPROCS, until ctx
// ends; it then sets GOMAXPROCS back to the runtime's default.
func (g *governor) run(ctx context.Context) {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	defer func() {
		if g.one {
			g.toDefault()
		}
	}()
	g.step(g.read())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.step(g.read())
		}
	}
}

// step takes one sample and moves GOMAXPROCS if the load since the
// previous sample asks for it. The first sample only sets the baseline.
func (g *governor) step(s sample) {
	prev := g.last
	g.last = s
	if !g.begun {
		g.begun = true
		return
	}
	wall := s.Wall - prev.Wall
	if wall <= 0 {
		return
	}
	cores := float64(s.CPU-prev.CPU) / float64(wall)
	if g.one {
		idle, known := idleShare(prev, s, g.pinned, wall)
		switch {
		case cores > g.cfg.Up:
			g.toDefault()
			g.log.Debug("load above one P: GOMAXPROCS back to the default", "gomaxprocs", g.rt.Procs(), "cores", round(cores))
		case known && idle < g.cfg.MinIdle:
			cpu := g.pinned
			g.toDefault()
			g.log.Debug("the CPU held is full: every CPU and the default GOMAXPROCS again", "cpu", cpu, "idle", round(idle), "cores", round(cores))
		case known:
			g.moveIfIdler(prev, s, idle, wall)
		}
		return
	}
	if g.rt.Procs() <= 1 || cores >= g.cfg.Down {
		g.below = 0
		return
	}
	g.below++
	if g.below >= g.cfg.Settle {
		g.rt.SetOne()
		g.one, g.below = true, 0
		cpu, ok := idlest(prev, s)
		if ok {
			if err := g.rt.Pin(cpu); err != nil {
				g.log.Debug("cannot hold the threads on one CPU", "cpu", cpu, "err", err)
				_ = g.rt.Unpin() // whatever part of it was done
			} else {
				g.pinned = cpu
			}
		}
		g.log.Debug("load fits on one P: GOMAXPROCS 1", "cores", round(cores), "cpu", g.pinned)
	}
}

// moveIfIdler moves the threads to the idlest CPU once it has been idler
// than the one held (idle that share of the interval from prev to s, wall
// long) by Move, Settle samples in a row. When the move fails, the threads
// may be on either CPU: the governor goes back to every CPU and the
// default Ps.
func (g *governor) moveIfIdler(prev, s sample, idle float64, wall time.Duration) {
	cpu, ok := idlest(prev, s)
	other, _ := idleShare(prev, s, cpu, wall)
	if !ok || cpu == g.pinned || other-idle < g.cfg.Move {
		g.idler = 0
		return
	}
	g.idler++
	if g.idler < g.cfg.Settle {
		return
	}
	g.idler = 0
	from := g.pinned
	if err := g.rt.Pin(cpu); err != nil {
		g.log.Debug("cannot move the threads to an idler CPU", "from", from, "to", cpu, "err", err)
		g.toDefault()
		return
	}
	g.pinned = cpu
	g.log.Debug("threads moved to an idler CPU", "from", from, "to", cpu, "idle_held", round(idle), "idle_to", round(other))
}

// toDefault undoes SetOne and Pin: the CPUs first, for the runtime's
// default counts the CPUs the thread may run on.
func (g *governor) toDefault() {
	if g.pinned >= 0 {
		if err := g.rt.Unpin(); err != nil {
			g.log.Warn("cannot give the threads back every CPU", "err", err)
		}
		g.pinned = -1
	}
	g.rt.SetDefault()
	g.one, g.below, g.idler = false, 0, 0
}

// idleShare is the share of the interval from prev to s, wall long, that
// cpu was idle; known is false when there is no such figure (no CPU held,
// or idle times unread).
func idleShare(prev, s sample, cpu int, wall time.Duration) (share float64, known bool) {
	if cpu < 0 {
		return 0, false
	}
	a, okA := prev.Idle[cpu]
	b, okB := s.Idle[cpu]
	if !okA || !okB {
		return 0, false
	}
	return float64(b-a) / float64(wall), true
}

// idlest is the CPU idle the longest from prev to s (the lowest number of
// those tied); false when no CPU is in both.
func idlest(prev, s sample) (cpu int, ok bool) {
	var most time.Duration
	for c, b := range s.Idle {
		a, in := prev.Idle[c]
		if !in {
			continue
		}
		if d := b - a; !ok || d > most || (d == most && c < cpu) {
			cpu, most, ok = c, d, true
		}
	}
	return cpu, ok
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }

// fixed reports whether the environment sets GOMAXPROCS, which the
// governor then must leave alone.
func fixed(getenv func(string) string) bool { return getenv("GOMAXPROCS") != "" }

// process is the Go runtime's GOMAXPROCS and this process's threads.
type process struct {
	threads threadCPUs
}

// Procs returns runtime.GOMAXPROCS(0).
func (*process) Procs() int { return runtime.GOMAXPROCS(0) }

// SetOne calls runtime.GOMAXPROCS(1) (a short stop of the world).
func (*process) SetOne() { runtime.GOMAXPROCS(1) }

// SetDefault calls runtime.SetDefaultGOMAXPROCS, which also resumes the
// runtime's own updates from the CPU limit.
func (*process) SetDefault() { runtime.SetDefaultGOMAXPROCS() }

// Pin holds every thread on cpu.
func (p *process) Pin(cpu int) error { return p.threads.pin(cpu) }

// Unpin gives every thread the CPUs the process started with.
func (p *process) Unpin() error { return p.threads.unpin() }

// reader returns a sampler of this process: its CPU time from
// getrusage(2), with wall time from since (a monotonic clock: time.Since of
// a fixed start), and the idle time of the CPUs in allowed (nil: none).
// (runtime/metrics' /cpu/classes would not do: the runtime updates them
// only when a collection ends.)
func reader(since func() time.Duration, allowed []int) func() sample {
	want := make(map[int]bool, len(allowed))
	for _, c := range allowed {
		want[c] = true
	}
	return func() sample {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		s := sample{Wall: since(), CPU: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
		if len(want) > 0 {
			s.Idle = cpuIdle(want)
		}
		return s
	}
}

// Start runs a governor of this process with the default config until
// ctx ends, unless getenv sets GOMAXPROCS (to anything) or GOMAXPROCS is
// one already; it returns a function that waits for the governor to end (after
// ctx) and whether one was started.
//
// GOMAXPROCS and the threads' CPUs are the whole process's: one governor
// runs at a time, and Start reports false while another one does. When ctx
// ends, the governor gives the threads back the CPUs the process had when
// it started (a change made to them meanwhile, with taskset(1) say, is
// undone) and GOMAXPROCS its default.
func Start(ctx context.Context, getenv func(string) string, log *slog.Logger) (wait func(), started bool) {
	return start(ctx, config{}, getenv, log)
}

// start is Start with cfg (zero fields for the defaults); an invalid cfg
// starts nothing.
func start(ctx context.Context, cfg config, getenv func(string) string, log *slog.Logger) (wait func(), started bool) {
	if fixed(getenv) || runtime.GOMAXPROCS(0) <= 1 {
		return func() {}, false
	}
	t0 := time.Now()
	threads, allowed := currentThreadCPUs()
	g, err := newGovernor(cfg, &process{threads: threads}, reader(func() time.Duration { return time.Since(t0) }, allowed), log)
	if err != nil || !running.CompareAndSwap(false, true) {
		return func() {}, false
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer running.Store(false)
		g.run(ctx)
	}()
	return func() { <-done }, true
}

// running: a governor started by Start is running.
var running atomic.Bool
