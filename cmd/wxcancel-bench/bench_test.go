package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/internal/childproc"
	"github.com/wxcancel/wxcancel/schemas"
)

// A test binary started by the benchmark's smoke test in a child mode runs
// that mode instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) != "" && isChild(os.Args[1:]) {
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestCommandsAreValidAndInTheMix(t *testing.T) {
	counts := map[string]int{}
	confirms := map[string]bool{}
	for i := range 1000 {
		c := makeCommand("peak", i, 7)
		counts[c.ctype]++
		if _, err := schemas.Parse(c.ctype, c.body); err != nil {
			t.Fatalf("command %d (%s) %s is invalid: %v", i, c.ctype, c.body, err)
		}
		if !schemas.ValidCommandID(c.id) {
			t.Fatalf("command id %q is not valid", c.id)
		}
		if got := commandIndex("peak", c.id); got != i {
			t.Fatalf("commandIndex(%q) = %d, want %d", c.id, got, i)
		}
		if c.ctype == "confirm-cancel" {
			var b struct {
				ApplymentID string `json:"applyment_id"`
			}
			_ = json.Unmarshal(c.body, &b)
			if confirms[b.ApplymentID] {
				t.Fatalf("two confirm-cancel commands target application %s", b.ApplymentID)
			}
			confirms[b.ApplymentID] = true
		}
	}
	want := map[string]int{"validate-cancel": 400, "query-cancel-withdraw": 300, "confirm-cancel": 200, "query-cancel-application": 100}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s: %d of 1000, want %d", k, counts[k], v)
		}
	}
	for _, id := range []string{"peak", "peak-", "peak-x", "other-3", "peak--1"} {
		if commandIndex("peak", id) != -1 {
			t.Errorf("commandIndex(%q) should be -1", id)
		}
	}
}

func TestCollector(t *testing.T) {
	c := newCollector("r", "wxpay", 3)
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		c.sent(i, t0)
	}
	ev := func(id string, attempts int, errCode string) []byte {
		data := map[string]any{"command_id": id, "attempts": attempts}
		if errCode != "" {
			data["error"] = map[string]any{"code": errCode}
		}
		b, _ := json.Marshal(map[string]any{"subject": id, "data": data})
		return b
	}
	c.event("wxpay.evt.validate-cancel.succeeded", ev("r-0", 1, ""), t0.Add(10*time.Millisecond))
	c.event("wxpay.evt.validate-cancel.succeeded", ev("r-0", 1, ""), t0.Add(20*time.Millisecond)) // republished
	c.event("wxpay.evt.status.merchant.19000001", []byte(`{}`), t0)
	c.event("wxpay.evt.confirm-cancel.failed", ev("r-2", 3, "SYSTEM_ERROR"), t0.Add(30*time.Millisecond))
	c.event("wxpay.evt.confirm-cancel.succeeded", ev("other-1", 1, ""), t0)
	c.event("wxpay.evt.confirm-cancel.succeeded", []byte(`not json`), t0)
	select {
	case <-c.done:
		t.Fatal("done before every command has an outcome")
	default:
	}
	s := c.summarize(0)
	if s.outcomes["succeeded"] != 1 || s.outcomes["failed:SYSTEM_ERROR"] != 1 || s.outcomes["missing"] != 1 {
		t.Errorf("outcomes = %v", s.outcomes)
	}
	if s.dups != 1 || s.status != 1 || s.foreign != 1 || s.bad != 1 || s.attempts != 4 || s.multiAttempt != 1 {
		t.Errorf("summary = %+v", s)
	}
	if len(s.latencies) != 1 || s.latencies[0] != 10*time.Millisecond {
		t.Errorf("latencies = %v", s.latencies)
	}
	c.event("wxpay.evt.query-cancel-withdraw.succeeded", ev("r-1", 1, ""), t0.Add(time.Second))
	select {
	case <-c.done:
	default:
		t.Fatal("not done once every command has an outcome")
	}
}

// TestCollectorAfterFirstSecond: the outcomes counted after a run's first
// second stop at the 95% point, as the 95% rate does.
func TestCollectorAfterFirstSecond(t *testing.T) {
	c := newCollector("r", "wxpay", 20)
	t0 := time.Unix(1000, 0)
	for i := range 20 {
		c.sent(i, t0)
		got := t0.Add(500 * time.Millisecond) // four in the first second
		if i >= 4 {
			got = t0.Add(time.Second + time.Duration(i)*100*time.Millisecond)
		}
		b, _ := json.Marshal(map[string]any{"subject": commandID("r", i), "data": map[string]any{"attempts": 1}})
		c.event("wxpay.evt.validate-cancel.succeeded", b, got)
	}
	s := c.summarize(0)
	if want := t0.Add(time.Second + 18*100*time.Millisecond); !s.last95.Equal(want) {
		t.Errorf("95%% point %v, want %v", s.last95.Sub(t0), want.Sub(t0))
	}
	if s.warm != 15 { // outcomes 4..18
		t.Errorf("%d outcomes after the first second up to the 95%% point, want 15", s.warm)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing should be 0")
	}
}

func TestProcParsers(t *testing.T) {
	stat := []byte("4242 (wx cancel) (x)) S 1 4242 4242 0 -1 4194560 5000 0 0 0 1234 567 0 0 20 0 12 0 100 0 0\n")
	if got, err := parseStatCPU(stat); err != nil || got != (1234+567)*clockTick {
		t.Errorf("parseStatCPU = %v, %v", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1")); err == nil {
		t.Error("a short stat line should be an error")
	}
	status := []byte("Name:\twxcancel\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n")
	if got, err := parseStatusKB(status, "VmHWM"); err != nil || got != 51200*1024 {
		t.Errorf("parseStatusKB = %v, %v", got, err)
	}
	if _, err := parseStatusKB(status, "VmSwap"); err == nil {
		t.Error("a missing key should be an error")
	}
	busy, total, err := parseMachineCPU([]byte("cpu  100 5 50 1000 20 3 7 11 0 0\ncpu0 1 2 3\n"))
	if err != nil || busy != (100+5+50+3+7+11)*clockTick || total != (100+5+50+1000+20+3+7+11)*clockTick {
		t.Errorf("parseMachineCPU = %v, %v, %v", busy, total, err)
	}
	// The benchmark's own process can be read.
	if cpu, err := procCPU(os.Getpid()); err != nil || cpu < 0 {
		t.Errorf("procCPU(self) = %v, %v", cpu, err)
	}
	if hwm, err := procHWM(os.Getpid()); err != nil || hwm <= 0 {
		t.Errorf("procHWM(self) = %v, %v", hwm, err)
	}
}

func sampleResults() *Results {
	r := &Results{Label: "test", Time: "2026-01-01T00:00:00Z", Host: Host{CPUs: 2, GoVersion: "go1.26"},
		Floor: Floor{Signer: "OpenSSL 3.0.19 27 Jan 2026 (libcrypto)", SignMS: 0.27, VerifyMS: 0.03, PerRequestMS: 0.30, CPUBoundRate: 6667},
		Best:  BestFloor{SignMS: 0.245, VerifyMS: 0.015, PerRequestMS: 0.26, Source: "the project's signer, OpenSSL's where faster", OpenSSL: "OpenSSL 3.0.19 27 Jan 2026"}}
	r.Runs = []Run{
		{Name: runPeak, Mode: "closed", Concurrency: 64, Commands: 1000, Rate: 1500, Rate95: 1500, CPUPerCommandMS: 0.5,
			FloorPerCommandMS: 0.30, Efficiency: 0.6, LimitRatio: 0.52, Attempts: 1000, PeakRSSMB: 40, AllOK: true, Outcomes: map[string]int{"succeeded": 1000}},
		{Name: runLat64, Mode: "closed", Concurrency: 64, LatencyMS: 100, Commands: 500, Rate: 600, Rate95: 605, RateWarm: 620, Bound: 640, BoundRatio: 600.0 / 640,
			CPUPerCommandMS: 0.95, Attempts: 500, AllOK: true, Outcomes: map[string]int{"succeeded": 500}},
		{Name: runLat256, Mode: "closed", Concurrency: 256, LatencyMS: 100, Commands: 500, Rate: 1300, Bound: 1500, BoundRatio: 1300.0 / 1500,
			Attempts: 500, PeakRSSMB: 160, AllOK: true, Outcomes: map[string]int{"succeeded": 500}},
		{Name: runOpen, Mode: "open", Concurrency: 256, LatencyMS: 100, Commands: 500, OfferedRate: 750, Rate: 749, P50OverheadMS: 2, P99OverheadMS: 4.5,
			Attempts: 500, AllOK: true, Outcomes: map[string]int{"succeeded": 500}},
		{Name: runFaults, Mode: "closed", Concurrency: 64, Faults: "system_error:rate=0.1", Commands: 1000, Rate: 1100, Rate95: 1300, Attempts: 1111,
			RetriedCommands: 100, AllOK: false, Outcomes: map[string]int{"succeeded": 999, "failed:SYSTEM_ERROR": 1}},
	}
	r.Tracking = &TrackingRun{Name: runTracking, Tracked: 100000, IdleSeconds: 10, IdleCPUCores: 0.02, ConfiguredRate: 200,
		Polls: 1990, PollSeconds: 10, PollRate: 199, RateRatio: 0.995, PeakRSSMB: 140}
	r.evaluate()
	return r
}

func TestEvaluate(t *testing.T) {
	r := sampleResults()
	met := map[string]bool{}
	for _, tg := range r.Targets {
		met[tg.Run+" "+strings.Fields(tg.Name)[0]] = tg.Met
	}
	want := map[string]bool{
		runPeak + " service":      true,  // 0.5 ms
		runPeak + " limit":        true,  // 0.52
		runLat64 + " service":     false, // 0.95 ms
		runLat64 + " commands/s":  true,
		runLat256 + " commands/s": false,
		runOpen + " p99":          true,
		runLat256 + " peak":       false, // 160 MB
		runFaults + " retries":    true,  // 1300 ≥ 0.8 × 1500 × 1000/1111
		"all every":               false, // one failed
		runTracking + " peak":     true,
		runTracking + " service":  false, // 0.02 cores idle
		runTracking + " polls":    true,
	}
	for k, v := range want {
		if got, ok := met[k]; !ok || got != v {
			t.Errorf("target %q: met = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if r.AllMet {
		t.Error("AllMet with targets missed")
	}
}

// TestEvaluateFaultsOnSlowerMachine: the system-error run is judged against
// the peak rate scaled by the floors priced during the two runs, as the
// latency runs' CPU bound is: a machine 25% slower during the faults run
// is not a stall.
func TestEvaluateFaultsOnSlowerMachine(t *testing.T) {
	r := sampleResults()
	r.run(runPeak).FloorPerRequestMS = 0.9
	f := r.run(runFaults)
	f.Rate95 = 1100 // < 0.9 × 1500 × 1000/1111
	for _, tc := range []struct {
		floor float64
		want  float64 // 1100 ÷ (1500 × 1000/1111 × 0.9/floor)
		met   bool
	}{{1.125, 1100 / (1500 * 1000.0 / 1111 * 0.9 / 1.125), true}, {0.9, 1100 / (1500 * 1000.0 / 1111), false}} {
		f.FloorPerRequestMS = tc.floor
		r.evaluate()
		found := 0
		for _, tg := range r.Targets {
			if tg.Run != runFaults {
				continue
			}
			found++
			if tg.Met != tc.met || math.Abs(tg.Got-tc.want) > 1e-9 {
				t.Errorf("faults run's floor %.3f ms: %.4f, met = %v; want %.4f, met = %v", tc.floor, tg.Got, tg.Met, tc.want, tc.met)
			}
		}
		if found != 1 {
			t.Errorf("faults run's floor %.3f ms: %d targets for the faults run, want 1", tc.floor, found)
		}
	}
}

func TestTableAndJSON(t *testing.T) {
	r := sampleResults()
	var buf bytes.Buffer
	r.printTable(&buf)
	out := buf.String()
	for _, want := range []string{"floor (OpenSSL 3.0.19 27 Jan 2026 (libcrypto)): RSA-2048 sign 0.270 ms + verify 0.030 ms",
		"best floor on this machine (the project's signer, OpenSSL's where faster; OpenSSL 3.0.19 27 Jan 2026): sign 0.245 ms + verify 0.015 ms = 0.260 ms", "open-half-peak @750/s", "[MISS]", "[MET ]",
		"failed:SYSTEM_ERROR=1", "succeeded=999 failed:SYSTEM_ERROR=1", "system-error [system_error:rate=0.1]",
		"(first 95% of outcomes at 605/s; after the first second 620/s, 0.969 of the bound)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	path := filepath.Join(t.TempDir(), "sub", "results.json")
	if err := r.writeJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Runs) != len(r.Runs) || back.Runs[3].P99OverheadMS != 4.5 || back.Floor.SignMS != 0.27 || back.Best.PerRequestMS != 0.26 || len(back.Targets) != len(r.Targets) {
		t.Errorf("JSON round trip lost data: %+v", back)
	}
}

func TestOptions(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseOptions(nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.commands != 20000 || o.concurrency != 64 || o.latency != 100*time.Millisecond || o.phases != allPhases {
		t.Errorf("defaults = %+v", o)
	}
	if _, err := parseOptions([]string{"-runs", "peak,nope"}, &stderr); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("an unknown run should be refused, got %v", err)
	}
	if _, err := parseOptions([]string{"-commands", "0"}, &stderr); err == nil {
		t.Error("-commands 0 should be refused")
	}
	for _, args := range [][]string{{"-child=nats"}, {"-child", "sim"}, {"--child=sim"}} {
		if !isChild(args) {
			t.Errorf("isChild(%q) = false", args)
		}
	}
	for _, args := range [][]string{nil, {"-commands", "3"}, {"-childish"}} {
		if isChild(args) {
			t.Errorf("isChild(%q) = true", args)
		}
	}
}

func TestFloorMeter(t *testing.T) {
	m, err := newFloorMeter()
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.measure(3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if f.SignMS <= 0 || f.VerifyMS <= 0 || f.PerRequestMS != f.SignMS+f.VerifyMS || f.CPUBoundRate <= 0 {
		t.Errorf("floor = %+v", f)
	}
}

// TestSmoke runs the benchmark's machinery end to end on a few dozen
// commands: the child processes, the service as its own process, the
// outcome collection and the accounting. It checks no timing.
// TestConfirmationAnswers: the simulator child presigns one answer per
// confirm-cancel of the run, each the one the simulator will give.
func TestConfirmationAnswers(t *testing.T) {
	got := confirmationAnswers(30, 4)
	if len(got) != 6 {
		t.Fatalf("%d answers for 30 commands of the mix, want 6 (20%%)", len(got))
	}
	seen := map[string]bool{}
	for i, a := range got {
		seen[string(a)] = true
		var b struct {
			ApplymentID string `json:"applyment_id"`
		}
		c := makeCommand("", 10*(i/2)+7+i%2, 4) // indices 7 and 8 of every ten are confirmations
		if err := json.Unmarshal(c.body, &b); err != nil || !strings.Contains(string(a), b.ApplymentID) {
			t.Errorf("answer %d %s is not about command %s", i, a, c.body)
		}
	}
	if len(seen) != len(got) {
		t.Error("two confirmations share an answer")
	}
}

func TestParseWaits(t *testing.T) {
	text := `# HELP wxcancel_jetstream_duration_seconds JetStream work a command waits for.
# TYPE wxcancel_jetstream_duration_seconds histogram
wxcancel_jetstream_duration_seconds_bucket{step="outcome_read",le="0.0005"} 3
wxcancel_jetstream_duration_seconds_bucket{step="outcome_read",le="0.001"} 3
wxcancel_jetstream_duration_seconds_bucket{step="outcome_read",le="0.0025"} 4
wxcancel_jetstream_duration_seconds_bucket{step="outcome_read",le="+Inf"} 4
wxcancel_jetstream_duration_seconds_sum{step="outcome_read"} 0.004
wxcancel_jetstream_duration_seconds_count{step="outcome_read"} 4
wxcancel_jetstream_duration_seconds_bucket{step="event_publish",le="0.0005"} 0
wxcancel_jetstream_duration_seconds_bucket{step="event_publish",le="+Inf"} 1
wxcancel_jetstream_duration_seconds_sum{step="event_publish"} 3
wxcancel_jetstream_duration_seconds_count{step="event_publish"} 1
wxcancel_jetstream_duration_seconds_sum{step="status"} 0
wxcancel_jetstream_duration_seconds_count{step="status"} 0
# TYPE wxcancel_wxpay_request_duration_seconds histogram
wxcancel_wxpay_request_duration_seconds_bucket{endpoint="validate-cancel",le="0.1"} 1
wxcancel_wxpay_request_duration_seconds_bucket{endpoint="validate-cancel",le="0.25"} 2
wxcancel_wxpay_request_duration_seconds_bucket{endpoint="validate-cancel",le="+Inf"} 2
wxcancel_wxpay_request_duration_seconds_sum{endpoint="validate-cancel"} 0.3
wxcancel_wxpay_request_duration_seconds_count{endpoint="validate-cancel"} 2
wxcancel_wxpay_request_duration_seconds_bucket{endpoint="confirm-cancel",le="0.1"} 0
wxcancel_wxpay_request_duration_seconds_bucket{endpoint="confirm-cancel",le="0.25"} 2
wxcancel_wxpay_request_duration_seconds_bucket{endpoint="confirm-cancel",le="+Inf"} 2
wxcancel_wxpay_request_duration_seconds_sum{endpoint="confirm-cancel"} 0.5
wxcancel_wxpay_request_duration_seconds_count{endpoint="confirm-cancel"} 2
# TYPE wxcancel_commands_in_flight gauge
wxcancel_commands_in_flight 3
`
	means, p99 := parseWaits(text)
	for _, tt := range []struct {
		name      string
		got, want map[string]float64
	}{
		{"means", means, map[string]float64{"outcome_read": 1, "event_publish": 3000, "wxpay_request": 200}},
		// The 4th of 4 reads is in the 2.5 ms bucket; the one publication
		// lies beyond the last finite bound; the requests' buckets add up
		// over the endpoints (1 of 4 by 100 ms, all by 250 ms).
		{"p99", p99, map[string]float64{"outcome_read": 2.5, "wxpay_request": 250}},
	} {
		if len(tt.got) != len(tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
			continue
		}
		for k, v := range tt.want {
			if d := tt.got[k] - v; d > 1e-9 || d < -1e-9 {
				t.Errorf("%s: %s = %v, want %v", tt.name, k, tt.got[k], v)
			}
		}
	}
	if means, p99 := parseWaits("wxcancel_commands_in_flight 3\n"); means != nil || p99 != nil {
		t.Error("waits found in a text without histograms")
	}
	if s := formatWaits(map[string]float64{"event_publish": 1, "zeta": 2, "outcome_read": 0.5}); s != "outcome_read 0.50, event_publish 1.00, zeta 2.00" {
		t.Errorf("formatWaits = %q", s)
	}
}

func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the service")
	}
	// The race runtime sleeps a second at exit by default: not here.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	tmp := t.TempDir()
	args := []string{"build", "-o", filepath.Join(tmp, "wxcancel")}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../wxcancel")...)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built the service in %s", time.Since(start).Round(time.Millisecond))
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	meter, err := newFloorMeter()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(childproc.StopAll)
	var progress bytes.Buffer
	b := &bench{self: self, serviceBin: filepath.Join(tmp, "wxcancel"), tmp: tmp, pool: 4, logLevel: "info",
		meter: meter, floorSigns: 5, progress: &progress, verbose: true,
		idle: Floor{PerRequestMS: 1}, best: BestFloor{PerRequestMS: 0.5}}
	ctx := t.Context()
	for _, spec := range []runSpec{
		{Name: runPeak, Commands: 40, Concurrency: 8},
		{Name: runOpen, Open: true, Rate: 40, Duration: 500 * time.Millisecond, Concurrency: 8, Latency: 20 * time.Millisecond},
		{Name: runFaults, Commands: 20, Concurrency: 4, Faults: "system_error@validate-cancel:times=2"},
	} {
		r, err := b.run(ctx, spec)
		if err != nil {
			t.Fatalf("%s: %v\n%s", spec.Name, err, progress.String())
		}
		if !r.AllOK || r.Outcomes["succeeded"] != r.Commands || r.Commands == 0 {
			t.Errorf("%s: outcomes %v of %d commands", spec.Name, r.Outcomes, r.Commands)
		}
		if r.CPUPerCommandMS <= 0 || r.Efficiency <= 0 || r.PeakRSSMB <= 0 || r.Rate <= 0 || r.FloorPerRequestMS <= 0 {
			t.Errorf("%s: incomplete figures %+v", spec.Name, r)
		}
		for _, step := range []string{"outcome_read", "wxpay_request", "status", "outcome_write", "event_publish"} {
			if r.WaitMS[step] <= 0 {
				t.Errorf("%s: no mean wait for %s in %v", spec.Name, step, r.WaitMS)
			}
			if r.WaitP99MS[step] <= 0 {
				t.Errorf("%s: no p99 bound for %s in %v", spec.Name, step, r.WaitP99MS)
			}
		}
		// Half the idle floor, scaled by the run's floor: 0.5 × floor ×
		// attempts per command ÷ CPU per command.
		if want := 0.5 * r.FloorPerRequestMS * float64(r.Attempts) / float64(r.Commands) / r.CPUPerCommandMS; math.Abs(r.LimitRatio-want) > 1e-9 {
			t.Errorf("%s: limit ratio %.4f, want %.4f", spec.Name, r.LimitRatio, want)
		}
		if spec.Faults != "" && r.Attempts != r.Commands+2 {
			t.Errorf("%s: %d attempts for %d commands and 2 faults", spec.Name, r.Attempts, r.Commands)
		}
	}
	tr, err := b.runTracking(ctx, trackingSpec{tracked: 2000, rate: 50, idle: time.Second, poll: 2 * time.Second})
	if err != nil {
		t.Fatalf("%s: %v\n%s", runTracking, err, progress.String())
	}
	if tr.Tracked != 2000 || tr.Polls == 0 || tr.PollRate <= 0 || tr.CPUPerPollMS <= 0 || tr.PeakRSSMB <= 0 || tr.IdleSeconds <= 0 {
		t.Errorf("%s: incomplete figures %+v", runTracking, tr)
	}
	if tr.PollRate > 50*1.05 {
		t.Errorf("%s: %.1f polls per second, above the 50 configured", runTracking, tr.PollRate)
	}
	t.Log(progress.String())
	// The runs stop what they started: nothing is left for StopAll.
	if n := childproc.Running(); n != 0 {
		t.Errorf("%d processes still running after the runs", n)
	}
	childproc.StopAll()
}
