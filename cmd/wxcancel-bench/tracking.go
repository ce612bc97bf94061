package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/childproc"
	"github.com/wxcancel/wxcancel/schemas"
)

// TrackingRun is what the tracking run measured: one service instance
// tracking many resources, first with nothing due, then polling a backlog
// of due ones at the configured rate.
type TrackingRun struct {
	Name    string `json:"name"`
	Tracked int    `json:"tracked"` // resources tracked, none due during the idle window
	// SeedSeconds is how long bringing them in took (StartTracking, from
	// the load generator).
	SeedSeconds float64 `json:"seed_seconds"`
	// IdleCPUCores is the service's CPU ÷ wall time while nothing was due.
	IdleSeconds  float64 `json:"idle_seconds"`
	IdleCPUCores float64 `json:"idle_cpu_cores"`
	// The polling window: polls of a backlog of due resources, their rate
	// against WXCANCEL_TRACK_RATE, and the service's CPU per poll.
	ConfiguredRate float64 `json:"configured_rate"`
	PollSeconds    float64 `json:"poll_seconds"`
	Polls          int     `json:"polls"`
	PollRate       float64 `json:"poll_rate"`
	RateRatio      float64 `json:"rate_ratio"`
	CPUPerPollMS   float64 `json:"cpu_per_poll_ms"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	Error          string  `json:"error,omitempty"`
}

// trackSeeders is how many goroutines bring the resources in.
const trackSeeders = 64

// trackingSpec is the shape of the tracking run.
type trackingSpec struct {
	tracked    int           // resources tracked, none due
	rate       float64       // WXCANCEL_TRACK_RATE
	idle, poll time.Duration // the two windows measured
}

// runTracking runs the service with spec.tracked resources, none due for
// an hour, and measures it idle; then brings in a backlog of resources due
// at once and measures the polls of spec.rate per second.
func (b *bench) runTracking(ctx context.Context, spec trackingSpec) (res TrackingRun, err error) {
	tracked, rate := spec.tracked, spec.rate
	res = TrackingRun{Name: runTracking, Tracked: tracked, ConfiguredRate: rate}
	st, err := b.startStack(ctx, filepath.Join(b.tmp, runTracking), nil,
		[]string{"WXCANCEL_TRACK_INTERVAL=1h", "WXCANCEL_TRACK_RATE=" + strconv.FormatFloat(rate, 'f', -1, 64)}, func(string) {})
	if err != nil {
		return res, err
	}
	defer st.stop()
	svc, opsAddr := st.svc, st.opsAddr
	defer func() {
		if serr := svc.Stop(30 * time.Second); serr != nil && err == nil {
			err = fmt.Errorf("the service did not shut down cleanly: %w", serr)
		}
		if err != nil {
			err = fmt.Errorf("%w\n  service log %s:%s", err, st.svcLog, childproc.Tail(st.svcLog, 8))
			res.Error = err.Error()
		}
	}()
	nc, err := nats.Connect(st.natsURL, nats.Name("wxcancel-bench"))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	cfg := consumer.DefaultConfig()
	cfg.MchID, cfg.TrackInterval = benchMchID, time.Hour

	fmt.Fprintf(b.progress, "  %-14s bringing %d resources into tracking ...\n", runTracking, tracked)
	began := time.Now()
	if err := seedTracking(ctx, js, cfg, "T", tracked); err != nil {
		return res, err
	}
	res.SeedSeconds = time.Since(began).Seconds()
	if err := waitMetric(ctx, opsAddr, "wxcancel_tracked_resources", float64(tracked), time.Minute,
		fmt.Sprintf("the service did not see the %d resources tracked", tracked)); err != nil {
		return res, err
	}

	// Idle: every resource is due in an hour.
	cpu0, err := procCPU(svc.PID())
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, spec.idle); err != nil {
		return res, err
	}
	cpu1, err := procCPU(svc.PID())
	if err != nil {
		return res, err
	}
	res.IdleSeconds = time.Since(t0).Seconds()
	res.IdleCPUCores = (cpu1 - cpu0).Seconds() / res.IdleSeconds

	// Polling: a backlog of resources due at once, more than the window
	// can drain.
	backlog := int(rate*(spec.poll.Seconds()+5)) + 100
	due := cfg
	due.TrackInterval = consumer.MinTrackInterval
	fmt.Fprintf(b.progress, "  %-14s polling a backlog of %d at %g per second ...\n", runTracking, backlog, rate)
	if err := seedTracking(ctx, js, due, "D", backlog); err != nil {
		return res, err
	}
	if err := waitMetric(ctx, opsAddr, "wxcancel_track_polls_total", 1, 30*time.Second, "no poll"); err != nil {
		return res, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil { // past the first polls
		return res, err
	}
	p0, err := scrapeCounter(opsAddr, "wxcancel_track_polls_total")
	if err != nil {
		return res, err
	}
	cpu2, _ := procCPU(svc.PID())
	t2 := time.Now()
	if err := sleepCtx(ctx, spec.poll); err != nil {
		return res, err
	}
	p1, err := scrapeCounter(opsAddr, "wxcancel_track_polls_total")
	if err != nil {
		return res, err
	}
	cpu3, _ := procCPU(svc.PID())
	res.PollSeconds = time.Since(t2).Seconds()
	res.Polls = int(p1 - p0)
	res.PollRate = float64(res.Polls) / res.PollSeconds
	res.RateRatio = res.PollRate / rate
	if res.Polls > 0 {
		res.CPUPerPollMS = ms(cpu3-cpu2) / float64(res.Polls)
	}
	hwm, _ := procHWM(svc.PID())
	res.PeakRSSMB = float64(hwm) / (1 << 20)
	return res, nil
}

// seedTracking brings n resources cancel-withdraw/<tag><i> into tracking
// with cfg's interval.
func seedTracking(ctx context.Context, js jetstream.JetStream, cfg consumer.Config, tag string, n int) error {
	tr, err := consumer.OpenTracking(ctx, js, cfg)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, trackSeeders)
	for range trackSeeders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := tr.Start(ctx, schemas.ResourceCancelWithdraw, tag+strconv.Itoa(i), ""); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs, ctx.Err())
}

// waitMetric waits until the sum of metric's series on the service's
// /metrics reaches atLeast; what names what was awaited in the error.
func waitMetric(ctx context.Context, addr, metric string, atLeast float64, limit time.Duration, what string) error {
	deadline := time.Now().Add(limit)
	for {
		if v, err := scrapeCounter(addr, metric); err == nil && v >= atLeast {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s within %s", what, limit)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// scrapeCounter returns the sum of every series of metric on the service's
// /metrics.
func scrapeCounter(addr, metric string) (float64, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q", metric, line)
		}
		sum += v
	}
	return sum, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
