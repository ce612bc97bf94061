package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/childproc"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

const (
	prefix = "wxpay"
	mchID  = "1900000001"
	// step is how long the simulator's applications stay in a state.
	step = time.Second
)

// run makes one chaos run and returns its counts and the first problems
// found (for the table).
func run(ctx context.Context, o options, progress io.Writer) (c counts, problems []string, err error) {
	began := time.Now()
	defer func() { c.Wall = time.Since(began) }()
	tmp, err := os.MkdirTemp("", "wxcancel-chaos-")
	if err != nil {
		return c, nil, err
	}
	defer func() {
		childproc.StopAll()
		switch {
		case o.keep:
			fmt.Fprintln(progress, "kept", tmp)
		case err != nil || !c.ok():
			fmt.Fprintln(progress, "kept for a look at what went wrong (stores, logs):", tmp)
		default:
			_ = os.RemoveAll(tmp)
		}
	}()
	if o.serviceBin == "" {
		fmt.Fprintln(progress, "building ./cmd/wxcancel ...")
		if o.serviceBin, err = childproc.BuildService(ctx, tmp, wxpay.OpenSSLSigner); err != nil {
			return c, nil, err
		}
	}
	sec := newSecrets()

	// The simulator, in this process: what took effect is its model's.
	sim, simURL, keys, stopSim, err := startSim(o, tmp, sec)
	if err != nil {
		return c, nil, err
	}
	defer stopSim()

	cl, err := startCluster(ctx, o, tmp, simURL, keys)
	if err != nil {
		return c, nil, err
	}
	defer cl.nc.Close()
	fmt.Fprintf(progress, "%d instances ready; nats-server on %s\n", o.instances, cl.natsURL)

	// The load, while instances and nats-server are killed.
	l := newLoad(sim, o.seed, sec)
	loadCtx, stopLoad := context.WithCancel(ctx)
	var loadErr error
	var loaded sync.WaitGroup
	loaded.Go(func() { loadErr = generate(loadCtx, cl.js, l, o.rate) })
	err = cl.havoc(ctx, o, &c, func() {
		fmt.Fprintf(progress, "  %d kills, %d NATS restarts, %d commands sent\n", c.Kills, c.NATSRestarts, l.distinct())
	})
	stopLoad()
	loaded.Wait()
	if err != nil {
		return c, nil, err
	}
	if loadErr != nil && ctx.Err() == nil {
		return c, nil, loadErr
	}

	c.Commands, c.Resent = len(l.byID), len(l.all)-len(l.byID) // a re-sent id is in all again, not in byID
	fmt.Fprintf(progress, "waiting for the outcomes of %d commands ...\n", c.Commands)
	topo := consumer.NewTopology(consumer.DefaultConfig())
	ids := make([]string, 0, len(l.byID))
	for id := range l.byID {
		ids = append(ids, id)
	}
	st, err := waitOutcomes(ctx, cl.js, topo.Events.Name, ids, 3*time.Minute)
	if err != nil {
		return c, nil, err
	}
	fmt.Fprintln(progress, "waiting for tracking to drain ...")
	tracked := waitTracking(ctx, cl.js, topo, 2*o.revokeAfter+2*time.Minute)
	if st, err = readEvents(ctx, cl.js, topo.Events.Name); err != nil {
		return c, nil, err
	}
	problems = check(&c, l, st, sim, tracked)

	// The hostile phase: no request may follow.
	fmt.Fprintln(progress, "hostile inputs ...")
	hp, err := hostile(ctx, cl.js, sim, o.seed, &c)
	if err != nil {
		return c, problems, err
	}
	problems = append(problems, hp...)

	problems = append(problems, cl.stopInstances()...)
	found, err := sec.scan(append(cl.logs, filepath.Join(cl.tmp, "nats.log")))
	if err != nil {
		return c, problems, err
	}
	c.SecretLines = len(found)
	for _, f := range found[:min(len(found), 5)] {
		problems = append(problems, "secret in a log: "+abbreviate(f, 200))
	}
	return c, problems, nil
}

// cluster is a run's nats-server and service instances, each a child
// process (stopped by childproc.StopAll), and the run's own connection.
type cluster struct {
	ctx        context.Context
	tmp        string // the run's directory: stores and logs
	self       string // this executable, which runs nats-server as a child
	port       int    // nats-server's, kept across its restarts
	natsURL    string
	ns         *childproc.Proc
	serviceBin string
	env        []string // the instances'
	instances  []*childproc.Proc
	logs       []string // the instances' log files
	nc         *nats.Conn
	js         jetstream.JetStream
}

// startCluster starts nats-server and o.instances instances of the
// service talking to the simulator at simURL. The first instance
// provisions; then the commands stream forgets ids after a second, so
// that an id sent again reaches the service and is answered from its
// record, and the instances, started again and again, only look their
// objects up (provisioning would restore the window).
func startCluster(ctx context.Context, o options, tmp, simURL string, keys wxpaysim.KeyFiles) (*cluster, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cl := &cluster{ctx: ctx, tmp: tmp, self: self, port: port, natsURL: "nats://127.0.0.1:" + strconv.Itoa(port),
		serviceBin: o.serviceBin, instances: make([]*childproc.Proc, o.instances)}
	if err := cl.startNATS(); err != nil {
		return nil, err
	}
	cl.env = childproc.Env(keys.Env()...)
	cl.env = append(cl.env, "NATS_URL="+cl.natsURL, "WXPAY_BASE_URL="+simURL, "WXPAY_BACKUP_BASE_URL=-",
		"WXCANCEL_CONCURRENCY=16", "WXPAY_RETRY_INITIAL_INTERVAL=20ms", "WXPAY_RETRY_MAX_INTERVAL=200ms", "WXPAY_RETRY_MAX_ELAPSED=1s",
		"WXCANCEL_MAX_DELIVER=8", "WXCANCEL_REDELIVERY_DELAY=100ms", "WXCANCEL_ACK_WAIT=3s", "WXCANCEL_SHUTDOWN_TIMEOUT=3s",
		"WXCANCEL_TRACK_INTERVAL=500ms", "WXCANCEL_TRACK_MAX_INTERVAL=2s", "WXCANCEL_TRACK_RATE=100", "WXCANCEL_LOG_LEVEL=debug")
	for i := range cl.instances {
		cl.logs = append(cl.logs, filepath.Join(tmp, "serve-"+strconv.Itoa(i)+".log"))
	}
	if err := cl.startInstance(0); err != nil {
		return nil, err
	}
	if cl.nc, err = nats.Connect(cl.natsURL, nats.Name("wxcancel-chaos"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond)); err != nil {
		return nil, err
	}
	if cl.js, err = jetstream.New(cl.nc); err == nil {
		err = forgetSooner(ctx, cl.js)
	}
	if err != nil {
		cl.nc.Close()
		return nil, err
	}
	cl.env = append(cl.env, "WXCANCEL_PROVISION=false")
	for i := 1; i < len(cl.instances); i++ {
		if err := cl.startInstance(i); err != nil {
			cl.nc.Close()
			return nil, err
		}
	}
	return cl, nil
}

// startNATS starts nats-server on the cluster's port and store.
func (cl *cluster) startNATS() (err error) {
	cl.ns, _, err = childproc.Start(cl.ctx, "nats-server", cl.self,
		[]string{"-child=nats", "-store", filepath.Join(cl.tmp, "nats"), "-port", strconv.Itoa(cl.port)},
		childproc.Env(), filepath.Join(cl.tmp, "nats.log"), true, 30*time.Second)
	return err
}

// startInstance starts instance i and waits until it is ready.
func (cl *cluster) startInstance(i int) error {
	ops, err := childproc.FreeAddr()
	if err != nil {
		return err
	}
	p, _, err := childproc.Start(cl.ctx, "serve "+strconv.Itoa(i), cl.serviceBin, []string{"serve"},
		append(cl.env, "WXCANCEL_HTTP_ADDR="+ops), cl.logs[i], false, 0)
	if err != nil {
		return err
	}
	cl.instances[i] = p
	return p.AwaitOK(cl.ctx, "http://"+ops+"/readyz", 60*time.Second)
}

// havoc kills o.kills instances at random, 0.5 to 2 s apart, restarting
// each at once, and nats-server o.natsRestarts times among them, counting
// them in c; report is called every ten kills. Without kills it waits 5 s,
// for a load of some length.
func (cl *cluster) havoc(ctx context.Context, o options, c *counts, report func()) error {
	rng := mrand.New(mrand.NewPCG(o.seed, 1))
	every := max(o.kills/(o.natsRestarts+1), 1)
	for k := range o.kills {
		pause := 500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
		if sleep(ctx, pause) != nil {
			return nil
		}
		i := rng.IntN(len(cl.instances))
		cl.instances[i].Kill()
		c.Kills++
		if err := cl.startInstance(i); err != nil {
			return fmt.Errorf("restarting instance %d: %w", i, err)
		}
		if (k+1)%every == 0 && c.NATSRestarts < o.natsRestarts {
			cl.ns.Kill()
			c.NATSRestarts++
			_ = sleep(ctx, 500*time.Millisecond)
			if err := cl.startNATS(); err != nil {
				return fmt.Errorf("restarting nats-server: %w", err)
			}
		}
		if k%10 == 9 {
			report()
		}
	}
	if o.kills == 0 {
		_ = sleep(ctx, 5*time.Second)
	}
	return nil
}

// stopInstances stops every instance gracefully and returns a problem for
// each that did not stop cleanly.
func (cl *cluster) stopInstances() []string {
	var problems []string
	for i, p := range cl.instances {
		if err := p.Stop(15 * time.Second); err != nil {
			problems = append(problems, fmt.Sprintf("instance %d did not stop cleanly: %v", i, err))
		}
	}
	return problems
}

// resendWindow is the commands stream's duplicate window in a chaos run.
const resendWindow = time.Second

// forgetSooner shortens the commands stream's duplicate window.
func forgetSooner(ctx context.Context, js jetstream.JetStream) error {
	name := consumer.NewTopology(consumer.DefaultConfig()).Commands.Name
	s, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	cfg.Duplicates = resendWindow
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// generate publishes the mix at rate until ctx ends.
func generate(ctx context.Context, js jetstream.JetStream, l *load, rate float64) error {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cmd := l.next(i)
		h := nats.Header{}
		h.Set(jetstream.MsgIDHeader, cmd.id)
		// Published until JetStream has it (for two minutes at most): the
		// command must reach the service.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		_, err := publish(pctx, js, prefix+".cmd."+cmd.typ, h, cmd.body)
		cancel()
		if err != nil {
			return err
		}
	}
}

// hostile sends the hostile inputs and checks that each has exactly one
// rejected outcome and that WeChat Pay saw no request meanwhile.
func hostile(ctx context.Context, js jetstream.JetStream, sim *wxpaysim.Server, seed uint64, c *counts) ([]string, error) {
	before := sim.Total()
	inputs := hostileInputs(seed)
	want := map[string]string{} // outcome subject → the input's name
	for _, h := range inputs {
		seq, err := publish(ctx, js, prefix+".cmd."+h.typ, h.header(), h.body)
		if err != nil {
			return nil, err
		}
		subject := h.id
		if !schemas.ValidCommandID(h.id) {
			subject = "seq-" + strconv.FormatUint(seq, 10)
		}
		want[subject] = h.name
	}
	c.Hostile = len(inputs)
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	st, err := waitOutcomes(ctx, js, consumer.NewTopology(consumer.DefaultConfig()).Events.Name, ids, time.Minute)
	if err != nil {
		return nil, err
	}
	var problems []string
	for id, name := range want {
		evs := st.outcomes[id]
		if len(evs) != 1 || evs[0].Outcome() != schemas.Rejected {
			c.HostileMisanswered++
			problems = append(problems, fmt.Sprintf("hostile input %s (%s): %d outcomes, the first %v", name, id, len(evs), outcomeOf(evs)))
		}
	}
	c.HostileRequests = sim.Total() - before
	return problems, nil
}

func outcomeOf(evs []publisher.Event) string {
	if len(evs) == 0 {
		return "none"
	}
	return string(evs[0].Outcome())
}

// waitTracking waits, at most limit, until nothing is tracked, and returns
// what still is.
func waitTracking(ctx context.Context, js jetstream.JetStream, topo consumer.Topology, limit time.Duration) map[string]bool {
	deadline := time.Now().Add(limit)
	for {
		tracked, err := consumer.TrackedResources(ctx, js, topo)
		if err == nil && len(tracked) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			out := map[string]bool{}
			for _, t := range tracked {
				out[string(t.Resource)+"/"+t.Key] = true
			}
			return out
		}
		_ = sleep(ctx, time.Second)
	}
}

// faultSpec is the simulator's faults in a chaos run: random latency,
// SYSTEM_ERROR, unsigned gateway errors, requests held and dropped
// unanswered, and for the three POSTs requests that take effect and lose
// their answer, or get it late.
const faultSpec = "latency:delay=30ms,rate=0.3;latency:delay=250ms,rate=0.03;system_error:rate=0.05;gateway:rate=0.02;" +
	"hang:delay=1500ms,rate=0.01;" +
	"drop_after@confirm-cancel:rate=0.15;drop_after@apply-cancel-withdraw:rate=0.15;drop_after@cancel-applyment:rate=0.15;" +
	"slow_after@confirm-cancel:delay=1s,rate=0.05;slow_after@apply-cancel-withdraw:delay=1s,rate=0.05;slow_after@cancel-applyment:delay=1s,rate=0.05"

// startSim serves the simulator on loopback: random latency, a share of
// SYSTEM_ERROR answers, and for the POSTs a share that take effect and
// lose their answer. It records every Authorization signature it receives
// among the secrets, and writes the keys a serve needs.
func startSim(o options, dir string, sec *secrets) (*wxpaysim.Server, string, wxpaysim.KeyFiles, func(), error) {
	wk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	sim, err := wxpaysim.New(wxpaysim.Options{Key: wk, AutoCreate: true, Step: step, RevokeAfter: o.revokeAfter, RequestLog: 1 << 20, Seed: o.seed})
	if err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	faults, err := wxpaysim.ParseFaults(faultSpec)
	if err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	if err := sim.SetFaults(faults...); err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	m, err := wxpaysim.NewMerchant(mchID)
	if err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	sim.RegisterMerchant(m)
	keys, err := sim.WriteKeys(filepath.Join(dir, "keys"), m)
	if err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	pem, err := os.ReadFile(keys.PrivateKeyFile)
	if err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	sec.addKey(pem)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", wxpaysim.KeyFiles{}, nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			if _, sig, ok := strings.Cut(a, `signature="`); ok {
				sec.addPieces(strings.TrimSuffix(sig, `"`), pieceLen)
			}
		}
		sim.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	return sim, "http://" + ln.Addr().String(), keys, func() { _ = srv.Close() }, nil
}

func freePort() (int, error) {
	a, err := childproc.FreeAddr()
	if err != nil {
		return 0, err
	}
	_, p, _ := net.SplitHostPort(a)
	return strconv.Atoi(p)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
