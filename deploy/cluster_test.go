package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/natsconn"
	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/internal/settings"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// natsCluster is three embedded nats-servers configured from
// deploy/compose/nats-server.conf (which includes deploy/nats/accounts.conf),
// on loopback and random ports.
type natsCluster struct {
	servers []*server.Server
	urls    []string
}

func startCluster(t *testing.T) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	var routes []string
	for i := range 3 {
		name := fmt.Sprintf("nats-%d", i+1)
		t.Setenv("NATS_SERVER_NAME", name)
		opts, err := server.ProcessConfigFile(composeNATSConf)
		if err != nil {
			t.Fatalf("%s: %v", composeNATSConf, err)
		}
		// Only what ties the configuration to Compose's network changes:
		// addresses, ports, routes and the store.
		opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
		opts.HTTPHost, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", server.RANDOM_PORT
		if i == 0 {
			// A clustered JetStream server needs a route at start, and the
			// first node has no other to name yet: it names itself (a
			// server ignores the route to itself), on a port taken from
			// the system just before.
			opts.Cluster.Port = freePort(t)
			routes = []string{fmt.Sprintf("nats://127.0.0.1:%d", opts.Cluster.Port)}
		}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		opts.StoreDir = t.TempDir()
		opts.NoLog, opts.NoSigs = true, true
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("%s did not start", name)
		}
		c.servers = append(c.servers, s)
		c.urls = append(c.urls, s.ClientURL())
		if i > 0 {
			routes = append(routes, "nats://"+s.ClusterAddr().String())
		}
	}
	waitFor(t, 60*time.Second, "the JetStream cluster to form", func() error {
		for _, s := range c.servers {
			if s.NumRoutes() < 2 {
				return fmt.Errorf("%s has %d routes", s.Name(), s.NumRoutes())
			}
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s is not current", s.Name())
			}
		}
		return nil
	})
	return c
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (c *natsCluster) server(name string) *server.Server {
	for _, s := range c.servers {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// waitFor polls cond until it returns nil; the deadline is generous: the
// test runs on small shared machines, and what is asserted is the outcome,
// never how fast it came.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

// client is a connection as one of the users of accounts.conf, with the
// asynchronous errors the server sent it (permissions violations).
type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connectAs(t *testing.T, urls []string, seedFile, name string) *client {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{errs: make(chan error, 256)}
	c.nc, err = nats.Connect(strings.Join(urls, ","), opt, nats.Name(name),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connecting as %s: %v", name, err)
	}
	t.Cleanup(c.nc.Close)
	c.js, err = jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refused runs op and expects the server to refuse subject with a
// permissions violation.
func (c *client) refused(t *testing.T, what, subject string, op func(ctx context.Context) error) {
	t.Helper()
	for len(c.errs) > 0 {
		<-c.errs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	opErr := op(ctx)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject) {
				return
			}
		case <-timeout:
			t.Errorf("%s: the server did not refuse %s (the call returned %v)", what, subject, opErr)
			return
		}
	}
}

// apiError is the error of a JetStream API response.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

// jsAPI sends a JetStream API request as the nats CLI does and returns the
// error the server answered, if any.
func jsAPI(nc *nats.Conn, subject string, body []byte) error {
	msg, err := nc.Request(subject, body, 10*time.Second)
	if err != nil {
		return err
	}
	var r struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return err
	}
	if r.Error != nil {
		return fmt.Errorf("%s: %d/%d %s", subject, r.Error.Code, r.Error.ErrCode, r.Error.Description)
	}
	return nil
}

// streamNames names every stream of topo, the buckets' included
// (KV_<bucket>).
func streamNames(topo consumer.Topology) []string {
	var names []string
	for _, sc := range topo.Streams() {
		names = append(names, sc.Name)
	}
	for _, kv := range topo.Buckets() {
		names = append(names, "KV_"+kv.Bucket)
	}
	return names
}

// snapshot returns the configuration of every object of topo as the server
// holds it.
func snapshot(t *testing.T, js jetstream.JetStream, topo consumer.Topology) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := map[string]any{}
	for _, name := range streamNames(topo) {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		cfg := s.CachedInfo().Config
		cfg.Metadata = nil
		out[name] = cfg
	}
	cons, err := js.Consumer(ctx, topo.Commands.Name, topo.Consumer.Durable)
	if err != nil {
		t.Fatalf("consumer %s: %v", topo.Consumer.Durable, err)
	}
	cc := cons.CachedInfo().Config
	cc.Metadata = nil
	out["consumer "+topo.Consumer.Durable] = cc
	return out
}

// command is one command the test sends, with the outcome it must get.
type command struct {
	id, typ string
	body    []byte
	outcome string
}

// deadSubMchid is the sub-merchant the simulator always fails.
const deadSubMchid = "1900000999"

func testCommands(n int) []command {
	cmds := make([]command, 0, n)
	cmds = append(cmds, command{id: "deploy-test-dead-letter", typ: "validate-cancel", body: []byte(`{"sub_mchid":"` + deadSubMchid + `"}`), outcome: "failed"})
	for i := range n {
		c := command{id: fmt.Sprintf("deploy-test-%03d", i), outcome: "succeeded"}
		switch {
		case i%50 == 49:
			c.typ, c.body, c.outcome = "validate-cancel", []byte(`{"sub_mchid":"not-a-number"}`), "rejected"
		case i%2 == 0:
			c.typ, c.body = "validate-cancel", fmt.Appendf(nil, `{"sub_mchid":"19%08d"}`, i)
		default:
			c.typ, c.body = "query-cancel-withdraw", fmt.Appendf(nil, `{"applyment_id":"X2024%06d"}`, i)
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// TestClusterDeployment runs the deployment of deploy/ on a 3-node JetStream
// cluster: the server configuration of the Compose stack, the least-privilege
// users of deploy/nats/accounts.conf, the objects created by the
// administrator from deploy/nats/*.json, and two instances of the service
// with WXCANCEL_PROVISION=false, as the Kubernetes Deployment runs them.
func TestClusterDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	keys := newUserKeys(t)
	cl := startCluster(t)
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service logs (tail):\n%s", logs.tail(30000))
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))

	prod := productionConfig()
	topo := consumer.NewTopology(prod.Config)
	admin := connectAs(t, cl.urls, keys.seedFile[envAdminNKey], "admin")
	producer := connectAs(t, cl.urls, keys.seedFile[envProducerNKey], "producer")
	reader := connectAs(t, cl.urls, keys.seedFile[envReaderNKey], "reader")
	service := connectAs(t, cl.urls, keys.seedFile[envServiceNKey], "wxcancel")

	sim, err := wxpaysim.New(wxpaysim.Options{AutoCreate: true, Latency: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	merchant, err := wxpaysim.NewMerchant("1900000001")
	if err != nil {
		t.Fatal(err)
	}
	sim.RegisterMerchant(merchant)
	// One sub-merchant for which WeChat Pay always answers SYSTEM_ERROR:
	// its command is retried, redelivered, then dead-lettered.
	if err := sim.AddFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: "validate-cancel", Key: deadSubMchid}); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)

	// serviceConfig is the Deployment's configuration of instance i.
	serviceConfig := func(i int) settings.Settings {
		cfg := prod
		cfg.Provision = false
		cfg.MchID = merchant.MchID
		cfg.Concurrency = 8
		cfg.ShutdownTimeout = 15 * time.Second
		// A command failing for good is dead-lettered within seconds.
		cfg.RedeliveryDelay = 200 * time.Millisecond
		cfg.NATS.URLs = []string{cl.urls[i]}
		cfg.NATS.NKeySeedFile = keys.seedFile[envServiceNKey]
		return cfg
	}
	newClient := func() *wxpay.Client {
		wcfg, err := sim.ClientConfig(merchant, hs.URL)
		if err != nil {
			t.Fatal(err)
		}
		wcfg.Retry = wxpay.RetryPolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond, MaxElapsed: 300 * time.Millisecond}
		c, err := wxpay.NewClient(wcfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("serve refuses to start without its objects (WXCANCEL_PROVISION=false)", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := consumer.New(ctx, serviceConfig(0).Config, consumer.Options{JetStream: service.js, Client: newClient(), Logger: log})
		if !errors.Is(err, consumer.ErrNotProvisioned) {
			t.Fatalf("consumer.New = %v, want ErrNotProvisioned", err)
		}
		names := []string{topo.Consumer.Durable}
		for _, sc := range topo.Streams() {
			names = append(names, sc.Name)
		}
		for _, kv := range topo.Buckets() {
			names = append(names, kv.Bucket)
		}
		for _, name := range names {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("the error does not name %s: %v", name, err)
			}
		}
	})

	step("the administrator creates the objects from deploy/nats/*.json as the nats CLI does", func(t *testing.T) {
		for _, name := range streamNames(topo) {
			body, err := os.ReadFile(filepath.Join(cliStreamsDir, name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			// R3 placement needs every peer known to the meta leader:
			// retry while the cluster settles.
			waitFor(t, 30*time.Second, "creating "+name, func() error {
				err := jsAPI(admin.nc, "$JS.API.STREAM.CREATE."+name, body)
				if err != nil && strings.Contains(err.Error(), "already in use") {
					return nil
				}
				return err
			})
		}
		cfg, err := os.ReadFile(filepath.Join(cliConsumersDir, topo.Commands.Name+"."+topo.Consumer.Durable+".json"))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := json.Marshal(map[string]any{"stream_name": topo.Commands.Name, "config": json.RawMessage(cfg)})
		waitFor(t, 30*time.Second, "creating the consumer", func() error {
			return jsAPI(admin.nc, "$JS.API.CONSUMER.CREATE."+topo.Commands.Name+"."+topo.Consumer.Durable, req)
		})

		// KEDA's nats-jetstream trigger reads the consumer from /jsz of the
		// account named in scaledobject.yaml.
		var jsz server.JSInfo
		waitFor(t, 30*time.Second, "/jsz to show the consumer", func() error {
			resp, err := http.Get("http://" + cl.servers[0].MonitorAddr().String() + "/jsz?acc=WXPAY&consumers=true")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			jsz = server.JSInfo{}
			if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
				return err
			}
			for _, a := range jsz.AccountDetails {
				for _, s := range a.Streams {
					for _, c := range s.Consumer {
						if a.Name == "WXPAY" && s.Name == topo.Commands.Name && c.Name == topo.Consumer.Durable {
							return nil
						}
					}
				}
			}
			return errors.New("not there yet")
		})
	})

	step("serve's own provisioning, as the service user, finds nothing to change", func(t *testing.T) {
		before := snapshot(t, admin.js, topo)
		for name, cfg := range before {
			if sc, ok := cfg.(jetstream.StreamConfig); ok && sc.Replicas != 3 {
				t.Errorf("%s has %d replicas, want 3", name, sc.Replicas)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := consumer.Provision(ctx, service.js, topo, true); err != nil {
			t.Fatalf("provisioning as the service user: %v", err)
		}
		after := snapshot(t, admin.js, topo)
		for name := range before {
			if !reflect.DeepEqual(before[name], after[name]) {
				b, _ := json.MarshalIndent(before[name], "", "  ")
				a, _ := json.MarshalIndent(after[name], "", "  ")
				t.Errorf("serve changed %s made from deploy/nats:\n%s", name, lineDiff(string(a), string(b)))
			}
		}
		// What serve provisions for the buckets is what kvStream (and so
		// the JSON files) say.
		for _, kv := range topo.Buckets() {
			sameConfig(t, "bucket "+kv.Bucket, normalizeStream(after["KV_"+kv.Bucket].(jetstream.StreamConfig)), normalizeStream(kvStream(kv)))
		}
	})

	step("each user is refused what is not its own", func(t *testing.T) {
		cmds, evts := topo.Commands.Name, topo.Events.Name
		durable := topo.Consumer.Durable
		cmdSubject := prod.Prefix + ".cmd.validate-cancel"
		ackSubject := "$JS.ACK." + cmds + "." + durable + ".1.1.1.1.1.0"

		service.refused(t, "the service publishing a command", cmdSubject, func(ctx context.Context) error {
			_, err := service.js.Publish(ctx, cmdSubject, []byte(`{"sub_mchid":"1900000109"}`))
			if err == nil {
				t.Errorf("the service published a command")
			}
			return err
		})
		for _, subj := range []string{"$JS.API.STREAM.DELETE." + cmds, "$JS.API.STREAM.PURGE." + evts, "$JS.API.CONSUMER.DELETE." + cmds + "." + durable, "$JS.API.STREAM.CREATE.OTHER"} {
			service.refused(t, "the service", subj, func(ctx context.Context) error {
				_, err := service.nc.RequestWithContext(ctx, subj, nil)
				return err
			})
		}

		reader.refused(t, "a reader pulling from the service's consumer", "$JS.API.CONSUMER.MSG.NEXT."+cmds+"."+durable, func(ctx context.Context) error {
			_, err := reader.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+cmds+"."+durable, []byte(`{"batch":1}`))
			return err
		})
		reader.refused(t, "a reader acknowledging a command", ackSubject, func(context.Context) error {
			return reader.nc.Publish(ackSubject, nil)
		})
		reader.refused(t, "a reader reading the commands", "$JS.API.CONSUMER.CREATE."+cmds, func(ctx context.Context) error {
			_, err := reader.js.OrderedConsumer(ctx, cmds, jetstream.OrderedConsumerConfig{})
			if err == nil {
				oc, _ := reader.js.OrderedConsumer(ctx, cmds, jetstream.OrderedConsumerConfig{})
				_, err = oc.Next(jetstream.FetchMaxWait(time.Second))
			}
			return err
		})
		reader.refused(t, "a reader publishing a command", cmdSubject, func(context.Context) error {
			return reader.nc.Publish(cmdSubject, []byte(`{}`))
		})

		producer.refused(t, "a producer subscribing to events", prod.Prefix+".evt.>", func(context.Context) error {
			_, err := producer.nc.SubscribeSync(prod.Prefix + ".evt.>")
			return err
		})
		producer.refused(t, "a producer consuming events", "$JS.API.CONSUMER.CREATE."+evts, func(ctx context.Context) error {
			oc, err := producer.js.OrderedConsumer(ctx, evts, jetstream.OrderedConsumerConfig{})
			if err == nil {
				_, err = oc.Next(jetstream.FetchMaxWait(time.Second))
			}
			return err
		})
		producer.refused(t, "a producer reading an outcome record", "$JS.API.DIRECT.GET.KV_"+topo.Outcomes.Bucket, func(ctx context.Context) error {
			_, err := producer.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+topo.Outcomes.Bucket+".$KV."+topo.Outcomes.Bucket+".x", nil)
			return err
		})
	})

	step("two instances deliver exactly one outcome per command while the stream leader is shut down", func(t *testing.T) {
		// Nothing addressed to the service's inbox (commands, API answers)
		// may reach another account: a reader listening on every inbox of
		// its own account sees none of it.
		var leaked atomic.Int64
		snoop, err := reader.nc.Subscribe("_INBOX.>", func(m *nats.Msg) {
			if strings.HasPrefix(m.Subject, prod.Prefix+".cmd.") || strings.HasPrefix(m.Reply, "$JS.ACK."+topo.Commands.Name) {
				leaked.Add(1)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer snoop.Unsubscribe()

		runCtx, stopServices := context.WithCancel(context.Background())
		var running sync.WaitGroup
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				stopServices()
				running.Wait()
			}
		}
		defer stop()
		for i := range 2 {
			cfg := serviceConfig(i)
			ilog := log.With("instance", i+1)
			nc, err := natsconn.Connect(cfg.NATS, fmt.Sprintf("wxcancel-%d", i+1), ilog)
			if err != nil {
				t.Fatal(err)
			}
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			svc, err := consumer.New(ctx, cfg.Config, consumer.Options{JetStream: js, Client: newClient(), Logger: ilog})
			cancel()
			if err != nil {
				t.Fatalf("instance %d: %v", i+1, err)
			}
			running.Add(1)
			go func() {
				defer running.Done()
				svc.Run(runCtx)
				_ = nc.Drain()
			}()
		}

		// The producer publishes all the commands while the instances work;
		// a publish that fails (a timeout during the leader election) is
		// retried with the same Nats-Msg-Id, and the stream keeps one copy.
		cmds := testCommands(300)
		published := make(chan error, 1)
		go func() {
			for _, c := range cmds {
				var err error
				stored := poll.Within(60*time.Second, func() bool {
					msg := nats.NewMsg(prod.Prefix + ".cmd." + c.typ)
					msg.Data = c.body
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_, err = producer.js.PublishMsg(ctx, msg, jetstream.WithMsgID(c.id))
					return err == nil
				})
				if !stored {
					published <- fmt.Errorf("publishing %s: %w", c.id, err)
					return
				}
				// Paced, so that the shutdown below falls amid the run.
				time.Sleep(5 * time.Millisecond)
			}
			published <- nil
		}()

		// Mid-run: once a third of the commands reached WeChat Pay, shut
		// down the node leading the commands stream.
		waitFor(t, 60*time.Second, "the first commands to be executed", func() error {
			if n := sim.Total(); n < len(cmds)/3 {
				return fmt.Errorf("%d requests so far", n)
			}
			return nil
		})
		var leader string
		waitFor(t, 30*time.Second, "the commands stream's leader", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := admin.js.Stream(ctx, topo.Commands.Name)
			if err != nil {
				return err
			}
			if ci := s.CachedInfo().Cluster; ci != nil && ci.Leader != "" {
				leader = ci.Leader
				return nil
			}
			return errors.New("no leader")
		})
		victim := cl.server(leader)
		if victim == nil {
			t.Fatalf("leader %q is not one of the nodes", leader)
		}
		t.Logf("shutting down %s, leader of %s, after %d requests", leader, topo.Commands.Name, sim.Total())
		killed := time.Now()
		victim.Shutdown()
		victim.WaitForShutdown()
		select {
		case err := <-published:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(3 * time.Minute):
			t.Fatal("publishing did not finish")
		}
		t.Logf("every command published %s after the shutdown", time.Since(killed).Round(100*time.Millisecond))

		// Done when every command is acknowledged: nothing pending, nothing
		// in flight, the work queue empty.
		waitFor(t, 120*time.Second, "every command to be acknowledged", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cons, err := admin.js.Consumer(ctx, topo.Commands.Name, topo.Consumer.Durable)
			if err != nil {
				return err
			}
			ci := cons.CachedInfo()
			s, err := admin.js.Stream(ctx, topo.Commands.Name)
			if err != nil {
				return err
			}
			if ci.NumPending > 0 || ci.NumAckPending > 0 || s.CachedInfo().State.Msgs > 0 {
				return fmt.Errorf("pending %d, in flight %d, in the stream %d", ci.NumPending, ci.NumAckPending, s.CachedInfo().State.Msgs)
			}
			return nil
		})
		t.Logf("every command acknowledged %s after the shutdown", time.Since(killed).Round(100*time.Millisecond))
		stop()

		// Read every event back, as a reader.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		events, err := reader.js.Stream(ctx, topo.Events.Name)
		if err != nil {
			t.Fatalf("reader: stream info: %v", err)
		}
		last := events.CachedInfo().State.LastSeq
		oc, err := reader.js.OrderedConsumer(ctx, topo.Events.Name, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		it, err := oc.Messages()
		if err != nil {
			t.Fatal(err)
		}
		defer it.Stop()
		outcomes := map[string][]string{} // command id → event types
		statusEvents := 0
		for seq := uint64(0); seq < last; {
			m, err := it.Next()
			if err != nil {
				t.Fatalf("reading events (at %d of %d): %v", seq, last, err)
			}
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			seq = meta.Sequence.Stream
			var ev struct {
				ID, Type, Subject string
			}
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatalf("event %d is not JSON: %v", seq, err)
			}
			tokens := strings.Split(m.Subject(), ".")
			if tokens[2] == "status" {
				statusEvents++
				continue
			}
			outcomes[ev.Subject] = append(outcomes[ev.Subject], ev.Type)
		}

		for _, c := range cmds {
			got := outcomes[c.id]
			want := "wxpay." + c.typ + "." + c.outcome
			switch {
			case len(got) == 0:
				t.Errorf("%s: no outcome event (lost)", c.id)
			case len(got) > 1:
				t.Errorf("%s: %d outcome events %v (duplicated)", c.id, len(got), got)
			case got[0] != want:
				t.Errorf("%s: outcome %s, want %s", c.id, got[0], want)
			}
			delete(outcomes, c.id)
		}
		for id, types := range outcomes {
			t.Errorf("outcome events %v for %q, which was never sent", types, id)
		}
		if statusEvents == 0 {
			t.Errorf("no status-change events")
		}
		// One dead letter: the command WeChat Pay kept failing, with why.
		dlq, err := admin.js.Stream(ctx, topo.DLQ.Name)
		if err != nil {
			t.Fatal(err)
		}
		if n := dlq.CachedInfo().State.Msgs; n != 1 {
			t.Errorf("%d dead letters, want 1", n)
		} else {
			m, err := dlq.GetMsg(ctx, dlq.CachedInfo().State.LastSeq)
			if err != nil {
				t.Fatal(err)
			}
			if id, code := m.Header.Get(schemas.HeaderCommandID), m.Header.Get(schemas.HeaderErrorCode); id != cmds[0].id || code != "SYSTEM_ERROR" {
				t.Errorf("dead letter of %q (%s), want %s (SYSTEM_ERROR)", id, code, cmds[0].id)
			}
		}
		if n := leaked.Load(); n > 0 {
			t.Errorf("%d messages addressed to the service reached the readers' account", n)
		}
		// Everything the service does is within its rights, following the
		// status bucket included.
		for _, line := range strings.Split(logs.tail(1<<30), "\n") {
			if strings.Contains(strings.ToLower(line), "permissions violation") || strings.Contains(line, "status records will be read") {
				t.Errorf("service log: %s", line)
			}
		}
		t.Logf("%d commands, %d outcome events, %d status events, %d requests to WeChat Pay",
			len(cmds), len(cmds), statusEvents, sim.Total())
		if !slices.ContainsFunc(cl.servers, func(s *server.Server) bool { return s.Running() }) {
			t.Errorf("no server left")
		}
	})
}

// TestServiceUserProvisionsFromScratch: with WXCANCEL_PROVISION=true (the
// Compose stack), two instances starting at once create every object as the
// wxcancel user of accounts.conf, whose rights are enough for that and for
// the lookup that follows. (One node: replicas do not change the rights.)
func TestServiceUserProvisionsFromScratch(t *testing.T) {
	keys := newUserKeys(t)
	opts, err := server.ProcessConfigFile(accountsConf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(20 * time.Second) {
		t.Fatal("the server did not start")
	}

	cfg := productionConfig()
	cfg.Replicas = 1
	cfg.NATS.URLs = []string{s.ClientURL()}
	cfg.NATS.NKeySeedFile = keys.seedFile[envServiceNKey]
	topo := consumer.NewTopology(cfg.Config)
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	errs := make(chan error, 2)
	for i := range 2 {
		nc, err := natsconn.Connect(cfg.NATS, fmt.Sprintf("wxcancel-%d", i+1), log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := consumer.Provision(ctx, js, topo, true)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("provisioning as the service user: %v", err)
		}
	}
	nc, err := natsconn.Connect(cfg.NATS, "wxcancel-check", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := consumer.Provision(ctx, js, topo, false); err != nil {
		t.Errorf("looking the objects up as the service user: %v", err)
	}
}
