package deploy

import (
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/wxcancel/wxcancel/internal/settings"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper-cased
	args string
	line int
}

// parseDockerfile splits a Dockerfile into instructions and build stages.
func parseDockerfile(t *testing.T, file string) [][]instruction {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]instruction
	var cur string
	start := 0
	flush := func() {
		cur = strings.TrimSpace(cur)
		if cur == "" {
			return
		}
		cmd, args, _ := strings.Cut(cur, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start}
		if in.cmd == "FROM" || len(stages) == 0 {
			stages = append(stages, nil)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
		cur = ""
	}
	for i, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if cur == "" {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		cur += trimmed
		flush()
	}
	flush()
	return stages
}

// TestDockerfile checks the image's build for the properties operators
// depend on: multi-stage, a static stamped binary, a minimal final image
// with CA certificates, a non-root user, nothing written at run time, no
// HEALTHCHECK.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, dockerfile)
	// The global ARGs before the first FROM form stage 0 when present.
	var build, final []instruction
	var froms []instruction
	for _, s := range stages {
		if s[0].cmd == "FROM" {
			froms = append(froms, s[0])
			build, final = final, s
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, found %d stages", len(froms))
	}
	all := slices.Concat(stages...)
	for _, in := range all {
		switch in.cmd {
		case "HEALTHCHECK":
			t.Errorf("line %d: HEALTHCHECK: orchestrators probe /healthz and /readyz; the image has no shell or client to run one", in.line)
		case "ADD":
			t.Errorf("line %d: ADD: use COPY", in.line)
		}
	}

	// The build stage: a static, trimmed, stamped binary with the OpenSSL
	// signer, checked to be static.
	var goBuild, check string
	for _, in := range build {
		switch {
		case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			goBuild = in.args
		case in.cmd == "RUN" && strings.Contains(in.args, "ldd"):
			check = in.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=1", "-trimpath", "-tags openssl,netgo,osusergo",
		`-ldflags "-s -w -X main.version=$VERSION -linkmode external -extldflags -static"`, "./cmd/wxcancel"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("the go build (%q) lacks %s", goBuild, want)
		}
	}
	if !strings.Contains(check, "! ldd /out/wxcancel") || !strings.Contains(check, "signer: OpenSSL") {
		t.Errorf("the build stage does not check that the binary is static and signs with OpenSSL (%q)", check)
	}
	if !slices.ContainsFunc(build, func(in instruction) bool { return in.cmd == "ARG" && strings.HasPrefix(in.args, "VERSION") }) {
		t.Errorf("the build stage has no ARG VERSION")
	}

	// The final stage.
	base := strings.Fields(final[0].args)[0]
	distroless := regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?(:nonroot|:latest|@sha256:[0-9a-f]{64}|:[\w.-]+)?$`)
	var user, entrypoint string
	var labels, copies []string
	hasVersionArg := false
	for _, in := range final[1:] {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "LABEL":
			labels = append(labels, in.args)
		case "COPY":
			copies = append(copies, in.args)
		case "ARG":
			hasVersionArg = hasVersionArg || strings.HasPrefix(in.args, "VERSION")
		case "RUN":
			t.Errorf("line %d: RUN in the final stage: the final image has no shell", in.line)
		case "VOLUME":
			t.Errorf("line %d: VOLUME: the service writes nothing", in.line)
		}
	}
	switch {
	case distroless.MatchString(base):
		// distroless/static ships ca-certificates.
	case base == "scratch":
		if !slices.ContainsFunc(copies, func(c string) bool { return strings.Contains(c, "ca-certificates") }) {
			t.Errorf("a scratch image needs the CA certificates copied in")
		}
	default:
		t.Errorf("final image %s: want gcr.io/distroless/static or scratch", base)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("the final stage runs as %q: want a non-root USER", user)
	} else if _, err := strconv.Atoi(u); err != nil {
		t.Errorf("USER %q: use a numeric uid so that Kubernetes can verify runAsNonRoot", user)
	}
	if !strings.HasPrefix(entrypoint, "[") {
		t.Errorf("ENTRYPOINT %q: use the exec form, so that SIGTERM reaches the service", entrypoint)
	}
	if !hasVersionArg || !slices.ContainsFunc(labels, func(l string) bool {
		return strings.Contains(l, `org.opencontainers.image.version="$VERSION"`)
	}) {
		t.Errorf("the final image must be stamped: ARG VERSION and LABEL org.opencontainers.image.version=\"$VERSION\"")
	}
	if len(copies) != 1 || !strings.Contains(copies[0], "--from=") {
		t.Errorf("the final stage should only copy the binary from the build stage: %v", copies)
	}
	var expose string
	for _, in := range final {
		if in.cmd == "EXPOSE" {
			expose = in.args
		}
	}
	_, port, _ := net.SplitHostPort(settings.Default().HTTPAddr)
	if !strings.Contains(expose, port) {
		t.Errorf("EXPOSE %q: want the metrics port %s", expose, port)
	}

	// The build context leaves secrets and the VCS out.
	ignore, err := os.ReadFile(dockerfile + ".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "**/*.pem", "**/*.nk"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf("%s.dockerignore does not leave out %s", dockerfile, want)
		}
	}
}

// composeService is the part of a Compose service the checks read.
type composeService struct {
	Image       string            `json:"image"`
	Command     []string          `json:"command"`
	Entrypoint  []string          `json:"entrypoint"`
	Environment map[string]string `json:"environment"`
	EnvFile     []string          `json:"env_file"`
	NetworkMode string            `json:"network_mode"`
	Volumes     []string          `json:"volumes"`
	Ports       []string          `json:"ports"`
	ReadOnly    bool              `json:"read_only"`
	User        string            `json:"user"`
	CapDrop     []string          `json:"cap_drop"`
	StopGrace   string            `json:"stop_grace_period"`
	Profiles    []string          `json:"profiles"`
	Secrets     []struct {
		Source string `json:"source"`
		Target string `json:"target"`
	} `json:"secrets"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
}

type composeProject struct {
	Services map[string]composeService `json:"services"`
	Secrets  map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
	Volumes map[string]any `json:"volumes"`
}

// mountOf returns the source of the volume mounted at target.
func (s composeService) mountOf(target string) string {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0]
		}
	}
	return ""
}

// flag returns the value of --name=value in args.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// TestCompose checks the Compose stack: three NATS nodes forming one
// JetStream cluster with the accounts of deploy/nats, two instances of the
// service configured for R3 that pass serve's validation, the simulator
// they share keys with.
func TestCompose(t *testing.T) {
	var p composeProject
	readYAML(t, composeFile, &p)
	dev := readEnvFile(t, devPublicKeysFile)

	var natsNodes, instances []string
	for name, s := range p.Services {
		switch {
		case strings.HasPrefix(s.Image, "nats:"):
			natsNodes = append(natsNodes, name)
		case slices.Equal(s.Command, []string{"serve"}):
			instances = append(instances, name)
		}
	}
	slices.Sort(natsNodes)
	slices.Sort(instances)
	if len(natsNodes) != 3 {
		t.Fatalf("want 3 NATS nodes, found %v", natsNodes)
	}
	if len(instances) != 2 {
		t.Fatalf("want 2 wxcancel instances, found %v", instances)
	}

	// The NATS nodes: one configuration, told apart by NATS_SERVER_NAME,
	// routes to every node, each with its own store.
	var routeHosts []string
	for _, name := range natsNodes {
		s := p.Services[name]
		if s.Environment["NATS_SERVER_NAME"] != name {
			t.Errorf("%s: NATS_SERVER_NAME %q", name, s.Environment["NATS_SERVER_NAME"])
		}
		if src := s.mountOf("/etc/nats/compose/nats-server.conf"); path.Clean(src) != "nats-server.conf" {
			t.Errorf("%s: nats-server.conf mounted from %q", name, src)
		}
		if src := s.mountOf("/etc/nats/nats"); path.Clean(src) != "../nats" {
			t.Errorf("%s: deploy/nats must be mounted at /etc/nats/nats for the include, found %q", name, src)
		}
		if vol := s.mountOf("/data"); vol != name {
			t.Errorf("%s: its JetStream store needs a volume of its own at /data, found %q", name, vol)
		}
		if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "/healthz") {
			t.Errorf("%s: no /healthz health check", name)
		}
		if !slices.Contains(s.EnvFile, "dev-nkeys/public.env") {
			t.Errorf("%s: the users' public keys come from dev-nkeys/public.env", name)
		}
		for k, v := range dev {
			t.Setenv(k, v)
		}
		t.Setenv("NATS_SERVER_NAME", name)
		opts, err := server.ProcessConfigFile(composeNATSConf)
		if err != nil {
			t.Fatalf("%s: %v", composeNATSConf, err)
		}
		if opts.ServerName != name || !opts.JetStream || opts.StoreDir != "/data" || opts.Cluster.Name == "" {
			t.Errorf("%s: server %q, JetStream %v, store %q, cluster %q", name, opts.ServerName, opts.JetStream, opts.StoreDir, opts.Cluster.Name)
		}
		if opts.MaxPayload != 1<<20 {
			t.Errorf("max_payload %d: the commands stream accepts up to the max payload, and the service answers an oversized command only if it arrives", opts.MaxPayload)
		}
		if !opts.SyncAlways {
			t.Errorf("sync_interval: always is what the README recommends for payments; the compose stack shows it")
		}
		routeHosts = nil
		for _, r := range opts.Routes {
			routeHosts = append(routeHosts, r.Hostname())
		}
		slices.Sort(routeHosts)
	}
	if !slices.Equal(routeHosts, natsNodes) {
		t.Errorf("routes go to %v, the NATS services are %v", routeHosts, natsNodes)
	}

	// The development keys are pairs.
	for env, file := range map[string]string{
		envServiceNKey: "wxcancel.nk", envAdminNKey: "admin.nk", envProducerNKey: "producer.nk", envReaderNKey: "reader.nk",
	} {
		seed, err := os.ReadFile(filepath.Join("compose/dev-nkeys", file))
		if err != nil {
			t.Fatal(err)
		}
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			t.Fatalf("dev-nkeys/%s: %v", file, err)
		}
		if pub, _ := kp.PublicKey(); pub != dev[env] {
			t.Errorf("dev-nkeys/%s is not the pair of %s in public.env", file, env)
		}
	}

	// The instances.
	sim := p.Services["sim"]
	simKeys := flagValue(sim.Command, "keys-dir")
	if flagValue(sim.Command, "addr") == "" || simKeys == "" {
		t.Errorf("sim: needs --addr and --keys-dir: %v", sim.Command)
	}
	simVolume := ""
	for _, v := range sim.Volumes {
		src, target, _ := strings.Cut(v, ":")
		if strings.HasPrefix(simKeys, target+"/") {
			simVolume = src
			simKeys = strings.TrimPrefix(simKeys, target)
		}
	}
	if simVolume == "" {
		t.Fatalf("sim: --keys-dir is on no volume")
	}
	ports := map[string]bool{}
	for _, name := range instances {
		s := p.Services[name]
		cfg, err := serveConfig(t, s.Environment)
		if err != nil {
			t.Errorf("%s: the settings do not pass `wxcancel serve`'s validation:\n%v", name, err)
			continue
		}
		if cfg.Replicas != 3 || !cfg.Provision {
			t.Errorf("%s: WXCANCEL_REPLICAS %d, WXCANCEL_PROVISION %v: the instances provision R3 streams", name, cfg.Replicas, cfg.Provision)
		}
		var hosts []string
		for _, u := range cfg.NATS.URLs {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			hosts = append(hosts, pu.Hostname())
		}
		slices.Sort(hosts)
		if !slices.Equal(hosts, natsNodes) {
			t.Errorf("%s: NATS_URL names %v, the nodes are %v", name, hosts, natsNodes)
		}
		// The NKey seed is the service user's.
		seedPath := s.Environment["NATS_NKEY_SEED_FILE"]
		ok := false
		for _, sec := range s.Secrets {
			if "/run/secrets/"+sec.Target == seedPath {
				seed, err := os.ReadFile(filepath.Join("compose", p.Secrets[sec.Source].File))
				if err != nil {
					t.Fatal(err)
				}
				kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
				if err != nil {
					t.Fatal(err)
				}
				pub, _ := kp.PublicKey()
				ok = pub == dev[envServiceNKey]
			}
		}
		if !ok {
			t.Errorf("%s: NATS_NKEY_SEED_FILE %s is not the service user's seed", name, seedPath)
		}
		// The simulator over loopback, its keys from its volume, its
		// identity the instances'.
		if s.NetworkMode != "service:sim" {
			t.Errorf("%s: reaches the plain-HTTP simulator on loopback only in the simulator's network namespace", name)
		}
		for env, file := range map[string]string{"WXPAY_PRIVATE_KEY_FILE": "apiclient_key.pem", "WXPAY_PUBLIC_KEY_FILE": "pub_key.pem"} {
			want := ""
			for _, v := range s.Volumes {
				src, target, _ := strings.Cut(v, ":")
				if src == simVolume {
					target, _, _ = strings.Cut(target, ":")
					want = path.Join(target, simKeys, file)
				}
			}
			if s.Environment[env] != want {
				t.Errorf("%s: %s=%s, the simulator writes %s", name, env, s.Environment[env], want)
			}
		}
		for env, fl := range map[string]string{"WXPAY_MCHID": "mchid", "WXPAY_CERT_SERIAL_NO": "cert-serial-no", "WXPAY_PUBLIC_KEY_ID": "public-key-id"} {
			if s.Environment[env] != flagValue(sim.Command, fl) {
				t.Errorf("%s: %s=%s, the simulator's --%s=%s", name, env, s.Environment[env], fl, flagValue(sim.Command, fl))
			}
		}
		_, port, _ := net.SplitHostPort(cfg.HTTPAddr)
		if ports[port] {
			t.Errorf("%s: port %s taken by the other instance (they share a network namespace)", name, port)
		}
		ports[port] = true
		if !slices.ContainsFunc(sim.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
			t.Errorf("%s: its metrics port %s is not published", name, port)
		}
		grace, err := time.ParseDuration(s.StopGrace)
		if err != nil || grace <= cfg.ShutdownTimeout {
			t.Errorf("%s: stop_grace_period %q must exceed WXCANCEL_SHUTDOWN_TIMEOUT %s", name, s.StopGrace, cfg.ShutdownTimeout)
		}
	}
	for name, s := range p.Services {
		if slices.Contains(natsNodes, name) {
			continue
		}
		if !s.ReadOnly || s.User == "" || strings.HasPrefix(s.User, "0") || !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: want read_only, a non-root user and cap_drop ALL", name)
		}
	}
}
