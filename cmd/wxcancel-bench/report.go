package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// Results is everything one benchmark run measured; it is printed as a table
// and written as JSON so that versions can be compared.
type Results struct {
	Label string `json:"label"`
	Time  string `json:"time"`
	Host  Host   `json:"host"`
	Floor Floor  `json:"floor"`
	// Best is the machine's best floor (the limit ratios' reference).
	Best BestFloor `json:"best_floor"`
	Runs []Run     `json:"runs"`
	// Tracking is the tracking run, when it was made.
	Tracking  *TrackingRun `json:"tracking,omitempty"`
	Targets   []Target     `json:"targets"`
	AllMet    bool         `json:"all_targets_met"`
	TotalSecs float64      `json:"total_seconds"`
}

// Host describes the machine.
type Host struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUModel  string `json:"cpu_model,omitempty"`
}

// Target is one goal of the issue and whether the runs met it.
type Target struct {
	Name string  `json:"name"`
	Run  string  `json:"run"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
	Note string  `json:"note,omitempty"`
}

// Run names.
const (
	runPeak     = "peak"
	runLat64    = "latency-c64"
	runLat256   = "latency-c256"
	runOpen     = "open-half-peak"
	runFaults   = "system-error"
	runPeak1P   = "peak-gomaxprocs1"
	runTracking = "tracking-100k"
	allPhases   = runPeak + "," + runLat64 + "," + runLat256 + "," + runOpen + "," + runFaults + "," + runPeak1P + "," + runTracking
	stallRatio  = 0.9
)

func (r *Results) run(name string) *Run {
	for i := range r.Runs {
		if r.Runs[i].Name == name {
			return &r.Runs[i]
		}
	}
	return nil
}

// evaluate fills in Targets and AllMet from the runs present.
func (r *Results) evaluate() {
	r.Targets = nil
	atLeast := func(name, run, want string, got, limit float64, note string) {
		r.Targets = append(r.Targets, Target{Name: name, Run: run, Want: want, Got: got, Met: got >= limit, Note: note})
	}
	atMost := func(name, run string, got, limit float64, note string) {
		r.Targets = append(r.Targets, Target{Name: name, Run: run, Want: fmt.Sprintf("≤ %.2f ms", limit), Got: got, Met: got > 0 && got <= limit, Note: note})
	}
	if p := r.run(runPeak); p != nil {
		atMost("service CPU per command", runPeak, p.CPUPerCommandMS, 0.55, fmt.Sprintf("signer %s, efficiency %.3f", r.Floor.Signer, p.Efficiency))
		atLeast("limit ratio = the machine's best floor ÷ service CPU per command", runPeak, "≥ 0.50", p.LimitRatio, 0.5,
			fmt.Sprintf("best floor %.3f ms per request", r.Best.PerRequestMS))
	}
	if p := r.run(runLat64); p != nil {
		atMost("service CPU per command", runLat64, p.CPUPerCommandMS, 0.9, fmt.Sprintf("limit ratio %.3f", p.LimitRatio))
	}
	for _, name := range []string{runLat64, runLat256} {
		if p := r.run(name); p != nil {
			atLeast("commands/s ÷ min(CPU bound, concurrency ÷ latency)", name, "≥ 0.90", p.BoundRatio, 0.90,
				fmt.Sprintf("bound %.0f/s", p.Bound))
		}
	}
	if p := r.run(runOpen); p != nil {
		r.Targets = append(r.Targets, Target{Name: "p99 overhead (publish → outcome, minus WeChat Pay time) at half of peak", Run: runOpen,
			Want: "≤ 5 ms", Got: p.P99OverheadMS, Met: p.AllOK && p.P99OverheadMS <= 5, Note: fmt.Sprintf("p50 %.2f ms", p.P50OverheadMS)})
	}
	if p := r.run(runLat256); p != nil {
		r.Targets = append(r.Targets, Target{Name: "peak RSS (VmHWM) at concurrency 256", Run: runLat256,
			Want: "≤ 150 MB", Got: p.PeakRSSMB, Met: p.PeakRSSMB > 0 && p.PeakRSSMB <= 150})
	}
	if f, p := r.run(runFaults), r.run(runPeak); f != nil && p != nil && f.Commands > 0 && f.Attempts > 0 && p.Rate95 > 0 {
		// CPU-bound, each extra attempt costs about one command's work:
		// the expected rate is the peak ÷ attempts per command. Both are
		// taken over the first 95% of the outcomes: the last retried
		// commands' backoffs would otherwise stretch the faults run. As
		// for the latency runs' CPU bound, the peak rate is scaled by the
		// floors priced during the two runs: the machine's speed drifts
		// between them.
		expected := p.Rate95 * float64(f.Commands) / float64(f.Attempts)
		note := fmt.Sprintf("%.2f attempts/command, %d commands retried", float64(f.Attempts)/float64(f.Commands), f.RetriedCommands)
		if p.FloorPerRequestMS > 0 && f.FloorPerRequestMS > 0 {
			expected *= p.FloorPerRequestMS / f.FloorPerRequestMS
			note += fmt.Sprintf(", floor %.3f ms against the peak run's %.3f", f.FloorPerRequestMS, p.FloorPerRequestMS)
		}
		atLeast("retries do not stall other commands: rate ÷ (peak ÷ attempts per command), first 95% of outcomes", runFaults,
			fmt.Sprintf("≥ %.2f", stallRatio), f.Rate95/expected, stallRatio, note)
	}
	if t := r.Tracking; t != nil {
		r.Targets = append(r.Targets,
			Target{Name: fmt.Sprintf("peak RSS (VmHWM) tracking %d resources", t.Tracked), Run: runTracking, Want: "≤ 200 MB",
				Got: t.PeakRSSMB, Met: t.Error == "" && t.PeakRSSMB > 0 && t.PeakRSSMB <= 200},
			Target{Name: "service CPU while nothing is due, in cores", Run: runTracking, Want: "≤ 0.01",
				Got: t.IdleCPUCores, Met: t.Error == "" && t.IdleSeconds > 0 && t.IdleCPUCores <= 0.01},
			Target{Name: "polls per second ÷ WXCANCEL_TRACK_RATE", Run: runTracking, Want: "0.95 to 1.05",
				Got: t.RateRatio, Met: t.RateRatio >= 0.95 && t.RateRatio <= 1.05,
				Note: fmt.Sprintf("%d polls in %.1fs at %g/s configured, %.3f ms of service CPU per poll", t.Polls, t.PollSeconds, t.ConfiguredRate, t.CPUPerPollMS)})
	}
	ok := 0
	for _, run := range r.Runs {
		if run.AllOK && run.Error == "" {
			ok++
		}
	}
	if len(r.Runs) > 0 || r.Tracking == nil {
		r.Targets = append(r.Targets, Target{Name: "every command of every run succeeded (exactly one outcome each)", Run: "all",
			Want: fmt.Sprintf("%d runs", len(r.Runs)), Got: float64(ok), Met: ok == len(r.Runs) && len(r.Runs) > 0})
	}
	r.AllMet = true
	for _, t := range r.Targets {
		r.AllMet = r.AllMet && t.Met
	}
}

// printTable writes the results as one table.
func (r *Results) printTable(w io.Writer) {
	fmt.Fprintf(w, "wxcancel-bench %s — %s, %d CPUs, %s\n", r.Label, r.Time, r.Host.CPUs, r.Host.GoVersion)
	f := r.Floor
	fmt.Fprintf(w, "floor (%s): RSA-2048 sign %.3f ms + verify %.3f ms = %.3f ms CPU per request per core (%d cores: %.0f commands/s)\n",
		f.Signer, f.SignMS, f.VerifyMS, f.PerRequestMS, r.Host.CPUs, f.CPUBoundRate)
	if b := r.Best; b.PerRequestMS > 0 {
		fmt.Fprintf(w, "best floor on this machine (%s", b.Source)
		if b.OpenSSL != "" {
			fmt.Fprintf(w, "; %s", b.OpenSSL)
		}
		fmt.Fprintf(w, "): sign %.3f ms + verify %.3f ms = %.3f ms; limit ratio = best floor ÷ service CPU per command\n", b.SignMS, b.VerifyMS, b.PerRequestMS)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tconc\tWxPay ms\tcommands\tcmd/s\tsvc CPU/cmd ms\tfloor/cmd ms\tefficiency\tlimit ratio\tbound/s\trate÷bound\tp50 ovh ms\tp99 ovh ms\tpeak RSS MB\tattempts/cmd\tnats|sim|gen CPU/cmd ms\tforeign cores\t")
	for _, run := range r.Runs {
		name := run.Name
		if run.Mode == "open" {
			name += fmt.Sprintf(" @%.0f/s", run.OfferedRate)
		}
		if run.Faults != "" {
			name += " [" + run.Faults + "]"
		}
		if run.Env != "" {
			name += " [" + run.Env + "]"
		}
		bound, ratio := "-", "-"
		if run.Bound > 0 {
			bound, ratio = fmt.Sprintf("%.0f", run.Bound), fmt.Sprintf("%.3f", run.BoundRatio)
		}
		p50, p99 := "-", "-"
		if run.Mode == "open" {
			p50, p99 = fmt.Sprintf("%.2f", run.P50OverheadMS), fmt.Sprintf("%.2f", run.P99OverheadMS)
		}
		att := 0.0
		if run.Commands > 0 {
			att = float64(run.Attempts) / float64(run.Commands)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%.1f\t%.3f\t%.2f|%.2f|%.2f\t%.2f\t\n",
			name, run.Concurrency, run.LatencyMS, run.Commands, run.Rate, run.CPUPerCommandMS, run.FloorPerCommandMS,
			run.Efficiency, run.LimitRatio, bound, ratio, p50, p99, run.PeakRSSMB, att,
			run.NATSCPUPerCommandMS, run.SimCPUPerCommandMS, run.LoadgenCPUPerCommandMS, run.ForeignCores)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, run := range r.Runs {
		fmt.Fprintf(w, "outcomes %-14s %s", run.Name+":", formatOutcomes(run.Outcomes))
		if run.StatusEvents > 0 || run.DuplicateEvent > 0 {
			fmt.Fprintf(w, "  (status events %d, duplicate outcome events %d)", run.StatusEvents, run.DuplicateEvent)
		}
		if run.RetriedCommands > 0 {
			fmt.Fprintf(w, "  (retried commands %d)", run.RetriedCommands)
		}
		if run.Mode == "closed" && run.Rate95 > 0 {
			fmt.Fprintf(w, "  (first 95%% of outcomes at %.0f/s", run.Rate95)
			if run.RateWarm > 0 {
				fmt.Fprintf(w, "; after the first second %.0f/s", run.RateWarm)
				if run.Bound > 0 {
					fmt.Fprintf(w, ", %.3f of the bound", run.RateWarm/run.Bound)
				}
			}
			fmt.Fprint(w, ")")
		}
		if run.Error != "" {
			fmt.Fprintf(w, "\n  ERROR: %s", strings.ReplaceAll(run.Error, "\n", "\n  "))
		}
		fmt.Fprintln(w)
		if len(run.WaitMS) > 0 {
			fmt.Fprintf(w, "  mean waits (ms): %s\n", formatWaits(run.WaitMS))
		}
		if len(run.WaitP99MS) > 0 {
			fmt.Fprintf(w, "  p99 waits at most (ms): %s\n", formatWaits(run.WaitP99MS))
		}
	}
	if t := r.Tracking; t != nil {
		fmt.Fprintf(w, "tracking %d resources: brought in in %.1fs; idle %.4f cores over %.0fs; %d polls in %.1fs = %.1f/s (configured %g/s, ratio %.3f), %.3f ms service CPU per poll; peak RSS %.1f MB\n",
			t.Tracked, t.SeedSeconds, t.IdleCPUCores, t.IdleSeconds, t.Polls, t.PollSeconds, t.PollRate, t.ConfiguredRate, t.RateRatio, t.CPUPerPollMS, t.PeakRSSMB)
		if t.Error != "" {
			fmt.Fprintf(w, "  ERROR: %s\n", strings.ReplaceAll(t.Error, "\n", "\n  "))
		}
	}
	fmt.Fprintln(w, "\ntargets:")
	for _, t := range r.Targets {
		mark := "MET "
		if !t.Met {
			mark = "MISS"
		}
		note := ""
		if t.Note != "" {
			note = " (" + t.Note + ")"
		}
		fmt.Fprintf(w, "  [%s] %-14s %s %s: %s%s\n", mark, t.Run, t.Name, t.Want, formatGot(t), note)
	}
}

func formatGot(t Target) string {
	switch {
	case strings.HasSuffix(t.Want, "MB"):
		return fmt.Sprintf("%.1f MB", t.Got)
	case strings.HasSuffix(t.Want, "ms"):
		return fmt.Sprintf("%.2f ms", t.Got)
	case strings.HasSuffix(t.Want, "runs"):
		return fmt.Sprintf("%.0f runs", t.Got)
	}
	return fmt.Sprintf("%.3f", t.Got)
}

// formatOutcomes lists outcome counts, succeeded first, then by name.
func formatOutcomes(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(keys, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == "succeeded":
			return -1
		case b == "succeeded":
			return 1
		}
		return 0
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// writeJSON writes the results to path, creating its directory.
func (r *Results) writeJSON(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// waitOrder is the order of the steps of a command in formatWaits.
var waitOrder = []string{"outcome_read", "wxpay_request", "outcome_write", "status", "event_publish"}

// formatWaits lists a run's mean waits, the steps of a command in order,
// then any other.
func formatWaits(waits map[string]float64) string {
	keys := slices.Sorted(maps.Keys(waits))
	slices.SortStableFunc(keys, func(a, b string) int {
		ia, ib := slices.Index(waitOrder, a), slices.Index(waitOrder, b)
		if ia < 0 {
			ia = len(waitOrder)
		}
		if ib < 0 {
			ib = len(waitOrder)
		}
		return ia - ib
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.2f", k, waits[k])
	}
	return strings.Join(parts, ", ")
}
