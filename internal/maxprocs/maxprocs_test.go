package maxprocs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/internal/poll"
)

// fakeRuntime records what the governor asks of GOMAXPROCS and of the
// threads' CPUs.
type fakeRuntime struct {
	def, procs int
	pinned     int   // -1: every CPU
	pinErr     error // what Pin answers
	calls      []string
}

func newFakeRuntime(def int) *fakeRuntime { return &fakeRuntime{def: def, procs: def, pinned: -1} }

func (r *fakeRuntime) Procs() int { return r.procs }
func (r *fakeRuntime) SetOne()    { r.procs = 1; r.calls = append(r.calls, "one") }
func (r *fakeRuntime) SetDefault() {
	if r.pinned >= 0 {
		r.calls = append(r.calls, "DEFAULT WHILE PINNED")
	}
	r.procs = r.def
	r.calls = append(r.calls, "default")
}
func (r *fakeRuntime) Pin(cpu int) error {
	r.calls = append(r.calls, "pin "+strconv.Itoa(cpu))
	if r.pinErr == nil {
		r.pinned = cpu
	}
	return r.pinErr
}
func (r *fakeRuntime) Unpin() error {
	r.pinned = -1
	r.calls = append(r.calls, "unpin")
	return nil
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// load is one sampling interval of 250ms: the process's CPU in cores.
type load float64

// feed runs g over the loads, each one interval long, starting from a
// baseline sample, and returns GOMAXPROCS after each. No CPU's idle time is
// known.
func feed(g *governor, rt *fakeRuntime, loads []load) []int {
	return feedIdle(g, rt, loads, nil)
}

// feedIdle is feed with the idle share of each CPU in each interval:
// idle[i] for loads[i] (the last one for the intervals past the end).
func feedIdle(g *governor, rt *fakeRuntime, loads []load, idle []map[int]float64) []int {
	const interval = 250 * time.Millisecond
	var s sample
	if idle != nil {
		s.Idle = map[int]time.Duration{}
		for c := range idle[0] {
			s.Idle[c] = time.Hour
		}
	}
	g.step(s)
	var procs []int
	for i, l := range loads {
		next := sample{Wall: s.Wall + interval, CPU: s.CPU + time.Duration(float64(l)*float64(interval))}
		if idle != nil {
			next.Idle = map[int]time.Duration{}
			for c, share := range idle[min(i, len(idle)-1)] {
				next.Idle[c] = s.Idle[c] + time.Duration(share*float64(interval))
			}
		}
		s = next
		g.step(s)
		procs = append(procs, rt.procs)
	}
	return procs
}

func TestGovernorFollowsTheLoad(t *testing.T) {
	const light, heavy load = 0.6, 1.2
	cases := []struct {
		name  string
		def   int
		loads []load
		want  []int
		calls string
	}{
		{"a light load goes to one P after Settle samples", 2,
			[]load{light, light, light, light, light}, []int{2, 2, 2, 1, 1}, "one"},
		{"a sample at or above Down starts the count again", 2,
			[]load{light, light, light, 0.75, light, light, light, light}, []int{2, 2, 2, 2, 2, 2, 2, 1}, "one"},
		{"a heavy load stays on every P", 2,
			[]load{heavy, heavy, heavy, heavy, heavy, heavy}, []int{2, 2, 2, 2, 2, 2}, ""},
		{"one busy sample at one P goes back to the default at once", 4,
			[]load{light, light, light, light, 0.86, heavy}, []int{4, 4, 4, 1, 4, 4}, "one,default"},
		{"at one P, a load up to Up stays", 2,
			[]load{light, light, light, light, 0.85, 0.8}, []int{2, 2, 2, 1, 1, 1}, "one"},
		{"after going back up, Settle light samples are needed again", 2,
			[]load{light, light, light, light, heavy, light, light, light, light}, []int{2, 2, 2, 1, 2, 2, 2, 2, 1}, "one,default,one"},
		{"a default of one P is left alone", 1,
			[]load{light, light, light, light, light}, []int{1, 1, 1, 1, 1}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := newFakeRuntime(c.def)
			g, err := newGovernor(config{}, rt, nil, quiet)
			if err != nil {
				t.Fatal(err)
			}
			got := feed(g, rt, c.loads)
			if !slices.Equal(got, c.want) {
				t.Errorf("GOMAXPROCS after each sample = %v, want %v", got, c.want)
			}
			if calls := strings.Join(rt.calls, ","); calls != c.calls {
				t.Errorf("calls = %q, want %q", calls, c.calls)
			}
		})
	}
}

func TestGovernorHoldsOneCPU(t *testing.T) {
	const light, heavy load = 0.6, 1.2
	both := map[int]float64{0: 0.3, 1: 0.5} // CPU 1 the idlest
	cases := []struct {
		name   string
		loads  []load
		idle   []map[int]float64
		pinErr error
		want   []int
		calls  string
	}{
		{"one P on the idlest CPU", []load{light, light, light, light, light},
			[]map[int]float64{both}, nil, []int{2, 2, 2, 1, 1}, "one,pin 1"},
		{"a tie goes to the lowest CPU", []load{light, light, light, light},
			[]map[int]float64{{0: 0.4, 1: 0.4, 3: 0.4}}, nil, []int{2, 2, 2, 1}, "one,pin 0"},
		{"the CPU held all but full: every CPU and the default at once",
			[]load{light, light, light, light, light, light},
			[]map[int]float64{both, both, both, both, {0: 0.9, 1: 0.05}}, nil, []int{2, 2, 2, 1, 2, 2}, "one,pin 1,unpin,default"},
		{"at MinIdle it stays",
			[]load{light, light, light, light, light},
			[]map[int]float64{both, both, both, both, {0: 0.9, 1: 0.1}}, nil, []int{2, 2, 2, 1, 1}, "one,pin 1"},
		{"another CPU idler by Move for Settle samples: the threads move there",
			[]load{light, light, light, light, light, light, light, light, light},
			[]map[int]float64{both, both, both, both, {0: 0.65, 1: 0.3}}, nil, []int{2, 2, 2, 1, 1, 1, 1, 1, 1}, "one,pin 1,pin 0"},
		{"idler by less than Move: the threads stay",
			[]load{light, light, light, light, light, light, light, light, light},
			[]map[int]float64{both, both, both, both, {0: 0.59, 1: 0.3}}, nil, []int{2, 2, 2, 1, 1, 1, 1, 1, 1}, "one,pin 1"},
		{"a sample without the idler CPU starts the count again",
			[]load{light, light, light, light, light, light, light, light, light, light},
			[]map[int]float64{both, both, both, both, {0: 0.65, 1: 0.3}, {0: 0.65, 1: 0.3}, {0: 0.65, 1: 0.3}, both, {0: 0.65, 1: 0.3}}, nil, []int{2, 2, 2, 1, 1, 1, 1, 1, 1, 1}, "one,pin 1"},
		{"a heavy load unpins before the default", []load{light, light, light, light, heavy},
			[]map[int]float64{both}, nil, []int{2, 2, 2, 1, 2}, "one,pin 1,unpin,default"},
		{"no idle figures: one P, no CPU held", []load{light, light, light, light, heavy},
			nil, nil, []int{2, 2, 2, 1, 2}, "one,default"},
		{"a refused pin: one P, the threads given every CPU back, and the idle share not watched",
			[]load{light, light, light, light, light, heavy},
			[]map[int]float64{both, both, both, both, {0: 0, 1: 0}}, errors.New("refused"), []int{2, 2, 2, 1, 1, 2}, "one,pin 1,unpin,default"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := newFakeRuntime(2)
			rt.pinErr = c.pinErr
			g, err := newGovernor(config{}, rt, nil, quiet)
			if err != nil {
				t.Fatal(err)
			}
			got := feedIdle(g, rt, c.loads, c.idle)
			if !slices.Equal(got, c.want) {
				t.Errorf("GOMAXPROCS after each sample = %v, want %v", got, c.want)
			}
			if calls := strings.Join(rt.calls, ","); calls != c.calls {
				t.Errorf("calls = %q, want %q", calls, c.calls)
			}
		})
	}
}

func TestGovernorIgnoresSamplesWithoutTime(t *testing.T) {
	rt := newFakeRuntime(2)
	g, err := newGovernor(config{Settle: 1}, rt, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	g.step(sample{Wall: time.Second})
	g.step(sample{Wall: time.Second})            // no time passed
	g.step(sample{Wall: 900 * time.Millisecond}) // the clock went back
	if rt.procs != 2 || len(rt.calls) != 0 {
		t.Fatalf("GOMAXPROCS %d, calls %v: samples without elapsed time decided something", rt.procs, rt.calls)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	err := config{Interval: -time.Second, Down: -1, Settle: -2, Up: -1.5, MinIdle: 1, Move: -0.5}.validate()
	if err == nil {
		t.Fatal("no error for an invalid configuration")
	}
	for _, want := range []string{"Interval -1s", "Down -1", "Settle -2", "Up -1.5 is negative", "Up -1.5 is not above Down -1", "MinIdle 1 is not in [0, 1)", "Move -0.5 is not in (0, 1]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if err := (config{}).validate(); err != nil {
		t.Errorf("the default configuration does not validate: %v", err)
	}
	if _, err := newGovernor(config{Up: 0.5, Down: 0.6}, newFakeRuntime(2), nil, quiet); err == nil {
		t.Error("New accepted an invalid configuration")
	}
	// Cancelled before the wait, so that a governor started by mistake
	// fails the test rather than hanging it.
	ctx, cancel := context.WithCancel(t.Context())
	wait, started := start(ctx, config{Up: 0.5, Down: 0.6}, func(string) string { return "" }, quiet)
	cancel()
	wait()
	if started {
		t.Error("start ran a governor with an invalid configuration")
	}
}

func TestFixedByTheEnvironment(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if fixed(getenv) {
		t.Error("fixed without GOMAXPROCS in the environment")
	}
	env["GOMAXPROCS"] = "2"
	if !fixed(getenv) {
		t.Error("not fixed with GOMAXPROCS=2")
	}
	ctx, cancel := context.WithCancel(t.Context())
	wait, started := Start(ctx, getenv, quiet)
	cancel()
	wait()
	if started {
		t.Error("Start started a governor although GOMAXPROCS is set")
	}
}

// lockedRuntime is a fakeRuntime safe to read while Run changes it.
type lockedRuntime struct {
	mu sync.Mutex
	fakeRuntime
}

func (r *lockedRuntime) Procs() int  { r.mu.Lock(); defer r.mu.Unlock(); return r.procs }
func (r *lockedRuntime) SetOne()     { r.mu.Lock(); defer r.mu.Unlock(); r.fakeRuntime.SetOne() }
func (r *lockedRuntime) SetDefault() { r.mu.Lock(); defer r.mu.Unlock(); r.fakeRuntime.SetDefault() }
func (r *lockedRuntime) Pin(cpu int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fakeRuntime.Pin(cpu)
}
func (r *lockedRuntime) Unpin() error { r.mu.Lock(); defer r.mu.Unlock(); return r.fakeRuntime.Unpin() }
func (r *lockedRuntime) Pinned() int  { r.mu.Lock(); defer r.mu.Unlock(); return r.pinned }

func TestRunRestoresTheDefaultWhenItEnds(t *testing.T) {
	rt := &lockedRuntime{fakeRuntime: *newFakeRuntime(2)}
	var wall atomic.Int64
	read := func() sample { // an idle process on an idle machine
		w := time.Duration(wall.Add(int64(10 * time.Millisecond)))
		return sample{Wall: w, Idle: map[int]time.Duration{0: w, 1: w}}
	}
	g, err := newGovernor(config{Interval: time.Millisecond, Settle: 2}, rt, read, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.run(ctx)
	}()
	poll.True(t, 30*time.Second, "one P on one CPU for an idle process", func() bool { return rt.Procs() == 1 && rt.Pinned() == 0 })
	cancel()
	<-done
	if rt.Procs() != 2 || rt.Pinned() != -1 {
		t.Fatalf("GOMAXPROCS %d, CPU held %d after Run ended, want the default 2 on every CPU", rt.Procs(), rt.Pinned())
	}
}

func TestReaderMeasuresThisProcess(t *testing.T) {
	start := time.Now()
	read := reader(func() time.Duration { return time.Since(start) }, nil)
	a := read()
	spin(50 * time.Millisecond)
	b := read()
	if b.Wall < a.Wall+50*time.Millisecond {
		t.Fatalf("wall time grew by %s over 50ms", b.Wall-a.Wall)
	}
	// The machine is shared: the work gets its CPU when it does.
	poll.True(t, 30*time.Second, "the process's CPU time to grow with the work", func() bool {
		spin(time.Millisecond)
		return read().CPU-a.CPU >= 50*time.Millisecond
	})
}

// TestStartFollowsThisProcess runs the governor of the test process: idle,
// it goes to one P; made busy on every core, it goes back to the default.
func TestStartFollowsThisProcess(t *testing.T) {
	// The governor moves between 1 and the runtime's default, which go
	// test's -cpu flag or GOMAXPROCS in the environment may have replaced.
	prior := runtime.GOMAXPROCS(0)
	runtime.SetDefaultGOMAXPROCS()
	t.Cleanup(func() { runtime.GOMAXPROCS(prior) })
	def := runtime.GOMAXPROCS(0)
	if def < 2 {
		t.Skip("one CPU: nothing to govern")
	}
	ctx, cancel := context.WithCancel(t.Context())
	// Thresholds well apart from an idle process and from one spinning
	// core, which other test binaries on the machine may slow down.
	cfg := config{Interval: 50 * time.Millisecond, Down: 0.2, Settle: 2, Up: 0.5}
	wait, started := start(ctx, cfg, func(string) string { return "" }, quiet)
	t.Cleanup(func() { cancel(); wait() })
	if !started {
		t.Fatal("Start did not start a governor")
	}
	if _, again := Start(ctx, func(string) string { return "" }, quiet); again {
		t.Fatal("a second governor started while one runs")
	}
	poll.True(t, 60*time.Second, "GOMAXPROCS 1 while the process is idle", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	if _, cpus := currentThreadCPUs(); len(cpus) >= 2 {
		poll.True(t, 60*time.Second, "every thread on one CPU at one P", func() bool { return onOneCPU(t) })
	}

	stop := make(chan struct{})
	var spinners sync.WaitGroup
	for range def {
		spinners.Add(1)
		go func() {
			defer spinners.Done()
			for {
				select {
				case <-stop:
					return
				default:
					spin(time.Millisecond)
				}
			}
		}()
	}
	// The default is counted from the CPUs the threads may run on: back at
	// def only once they have every CPU again.
	poll.True(t, 60*time.Second, "GOMAXPROCS back to the default under load", func() bool { return runtime.GOMAXPROCS(0) == def })
	close(stop)
	spinners.Wait()
	cancel()
	wait()
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("GOMAXPROCS %d after the governor ended, want the default %d", got, def)
	}
	// Once it has ended, the process may start another.
	ctx2, cancel2 := context.WithCancel(t.Context())
	wait2, again := start(ctx2, cfg, func(string) string { return "" }, quiet)
	cancel2()
	wait2()
	if !again {
		t.Fatal("no governor could start after the first one ended")
	}
}

// spin uses the CPU for d.
func spin(d time.Duration) {
	x := 0
	for start := time.Now(); time.Since(start) < d; {
		for i := range 1000 {
			x += i
		}
	}
	_ = x
}
