package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/settings"
)

// NACK's resources (jetstream.nats.io/v1beta2), the fields deploy/k8s uses,
// with their JSON names from nats-io/nack
// pkg/jetstream/apis/jetstream/v1beta2/{streamtypes,consumertypes,
// keyvaluetypes,types}.go. Decoding is strict: a field added to a manifest
// must be added here and compared.
type nackConnection struct {
	Account       string `json:"account"`
	PreventDelete bool   `json:"preventDelete"`
}

type nackStream struct {
	nackConnection
	Name              string   `json:"name"`
	Description       string   `json:"description"`
	Subjects          []string `json:"subjects"`
	Retention         string   `json:"retention"`
	Discard           string   `json:"discard"`
	MaxConsumers      int      `json:"maxConsumers"`
	MaxMsgs           int      `json:"maxMsgs"`
	MaxBytes          int      `json:"maxBytes"`
	MaxMsgsPerSubject int      `json:"maxMsgsPerSubject"`
	MaxMsgSize        int      `json:"maxMsgSize"`
	MaxAge            string   `json:"maxAge"`
	Storage           string   `json:"storage"`
	Replicas          int      `json:"replicas"`
	DuplicateWindow   string   `json:"duplicateWindow"`
}

type nackConsumer struct {
	nackConnection
	StreamName    string `json:"streamName"`
	DurableName   string `json:"durableName"`
	Description   string `json:"description"`
	DeliverPolicy string `json:"deliverPolicy"`
	AckPolicy     string `json:"ackPolicy"`
	AckWait       string `json:"ackWait"`
	MaxDeliver    int    `json:"maxDeliver"`
	MaxAckPending int    `json:"maxAckPending"`
	FilterSubject string `json:"filterSubject"`
	ReplayPolicy  string `json:"replayPolicy"`
	Replicas      int    `json:"replicas"`
}

type nackKeyValue struct {
	nackConnection
	Bucket       string `json:"bucket"`
	Description  string `json:"description"`
	History      int    `json:"history"`
	TTL          string `json:"ttl"`
	MaxBytes     int    `json:"maxBytes"`
	MaxValueSize int    `json:"maxValueSize"`
	Storage      string `json:"storage"`
	Replicas     int    `json:"replicas"`
	Compression  bool   `json:"compression"`
}

type nackAccount struct {
	Servers []string `json:"servers"`
	NKey    struct {
		Seed   string `json:"seed"`
		Secret struct {
			Name string `json:"name"`
		} `json:"secret"`
	} `json:"nkey"`
}

func duration(t *testing.T, what, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return d
}

// enumJSON decodes a JetStream enum from its JSON name, as NACK and the
// JetStream API name them ("workqueue", "new", "file", "explicit", …).
func enumJSON(t *testing.T, what, name string, v json.Unmarshaler) {
	t.Helper()
	if name == "" {
		return
	}
	if err := v.UnmarshalJSON([]byte(`"` + name + `"`)); err != nil {
		t.Fatalf("%s: %q: %v", what, name, err)
	}
}

// The conversions below follow NACK's controllers
// (internal/controller/stream_controller.go streamSpecToConfig,
// consumer_controller.go consumerSpecToOpts, keyvalue_controller.go
// keyValueSpecToConfig): zero limits are left to the server's defaults.

func (s nackStream) config(t *testing.T) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:         s.Name,
		Description:  s.Description,
		Subjects:     s.Subjects,
		MaxConsumers: s.MaxConsumers,
		MaxMsgs:      int64(s.MaxMsgs),
		MaxBytes:     int64(s.MaxBytes),
		MaxMsgSize:   int32(s.MaxMsgSize),
		Replicas:     s.Replicas,
		MaxAge:       duration(t, s.Name+" maxAge", s.MaxAge),
		Duplicates:   duration(t, s.Name+" duplicateWindow", s.DuplicateWindow),
	}
	if s.MaxMsgsPerSubject > 0 {
		c.MaxMsgsPerSubject = int64(s.MaxMsgsPerSubject)
	}
	enumJSON(t, s.Name+" retention", s.Retention, &c.Retention)
	enumJSON(t, s.Name+" discard", s.Discard, &c.Discard)
	enumJSON(t, s.Name+" storage", s.Storage, &c.Storage)
	return c
}

func (s nackConsumer) config(t *testing.T) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       s.DurableName,
		Description:   s.Description,
		AckWait:       duration(t, s.DurableName+" ackWait", s.AckWait),
		MaxDeliver:    s.MaxDeliver,
		MaxAckPending: s.MaxAckPending,
		FilterSubject: s.FilterSubject,
		Replicas:      s.Replicas,
	}
	enumJSON(t, s.DurableName+" deliverPolicy", s.DeliverPolicy, &c.DeliverPolicy)
	enumJSON(t, s.DurableName+" ackPolicy", s.AckPolicy, &c.AckPolicy)
	enumJSON(t, s.DurableName+" replayPolicy", s.ReplayPolicy, &c.ReplayPolicy)
	return c
}

func (s nackKeyValue) config(t *testing.T) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:       s.Bucket,
		Description:  s.Description,
		History:      uint8(s.History),
		TTL:          duration(t, s.Bucket+" ttl", s.TTL),
		MaxBytes:     int64(s.MaxBytes),
		MaxValueSize: int32(s.MaxValueSize),
		Replicas:     s.Replicas,
		Compression:  s.Compression,
	}
	enumJSON(t, s.Bucket+" storage", s.Storage, &c.Storage)
	return c
}

// TestNACKResourcesEqualTopology: the NACK Stream, Consumer and KeyValue
// resources of deploy/k8s declare exactly the objects `wxcancel serve`
// would provision with the production settings — and with the settings the
// Deployment itself runs with.
func TestNACKResourcesEqualTopology(t *testing.T) {
	objs := loadK8s(t)
	for _, cfg := range []struct {
		name string
		cfg  settings.Settings
	}{{"production settings", productionConfig()}, {"the Deployment's settings", deploymentConfig(t, objs)}} {
		t.Run(cfg.name, func(t *testing.T) {
			topo := consumer.NewTopology(cfg.cfg.Config)

			streams := map[string]jetstream.StreamConfig{}
			for _, o := range find(objs, "Stream") {
				var s nackStream
				o.spec(t, &s, true)
				streams[s.Name] = s.config(t)
			}
			want := []jetstream.StreamConfig{topo.Commands, topo.Events, topo.DLQ}
			if len(streams) != len(want) {
				t.Errorf("NACK declares %d streams, serve provisions %d", len(streams), len(want))
			}
			for _, w := range want {
				got, ok := streams[w.Name]
				if !ok {
					t.Errorf("no NACK Stream for %s", w.Name)
					continue
				}
				sameConfig(t, "NACK Stream "+w.Name, normalizeStream(got), normalizeStream(w))
			}

			var c nackConsumer
			one(t, objs, "Consumer").spec(t, &c, true)
			if c.StreamName != topo.Commands.Name {
				t.Errorf("NACK Consumer is on stream %q, serve's consumer on %q", c.StreamName, topo.Commands.Name)
			}
			sameConfig(t, "NACK Consumer "+c.DurableName, normalizeConsumer(c.config(t)), normalizeConsumer(topo.Consumer))

			kvs := map[string]jetstream.KeyValueConfig{}
			for _, o := range find(objs, "KeyValue") {
				var kv nackKeyValue
				o.spec(t, &kv, true)
				kvs[kv.Bucket] = kv.config(t)
			}
			if len(kvs) != len(topo.Buckets()) {
				t.Errorf("NACK declares %d KV buckets, serve provisions %d", len(kvs), len(topo.Buckets()))
			}
			for _, w := range topo.Buckets() {
				sameConfig(t, "NACK KeyValue "+w.Bucket, kvs[w.Bucket], w)
			}
		})
	}
}

// TestNACKResourcesAreProtected: every JetStream resource connects through
// the one Account, and deleting a resource leaves the data in place.
func TestNACKResourcesAreProtected(t *testing.T) {
	objs := loadK8s(t)
	acc := one(t, objs, "Account")
	var a nackAccount
	acc.spec(t, &a, true)
	if a.NKey.Seed == "" || a.NKey.Secret.Name == "" || len(a.Servers) == 0 {
		t.Errorf("Account %s: needs servers and an NKey seed from a secret: %+v", acc.Metadata.Name, a)
	}
	dep := deploymentConfig(t, objs)
	if !slices.Equal(a.Servers, dep.NATS.URLs) {
		t.Errorf("NACK connects to %v, the Deployment to %v", a.Servers, dep.NATS.URLs)
	}
	for _, kind := range []string{"Stream", "Consumer", "KeyValue"} {
		for _, o := range find(objs, kind) {
			var c struct {
				nackConnection
				Rest map[string]any `json:"-"`
			}
			o.spec(t, &c, false)
			if c.Account != acc.Metadata.Name {
				t.Errorf("%s %s: account %q, want %q", kind, o.Metadata.Name, c.Account, acc.Metadata.Name)
			}
			if !c.PreventDelete {
				t.Errorf("%s %s: preventDelete must be true: deleting the resource must not delete its data", kind, o.Metadata.Name)
			}
			if o.APIVersion != "jetstream.nats.io/v1beta2" {
				t.Errorf("%s %s: apiVersion %s, want jetstream.nats.io/v1beta2", kind, o.Metadata.Name, o.APIVersion)
			}
		}
	}
}

// cliStreams reads deploy/nats/streams/*.json as the JetStream API's
// StreamConfig.
func cliStreams(t *testing.T) map[string]jetstream.StreamConfig {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(cliStreamsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no stream configurations in %s: %v", cliStreamsDir, err)
	}
	out := map[string]jetstream.StreamConfig{}
	for _, f := range files {
		var c jetstream.StreamConfig
		readJSONStrict(t, f, &c)
		if want := strings.TrimSuffix(filepath.Base(f), ".json"); c.Name != want {
			t.Errorf("%s: name %q, want the file's name %q (provision.sh relies on it)", f, c.Name, want)
		}
		out[c.Name] = c
	}
	return out
}

// TestCLIConfigsEqualTopology: the JSON files for `nats stream add
// --config` and `nats consumer add --config` declare exactly what serve
// provisions, KV buckets included (as their KV_<bucket> streams).
func TestCLIConfigsEqualTopology(t *testing.T) {
	topo := consumer.NewTopology(productionConfig().Config)
	streams := cliStreams(t)
	want := topo.Streams()
	for _, kv := range topo.Buckets() {
		want = append(want, kvStream(kv))
	}
	var names []string
	for _, w := range want {
		names = append(names, w.Name)
		got, ok := streams[w.Name]
		if !ok {
			t.Errorf("%s: no %s.json", cliStreamsDir, w.Name)
			continue
		}
		sameConfig(t, cliStreamsDir+"/"+w.Name+".json", normalizeStream(got), normalizeStream(w))
	}
	for name := range streams {
		if !slices.Contains(names, name) {
			t.Errorf("%s/%s.json declares a stream serve does not use", cliStreamsDir, name)
		}
	}

	var c jetstream.ConsumerConfig
	f := filepath.Join(cliConsumersDir, topo.Commands.Name+"."+topo.Consumer.Durable+".json")
	readJSONStrict(t, f, &c)
	sameConfig(t, f, normalizeConsumer(c), normalizeConsumer(topo.Consumer))
	if files, _ := filepath.Glob(filepath.Join(cliConsumersDir, "*.json")); len(files) != 1 {
		t.Errorf("%s: want one consumer configuration, found %v", cliConsumersDir, files)
	}

	// provision.sh applies every file.
	script, err := os.ReadFile("nats/provision.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.Contains(string(script), n) {
			t.Errorf("nats/provision.sh does not apply %s", n)
		}
	}
	if !strings.Contains(string(script), "nats consumer add "+topo.Commands.Name+" "+topo.Consumer.Durable) {
		t.Errorf("nats/provision.sh does not add the consumer %s on %s", topo.Consumer.Durable, topo.Commands.Name)
	}
}

// TestAccountsMatchTopology: the permissions of deploy/nats/accounts.conf
// name the objects serve uses, give each user what it needs and nothing
// broader.
func TestAccountsMatchTopology(t *testing.T) {
	opts, keys := loadAccounts(t)
	cfg := productionConfig()
	topo := consumer.NewTopology(cfg.Config)
	p := cfg.Prefix
	cmds, evts := topo.Commands.Name, topo.Events.Name
	durable := topo.Consumer.Durable
	var buckets []string
	for _, kv := range topo.Buckets() {
		buckets = append(buckets, kv.Bucket)
	}

	service := nkeyUser(t, opts, keys, envServiceNKey)
	admin := nkeyUser(t, opts, keys, envAdminNKey)
	producer := nkeyUser(t, opts, keys, envProducerNKey)
	reader := nkeyUser(t, opts, keys, envReaderNKey)

	jsAccount := service.Account.Name
	if admin.Account.Name != jsAccount {
		t.Errorf("the administrator is in account %s, the service in %s", admin.Account.Name, jsAccount)
	}
	if admin.Permissions != nil {
		t.Errorf("the administrator of %s should have the whole account", jsAccount)
	}
	if producer.Account.Name == jsAccount || reader.Account.Name == jsAccount || producer.Account.Name == reader.Account.Name {
		t.Errorf("producers (%s), readers (%s) and the service (%s) must be in accounts of their own",
			producer.Account.Name, reader.Account.Name, jsAccount)
	}

	needs := []string{
		p + ".evt.>", p + ".dlq.>",
		"$JS.API.CONSUMER.MSG.NEXT." + cmds + "." + durable,
		"$JS.ACK." + cmds + "." + durable + ".>",
		"$JS.API.CONSUMER.INFO." + cmds + "." + durable,
		"$JS.API.STREAM.MSG.GET." + evts,
		"$JS.API.CONSUMER.CREATE." + cmds + "." + durable + ".>",
		"$JS.API.INFO",
	}
	for _, b := range buckets {
		needs = append(needs, "$KV."+b+".>", "$JS.API.DIRECT.GET.KV_"+b+".>")
	}
	for _, b := range []string{topo.Status.Bucket, topo.Tracking.Bucket} { // watched
		needs = append(needs, "$JS.API.CONSUMER.CREATE.KV_"+b+".>", "$JS.API.CONSUMER.DELETE.KV_"+b+".>", "$JS.FC.KV_"+b+".>")
	}
	for _, s := range streamNames(topo) {
		needs = append(needs, "$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.UPDATE."+s)
	}
	allow := service.Permissions.Publish.Allow
	for _, n := range needs {
		if !slices.Contains(allow, n) {
			t.Errorf("the service may not publish to %s", n)
		}
	}
	ours := append(append([]string{p + "."}, streamNames(topo)...), buckets...)
	for _, a := range allow {
		if a == "$JS.API.INFO" {
			continue
		}
		if !slices.ContainsFunc(ours, func(o string) bool { return strings.Contains(a, o) }) {
			t.Errorf("the service may publish to %s, which is none of its objects", a)
		}
		for _, bad := range []string{">", "$JS.>", "$JS.API.>", "$KV.>", "$JS.API.STREAM.DELETE", "$JS.API.STREAM.PURGE", "$JS.API.CONSUMER.DELETE." + cmds} {
			if a == bad || strings.HasPrefix(a, bad) {
				t.Errorf("the service may publish to %s", a)
			}
		}
	}
	if !slices.Contains(service.Permissions.Publish.Deny, p+".cmd.>") {
		t.Errorf("the service is not denied %s.cmd.>", p)
	}
	for _, u := range []struct {
		name string
		user string
	}{{"service", envServiceNKey}, {"producer", envProducerNKey}, {"reader", envReaderNKey}} {
		perms := nkeyUser(t, opts, keys, u.user).Permissions
		if perms == nil || perms.Subscribe == nil || !slices.Equal(perms.Subscribe.Allow, []string{"_INBOX.>"}) {
			t.Errorf("the %s may subscribe to more than its inbox: %+v", u.name, perms)
		}
	}
	if got := producer.Permissions.Publish.Allow; !slices.Equal(got, []string{p + ".cmd.>"}) {
		t.Errorf("producers may publish to %v, want only %s.cmd.>", got, p)
	}
	for _, a := range reader.Permissions.Publish.Allow {
		if !strings.Contains(a, "."+evts) || !(strings.HasPrefix(a, "$JS.API.") || strings.HasPrefix(a, "$JS.ACK.")) {
			t.Errorf("readers may publish to %s: only the JetStream API of %s is theirs", a, evts)
		}
	}
	sort.Strings(allow)
	t.Logf("service may publish to %d subjects", len(allow))
}

// deploymentConfig is the Config `wxcancel serve` runs with in the
// Deployment: its env literals and the generated settings ConfigMap. It must
// pass serve's own validation.
func deploymentConfig(t *testing.T, objs []object) settings.Settings {
	t.Helper()
	d := deployment(t, objs)
	env := map[string]string{}
	for _, e := range d.container(t).Env {
		env[e.Name] = e.Value
	}
	for k, v := range settingsConfigMap(t) {
		if _, dup := env[k]; dup {
			t.Errorf("%s is set both in the Deployment and in the settings ConfigMap", k)
		}
		env[k] = v
	}
	cfg, err := serveConfig(t, env)
	if err != nil {
		t.Fatalf("the Deployment's settings do not pass `wxcancel serve`'s validation:\n%v", err)
	}
	return cfg
}

// settingsConfigMap returns the literals of kustomization.yaml's
// configMapGenerator.
func settingsConfigMap(t *testing.T) map[string]string {
	t.Helper()
	var k struct {
		ConfigMapGenerator []struct {
			Name     string   `json:"name"`
			Literals []string `json:"literals"`
		} `json:"configMapGenerator"`
	}
	readYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &k)
	out := map[string]string{}
	for _, g := range k.ConfigMapGenerator {
		for _, l := range g.Literals {
			key, v, _ := strings.Cut(l, "=")
			out[key] = v
		}
	}
	return out
}
