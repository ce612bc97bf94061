package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"sigs.k8s.io/yaml"

	"github.com/wxcancel/wxcancel/internal/settings"
)

// Paths of the files under test, relative to this package.
const (
	accountsConf      = "nats/accounts.conf"
	composeFile       = "compose/compose.yaml"
	composeNATSConf   = "compose/nats-server.conf"
	devPublicKeysFile = "compose/dev-nkeys/public.env"
	dockerfile        = "Dockerfile"
	k8sDir            = "k8s"
	cliStreamsDir     = "nats/streams"
	cliConsumersDir   = "nats/consumers"
)

// The environment variables deploy/nats/accounts.conf takes the users'
// public NKeys from.
const (
	envServiceNKey  = "WXCANCEL_NKEY"
	envAdminNKey    = "WXPAY_ADMIN_NKEY"
	envProducerNKey = "WXPAY_PRODUCER_NKEY"
	envReaderNKey   = "WXPAY_READER_NKEY"
)

var userEnvs = []string{envServiceNKey, envAdminNKey, envProducerNKey, envReaderNKey}

// userKeys are fresh NKey pairs for the users of accounts.conf: the public
// keys are in the environment (as the server expects them), the seeds in
// files (as the clients read them).
type userKeys struct {
	public   map[string]string // env var → public key
	seedFile map[string]string // env var → seed file
}

// newUserKeys generates a key pair per user and sets the environment that
// accounts.conf reads. Tests calling it must not run in parallel.
func newUserKeys(t *testing.T) userKeys {
	t.Helper()
	dir := t.TempDir()
	k := userKeys{public: map[string]string{}, seedFile: map[string]string{}}
	for _, env := range userEnvs {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		f := filepath.Join(dir, strings.ToLower(env)+".nk")
		if err := os.WriteFile(f, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv(env, pub)
		k.public[env], k.seedFile[env] = pub, f
	}
	return k
}

// loadAccounts parses accounts.conf as the server does.
func loadAccounts(t *testing.T) (*server.Options, userKeys) {
	t.Helper()
	keys := newUserKeys(t)
	opts, err := server.ProcessConfigFile(accountsConf)
	if err != nil {
		t.Fatalf("%s: %v", accountsConf, err)
	}
	return opts, keys
}

// nkeyUser returns the user of opts whose public key is the one in env.
func nkeyUser(t *testing.T, opts *server.Options, keys userKeys, env string) *server.NkeyUser {
	t.Helper()
	for _, u := range opts.Nkeys {
		if u.Nkey == keys.public[env] {
			return u
		}
	}
	t.Fatalf("%s: no user with the NKey of $%s", accountsConf, env)
	return nil
}

// splitYAML splits a multi-document YAML file.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// object is a Kubernetes object whose spec is decoded later.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
	raw  []byte
	file string
}

// loadK8s reads every object of the files of deploy/k8s named in
// kustomization.yaml.
func loadK8s(t *testing.T) []object {
	t.Helper()
	var k struct {
		Resources []string `json:"resources"`
	}
	readYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &k)
	var objs []object
	for _, f := range k.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range splitYAML(b) {
			var o object
			if err := yaml.Unmarshal(d, &o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			o.raw, o.file = d, f
			objs = append(objs, o)
		}
	}
	return objs
}

// find returns the objects of a kind.
func find(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the only object of a kind.
func one(t *testing.T, objs []object, kind string) object {
	t.Helper()
	found := find(objs, kind)
	if len(found) != 1 {
		t.Fatalf("want exactly one %s in %s, found %d", kind, k8sDir, len(found))
	}
	return found[0]
}

// spec decodes o's spec into v; strict makes unknown fields an error, so
// that the tests know every field they compare.
func (o object) spec(t *testing.T, v any, strict bool) {
	t.Helper()
	var err error
	if strict {
		var whole struct {
			Spec json.RawMessage `json:"spec"`
		}
		if err = yaml.Unmarshal(o.raw, &whole); err == nil {
			dec := json.NewDecoder(bytes.NewReader(whole.Spec))
			dec.DisallowUnknownFields()
			err = dec.Decode(v)
		}
	} else {
		err = json.Unmarshal(o.Spec, v)
	}
	if err != nil {
		t.Fatalf("%s %s/%s: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readJSONStrict decodes a JSON file refusing unknown fields: a field the
// JetStream API does not know would be refused by the server too.
func readJSONStrict(t *testing.T, path string, v any) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// readEnvFile reads KEY=VALUE lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, l)
		}
		env[k] = v
	}
	return env
}

// serveConfig is what `wxcancel serve` makes of an environment: its Config
// and the problems Validate finds. Files named by *_FILE settings are
// replaced by empty temporary files first (they exist only where the
// configuration runs), so that only their names are at stake.
func serveConfig(t *testing.T, env map[string]string) (settings.Settings, error) {
	t.Helper()
	dir := t.TempDir()
	getenv := func(k string) string {
		v := env[k]
		if v != "" && strings.HasSuffix(k, "_FILE") {
			f := filepath.Join(dir, strings.ToLower(k))
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return f
		}
		return v
	}
	cfg := settings.Default()
	cfg.Bind(flag.NewFlagSet("serve", flag.ContinueOnError), getenv)
	return cfg, cfg.Validate()
}

// productionConfig is the configuration every declaration is compared with:
// the defaults, on a cluster of three (WXCANCEL_REPLICAS=3).
func productionConfig() settings.Settings {
	cfg := settings.Default()
	cfg.Replicas = 3
	return cfg
}

// Server defaults that make two configurations equal although one leaves
// a limit at zero and the other says -1 (nats-server stream.go,
// setStreamConfigDefaults).
func normalizeStream(c jetstream.StreamConfig) jetstream.StreamConfig {
	for _, p := range []*int64{&c.MaxMsgs, &c.MaxBytes, &c.MaxMsgsPerSubject} {
		if *p == 0 {
			*p = -1
		}
	}
	if c.MaxConsumers == 0 {
		c.MaxConsumers = -1
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = -1
	}
	if c.Duplicates == 0 {
		c.Duplicates = 2 * time.Minute
		if c.MaxAge > 0 && c.MaxAge < c.Duplicates {
			c.Duplicates = c.MaxAge
		}
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	c.Metadata = nil
	return c
}

func normalizeConsumer(c jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	if c.Name == "" {
		c.Name = c.Durable
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = -1
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 1000
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	c.Metadata = nil
	return c
}

// kvStream is the stream configuration of a KV bucket, as nats.go's
// jetstream package derives it (jetstream/kv.go, prepareKeyValueConfig).
// The cluster test checks it against a real bucket.
func kvStream(kv jetstream.KeyValueConfig) jetstream.StreamConfig {
	history := int64(max(kv.History, 1))
	dup := 2 * time.Minute
	if kv.TTL > 0 && kv.TTL < dup {
		dup = kv.TTL
	}
	return jetstream.StreamConfig{
		Name:              "KV_" + kv.Bucket,
		Description:       kv.Description,
		Subjects:          []string{"$KV." + kv.Bucket + ".>"},
		MaxMsgsPerSubject: history,
		MaxBytes:          -1,
		MaxAge:            kv.TTL,
		MaxMsgSize:        -1,
		Storage:           kv.Storage,
		Replicas:          max(kv.Replicas, 1),
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        dup,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		AllowDirect:       true,
		Discard:           jetstream.DiscardNew,
	}
}

// sameConfig reports a difference between two configurations (any type),
// showing both as JSON.
func sameConfig(t *testing.T, what string, got, want any) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	g, _ := json.MarshalIndent(got, "", "  ")
	w, _ := json.MarshalIndent(want, "", "  ")
	t.Errorf("%s differs from what `wxcancel serve` provisions (consumer.NewTopology):\n%s", what, lineDiff(string(w), string(g)))
}

// lineDiff lists the lines of want and got that differ (a small, ordered
// comparison: configurations are short and their fields in a fixed order).
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			fmt.Fprintf(&b, "  serve:    %s\n  declared: %s\n", strings.TrimSpace(w), strings.TrimSpace(g))
		}
	}
	return b.String()
}

// lockedBuffer collects the logs of the services under test, shown only when
// a test fails.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
