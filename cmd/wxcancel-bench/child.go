package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/wxcancel/wxcancel/internal/childproc"
	"github.com/wxcancel/wxcancel/internal/embeddednats"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// benchChildEnv marks a process started by the benchmark in a child mode, so
// that a test binary re-executed as a child knows to run it.
const benchChildEnv = "WXCANCEL_BENCH_CHILD"

// simReady is what the sim child prints on stdout once it serves.
type simReady struct {
	BaseURL string            `json:"base_url"`
	Keys    wxpaysim.KeyFiles `json:"keys"`
}

// isChild reports whether args select a child mode.
func isChild(args []string) bool {
	return len(args) > 0 && (args[0] == "-child" || args[0] == "--child" ||
		len(args[0]) > 7 && (args[0][:7] == "-child=" || args[0][:8] == "--child="))
}

// runChild runs a hidden child mode: an embedded nats-server ("nats") or the
// WeChat Pay simulator over HTTP ("sim"). It prints one JSON line with its
// address on stdout, then serves until stdin closes (the benchmark ended or
// died) or SIGTERM.
func runChild(args []string) int {
	fs := flag.NewFlagSet("wxcancel-bench child", flag.ContinueOnError)
	mode := fs.String("child", "", "nats or sim")
	store := fs.String("store", "", "nats: JetStream store directory")
	dir := fs.String("dir", "", "sim: directory for the key files")
	latency := fs.Duration("latency", 0, "sim: delay of every answer")
	faults := fs.String("faults", "", "sim: faults to inject (wxpaysim.ParseFaults syntax)")
	cacheTTL := fs.Duration("signature-cache", time.Minute, "sim: reuse the signature of an identical answer for this long")
	presign := fs.Int("presign", 0, "sim: sign the confirmations of the first N commands of the mix before serving")
	pool := fs.Int("pool", 64, "sim: -pool of the run (see -presign)")
	every := fs.Duration("every", 500*time.Millisecond, "floor: interval between samples")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := childproc.ChildContext()
	defer stop()
	var err error
	switch *mode {
	case "nats":
		err = childNATS(ctx, *store)
	case "sim":
		err = childSim(ctx, *dir, *latency, *faults, *cacheTTL, confirmationAnswers(*presign, *pool))
	case "floor":
		err = childFloor(ctx, *every)
	default:
		err = fmt.Errorf("unknown child mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wxcancel-bench child:", err)
		return 1
	}
	return 0
}

func childNATS(ctx context.Context, store string) error {
	if store == "" {
		return errors.New("-store is required")
	}
	ns, err := embeddednats.Start("127.0.0.1", -1, store)
	if err != nil {
		return err
	}
	return childproc.ServeNATS(ctx, ns)
}

// confirmationAnswers returns the simulator's answers to the confirm-cancel
// commands among the first n commands of a run (every one targets an
// application of its own, so each answer is unique and would cost the
// simulator an RSA signature during the run).
func confirmationAnswers(n, pool int) [][]byte {
	var answers [][]byte
	for i := range n {
		c := makeCommand("", i, pool)
		if c.ctype != "confirm-cancel" {
			continue
		}
		var b struct {
			ApplymentID string `json:"applyment_id"`
			SubMchid    string `json:"sub_mchid"`
		}
		if json.Unmarshal(c.body, &b) == nil {
			answers = append(answers, wxpaysim.ConfirmationAnswer(b.ApplymentID, b.SubMchid))
		}
	}
	return answers
}

// childSim runs the simulator. It signs presign (answers that would each cost
// an RSA signature) before it reports ready, so that the simulator signs no
// answer during the run: its answers to queries and validations repeat and
// come from its signature cache.
func childSim(ctx context.Context, dir string, latency time.Duration, faultSpec string, cacheTTL time.Duration, presign [][]byte) error {
	if dir == "" {
		return errors.New("-dir is required")
	}
	faults, err := wxpaysim.ParseFaults(faultSpec)
	if err != nil {
		return err
	}
	sim, err := wxpaysim.New(wxpaysim.Options{AutoCreate: true, Latency: latency, SignatureCacheTTL: cacheTTL, RequestLog: 1})
	if err != nil {
		return err
	}
	if err := sim.SetFaults(faults...); err != nil {
		return err
	}
	m, err := wxpaysim.NewMerchant(benchMchID)
	if err != nil {
		return err
	}
	sim.RegisterMerchant(m)
	sim.Presign(presign...)
	keys, err := sim.WriteKeys(dir, m)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	if err := json.NewEncoder(os.Stdout).Encode(simReady{BaseURL: "http://" + ln.Addr().String(), Keys: keys}); err != nil {
		return err
	}
	<-ctx.Done()
	shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	return nil
}

// floorSample is one line the floor child prints.
type floorSample struct {
	SignMS   float64 `json:"sign_ms"`
	VerifyMS float64 `json:"verify_ms"`
}

// childFloor samples the floor while a run goes on: a few signs and
// verifies every interval (about 1% of a core), each sample one JSON line on
// stdout, the first as soon as it is ready. The machine is shared and its
// speed drifts; samples taken during the run, under the run's own load,
// price the floor as the service pays it.
func childFloor(ctx context.Context, every time.Duration) error {
	m, err := newFloorMeter()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for {
		f, err := m.measure(5, 1)
		if err != nil {
			return err
		}
		if err := enc.Encode(floorSample{SignMS: f.SignMS, VerifyMS: f.VerifyMS}); err != nil {
			return nil // the benchmark stopped reading
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}
