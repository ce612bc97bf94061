package maxprocs

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/internal/poll"
)

// fakeRuntime records what the governor asks of GOMAXPROCS.
type fakeRuntime struct {
	def, procs int
	calls      []string
}

func (r *fakeRuntime) Procs() int { return r.procs }
func (r *fakeRuntime) SetOne()    { r.procs = 1; r.calls = append(r.calls, "one") }
func (r *fakeRuntime) SetDefault() {
	r.procs = r.def
	r.calls = append(r.calls, "default")
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// load is one sampling interval of 250ms: the process's CPU in cores.
type load float64

// feed runs g over the loads, each one interval long, starting from a
// baseline sample, and returns GOMAXPROCS after each.
func feed(g *governor, rt *fakeRuntime, loads []load) []int {
	const interval = 250 * time.Millisecond
	var s sample
	g.step(s)
	var procs []int
	for _, l := range loads {
		s.Wall += interval
		s.CPU += time.Duration(float64(l) * float64(interval))
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
			rt := &fakeRuntime{def: c.def, procs: c.def}
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

func TestGovernorIgnoresSamplesWithoutTime(t *testing.T) {
	rt := &fakeRuntime{def: 2, procs: 2}
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
	err := config{Interval: -time.Second, Down: -1, Settle: -2, Up: -1.5}.validate()
	if err == nil {
		t.Fatal("no error for an invalid configuration")
	}
	for _, want := range []string{"Interval -1s", "Down -1", "Settle -2", "Up -1.5 is negative", "Up -1.5 is not above Down -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if err := (config{}).validate(); err != nil {
		t.Errorf("the default configuration does not validate: %v", err)
	}
	if _, err := newGovernor(config{Up: 0.5, Down: 0.6}, &fakeRuntime{}, nil, quiet); err == nil {
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

func (r *lockedRuntime) Procs() int { r.mu.Lock(); defer r.mu.Unlock(); return r.procs }
func (r *lockedRuntime) SetOne()    { r.mu.Lock(); defer r.mu.Unlock(); r.fakeRuntime.SetOne() }
func (r *lockedRuntime) SetDefault() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fakeRuntime.SetDefault()
}

func TestRunRestoresTheDefaultWhenItEnds(t *testing.T) {
	rt := &lockedRuntime{fakeRuntime: fakeRuntime{def: 2, procs: 2}}
	var wall atomic.Int64
	read := func() sample { // an idle process: time passes, nothing is used
		w := time.Duration(wall.Add(int64(10 * time.Millisecond)))
		return sample{Wall: w}
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
	poll.True(t, 30*time.Second, "one P for an idle process", func() bool { return rt.Procs() == 1 })
	cancel()
	<-done
	if rt.Procs() != 2 {
		t.Fatalf("GOMAXPROCS %d after Run ended, want the default 2", rt.Procs())
	}
}

func TestReaderMeasuresThisProcess(t *testing.T) {
	start := time.Now()
	read := reader(func() time.Duration { return time.Since(start) })
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
