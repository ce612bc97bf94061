package main

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/internal/settings"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// cli runs one subcommand in-process and returns its exit code and output.
func cli(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr syncBuffer
	code := run(t.Context(), &app{stdout: &stdout, stderr: &stderr, getenv: envFunc(env)}, args)
	return code, stdout.String(), stderr.String()
}

func TestDemo(t *testing.T) {
	code, out, errOut := cli(t, nil, "demo")
	if code != exitOK {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"succeeded validate-cancel id=demo-validate attempts=3",
		"succeeded apply-cancel-withdraw id=demo-apply attempts=1",
		"status  cancel-withdraw/2000001000000123 (new) → WAITING_MERCHANT_CONFIRM",
		"succeeded confirm-cancel id=demo-confirm",
		"status  cancel-withdraw/2000001000000123 WAITING_MERCHANT_CONFIRM → SYSTEM_PROCESSING",
		"succeeded query-cancel-application id=demo-old-flow",
		"succeeded track id=demo-track",
		"succeeded untrack id=demo-untrack",
		"succeeded cancel-applyment id=demo-cancel-applyment",
		"rejected  confirm-cancel id=demo-invalid attempts=0 INVALID_COMMAND",
		"confirm_time: ",
		"REVIEWING → WAITING_MERCHANT_CONFIRM",
		"succeeded confirm-cancel id=demo-confirm-tracked",
		"FUND_PROCESSING/WITHDRAW_PROCESSING → FUND_PROCESSING/WITHDRAW_SUCCEED",
		"FUND_PROCESSING/WITHDRAW_SUCCEED → FINISH/WITHDRAW_SUCCEED",
		"WAITING_MERCHANT_CONFIRM → REVOKED",
		"tracking ended: final (FINISH/WITHDRAW_SUCCEED)",
		"tracking ended: final (REVOKED)",
		"every command and every tracking ended as expected",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, typ := range schemas.Types() { // the contract: one command of every type
		if !regexp.MustCompile(`(succeeded|rejected|failed)\s+` + regexp.QuoteMeta(string(typ)) + ` id=`).MatchString(out) {
			t.Errorf("the demo sends no %s command", typ)
		}
	}
	for _, secret := range []string{"6222021234567890123", "PRIVATE KEY"} {
		if strings.Contains(errOut, secret) {
			t.Errorf("demo logs show %q", secret)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour codes written to a non-terminal")
	}
}

func TestSendWait(t *testing.T) {
	srv := startServe(t, wxpaysim.Options{AutoCreate: true}, nil)
	sim, env := srv.sim, srv.clientEnv()

	code, out, errOut := cli(t, env, "send", "validate-cancel", "--data", `{"sub_mchid":"1900000109"}`, "--id", "send-1", "--wait", "--timeout", "30s")
	if code != exitOK || !strings.Contains(out, `"type": "wxpay.validate-cancel.succeeded"`) {
		t.Fatalf("send --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	// Re-sent: answered from the record, WeChat Pay not called again.
	code, out, _ = cli(t, env, "send", "validate-cancel", "--data", `{"sub_mchid":"1900000109"}`, "--id", "send-1", "--wait")
	if code != exitOK || !strings.Contains(out, `"subject": "send-1"`) || sim.Count(wxpaysim.EndpointValidateCancel) != 1 {
		t.Errorf("re-send: exit %d, %d requests\n%s", code, sim.Count(wxpaysim.EndpointValidateCancel), out)
	}
	// A failed command exits 1.
	if err := sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.BadSignature}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = cli(t, env, "send", "validate-cancel", "--data", `{"sub_mchid":"1900000110"}`, "--wait")
	if code != exitFailure || !strings.Contains(out, "RESPONSE_SIGNATURE_INVALID") {
		t.Errorf("failed command: exit %d\n%s", code, out)
	}

	file := filepath.Join(t.TempDir(), "cmd.json")
	if err := os.WriteFile(file, []byte(`{"sub_mchid":"1900000109","extra":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The commands stream's last sequence shows whether anything was
	// published (an invalid command that got through would be answered
	// rejected, without a request to WeChat Pay).
	lastSeq := func() uint64 {
		_, _, s := commandsStream(t, env["NATS_URL"])
		return s.CachedInfo().State.LastSeq
	}
	before := lastSeq()
	for _, args := range [][]string{
		{"send", "validate-cancel", "--data", `{"sub_mchid":`},
		{"send", "validate-cancel", "--file", file},
		{"send", "no-such-type", "--data", `{}`},
		{"send", "validate-cancel", "--data", `{"sub_mchid":"1900000109"}`, "--id", "bad id"},
		{"send", "validate-cancel"},
	} {
		code, out, errOut := cli(t, env, args...)
		if code != exitUsage || errOut == "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if _, _, errOut := cli(t, env, "send", "validate-cancel", "--file", file); !strings.Contains(errOut, "extra") {
		t.Errorf("the schema's message does not name the field: %s", errOut)
	}
	if after := lastSeq(); after != before {
		t.Errorf("%d invalid commands were published", after-before)
	}
}

func TestEventsSince(t *testing.T) {
	env := startServe(t, wxpaysim.Options{AutoCreate: true}, nil).clientEnv()
	if code, out, errOut := cli(t, env, "send", "query-cancel-application", "--data", `{"out_apply_no":"OA1"}`, "--id", "ev-1", "--wait"); code != exitOK {
		t.Fatalf("send: %d %s %s", code, out, errOut)
	}
	code, out, errOut := cli(t, env, "events", "--since", "1h", "--limit", "2")
	if code != exitOK {
		t.Fatalf("events: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "cancel-application/OA1 (new) → REVIEWING") ||
		!strings.Contains(lines[1], "succeeded query-cancel-application id=ev-1 attempts=1") {
		t.Errorf("events output:\n%s", out)
	}
	code, out, _ = cli(t, env, "events", "--json", "--since", "1h", "--limit", "1", "*.succeeded")
	if code != exitOK || !strings.HasPrefix(out, `{"specversion":"1.0","id":"outcome/ev-1"`) {
		t.Errorf("events --json: %d\n%s", code, out)
	}
}

func TestDLQReplay(t *testing.T) {
	srv := startServe(t, wxpaysim.Options{AutoCreate: true}, map[string]string{
		"WXCANCEL_MAX_DELIVER": "2", "WXCANCEL_REDELIVERY_DELAY": "10ms",
		"WXPAY_RETRY_INITIAL_INTERVAL": "5ms", "WXPAY_RETRY_MAX_INTERVAL": "10ms", "WXPAY_RETRY_MAX_ELAPSED": "50ms",
	})
	sim, env := srv.sim, srv.clientEnv()
	if err := sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointQueryCancelWithdraw}); err != nil {
		t.Fatal(err)
	}
	code, out, _ := cli(t, env, "send", "query-cancel-withdraw", "--data", `{"applyment_id":"A1"}`, "--id", "dl-1", "--wait")
	if code != exitFailure || !strings.Contains(out, "SYSTEM_ERROR") {
		t.Fatalf("send: exit %d\n%s", code, out)
	}
	code, out, _ = cli(t, env, "dlq", "list")
	if code != exitOK || !strings.Contains(out, "query-cancel-withdraw") || !strings.Contains(out, "dl-1") || !strings.Contains(out, "SYSTEM_ERROR") {
		t.Fatalf("dlq list: %d\n%s", code, out)
	}
	code, out, _ = cli(t, env, "dlq", "show", "1")
	if code != exitOK || !strings.Contains(out, "Wxcancel-Deliveries: 2") || !strings.Contains(out, `{"applyment_id":"A1"}`) {
		t.Errorf("dlq show: %d\n%s", code, out)
	}
	// Inside the duplicate window the replay is refused with the reason.
	code, _, errOut := cli(t, env, "dlq", "replay", "1")
	if code != exitFailure || !strings.Contains(errOut, "duplicate window") {
		t.Errorf("replay inside the window: %d %s", code, errOut)
	}

	nc, js, s := commandsStream(t, env["NATS_URL"])
	if err := sim.SetFaults(); err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("wxpay.evt.query-cancel-withdraw.succeeded")
	if err != nil {
		t.Fatal(err)
	}
	// With the window shortened, replay until the stream has forgotten the
	// id (it forgets on a timer that each configuration update fires).
	// (as the consumer tests' untilAccepted: a change of the window fires
	// the purge, which may still run with the old window).
	cfg := s.CachedInfo().Config
	var updated time.Time
	poll.True(t, 30*time.Second, "the commands stream to forget the id", func() bool {
		if time.Since(updated) > 500*time.Millisecond {
			if cfg.Duplicates == 100*time.Millisecond {
				cfg.Duplicates = 150 * time.Millisecond
			} else {
				cfg.Duplicates = 100 * time.Millisecond
			}
			if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
				t.Fatal(err)
			}
			updated = time.Now()
		}
		code, out, errOut = cli(t, env, "dlq", "replay", "--all")
		return code == exitOK || !strings.Contains(errOut, "duplicate window")
	})
	if code != exitOK || !strings.Contains(out, "replayed seq 1: query-cancel-withdraw dl-1") {
		t.Fatalf("replay: %d %s %s", code, out, errOut)
	}
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"id":"outcome/dl-1/replay-1"`) {
		t.Fatalf("replayed outcome: %v %s", err, m.Data)
	}
	if code, out, _ := cli(t, env, "dlq", "purge", "1"); code != exitOK || !strings.Contains(out, "purged seq 1") {
		t.Errorf("purge: %d %s", code, out)
	}
	if code, out, _ := cli(t, env, "dlq", "list"); code != exitOK || !strings.Contains(out, "no dead letters") {
		t.Errorf("list after purge: %d %s", code, out)
	}
	for _, args := range [][]string{{"dlq"}, {"dlq", "frobnicate"}, {"dlq", "replay"}, {"dlq", "replay", "1", "--all"}, {"dlq", "show", "x"}} {
		if code, _, _ := cli(t, env, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

func TestSimCommand(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	r, w, _ := os.Pipe()
	exit := make(chan int, 1)
	go func() {
		// Every interface, as in the help's example: serve.env must still
		// name a loopback URL, the only plain http:// serve accepts.
		exit <- run(ctx, &app{stdout: w, stderr: w, getenv: envFunc(nil)}, []string{"sim", "--addr", ":0", "--keys-dir", dir, "--faults", "system_error@confirm-cancel:times=1",
			"--cert-serial-no", "3775B6A45ACD588826D15E583A95F5DD2C6B1E1A", "--public-key-id", "PUB_KEY_ID_0119000000012026120100000000000"})
		w.Close()
	}()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "WeChat Pay simulator on http://127.0.0.1:") {
		t.Fatalf("first line %q, %v", line, err)
	}
	env, err := os.ReadFile(filepath.Join(dir, "serve.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"WXPAY_MCHID=", "WXPAY_CERT_SERIAL_NO=", "WXPAY_PRIVATE_KEY_FILE=", "WXPAY_PUBLIC_KEY_ID=PUB_KEY_ID_0119000000012026120100000000000", "WXPAY_CERT_SERIAL_NO=3775B6A45ACD588826D15E583A95F5DD2C6B1E1A", "WXPAY_PUBLIC_KEY_FILE=", "WXPAY_BASE_URL=http://127.0.0.1:"} {
		if !strings.Contains(string(env), k) {
			t.Errorf("serve.env lacks %s:\n%s", k, env)
		}
	}
	// What it wrote is a valid serve configuration.
	cfg := settings.Default()
	vars := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		vars[k] = v
	}
	cfg.Bind(newFlagSet(&app{stderr: &syncBuffer{}}, "x", ""), envFunc(vars))
	if err := cfg.Validate(); err != nil {
		t.Errorf("serve.env does not validate: %v", err)
	}
	if _, err := cfg.ClientConfig(); err != nil {
		t.Errorf("serve.env keys do not load: %v", err)
	}
	cancel()
	if c := <-exit; c != exitOK {
		t.Errorf("sim exited %d", c)
	}
	if code, _, errOut := cli(t, nil, "sim", "--faults", "nonsense"); code != exitUsage || !strings.Contains(errOut, "--faults") {
		t.Errorf("bad faults: %d %s", code, errOut)
	}
	if code, _, errOut := cli(t, nil, "sim", "--public-key-id", "KEY1"); code != exitUsage || !strings.Contains(errOut, "PUB_KEY_ID_") {
		t.Errorf("bad key id: %d %s", code, errOut)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, c := range subcommands() {
		code, out, errOut := cli(t, nil, c.name, "-h")
		if code != exitOK {
			t.Errorf("%s -h: exit %d", c.name, code)
		}
		if c.name != "version" && !strings.Contains(errOut+out, "Example") {
			t.Errorf("%s -h has no examples:\n%s", c.name, errOut+out)
		}
	}
	if code, out, _ := cli(t, nil, "version"); code != exitOK || !strings.HasPrefix(out, "wxcancel ") || !strings.Contains(out, "\nsigner: "+wxpay.SignerBackend()+"\n") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, errOut := cli(t, nil, "frobnicate"); code != exitUsage || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: %d %s", code, errOut)
	}
}

// commandsStream connects to the NATS server at url (for the rest of the
// test) and returns the connection, its JetStream context and the commands
// stream, whose CachedInfo is current.
func commandsStream(t *testing.T, url string) (*nats.Conn, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), "WXPAY_COMMANDS")
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, s
}

func TestTrackCommand(t *testing.T) {
	srv := startServe(t, wxpaysim.Options{AutoCreate: true}, nil)
	env := srv.clientEnv()
	if code, out, errOut := cli(t, env, "track", "add", "--applyment-id", "A1"); code != exitOK || !strings.Contains(out, "tracked; WeChat Pay answered cancel_state WAITING_MERCHANT_CONFIRM") {
		t.Fatalf("track add: %d %s %s", code, out, errOut)
	}
	done := srv.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: "1900000109", State: wxpay.CancelRevoked})
	if code, out, errOut := cli(t, env, "track", "add", "--applyment-id", done.ApplymentID); code != exitOK || !strings.Contains(out, "not tracked: WeChat Pay answered cancel_state REVOKED") {
		t.Errorf("track add of a revoked application: %d %s %s", code, out, errOut)
	}
	code, out, _ := cli(t, env, "track", "list")
	if code != exitOK || !strings.Contains(out, "RESOURCE") || !regexp.MustCompile(`cancel-withdraw\s+A1\s+WAITING_MERCHANT_CONFIRM`).MatchString(out) {
		t.Errorf("track list: %d\n%s", code, out)
	}
	code, out, _ = cli(t, env, "track", "list", "--json")
	if code != exitOK || !strings.Contains(out, `"resource":"cancel-withdraw","key":"A1"`) {
		t.Errorf("track list --json: %d\n%s", code, out)
	}
	if code, out, _ := cli(t, env, "track", "remove", "--applyment-id", "A1"); code != exitOK || !strings.Contains(out, "no longer tracked") {
		t.Errorf("track remove: %d %s", code, out)
	}
	if code, out, _ := cli(t, env, "track", "remove", "--applyment-id", "A1"); code != exitOK || !strings.Contains(out, "was not tracked") {
		t.Errorf("track remove again: %d %s", code, out)
	}
	if code, out, _ := cli(t, env, "track", "list"); code != exitOK || !strings.Contains(out, "nothing is tracked") {
		t.Errorf("track list after remove: %d %s", code, out)
	}
	for _, args := range [][]string{{"track"}, {"track", "frob"}, {"track", "add"}, {"track", "add", "--applyment-id", "A1", "--out-apply-no", "O1"}, {"track", "add", "--applyment-id", "a.b"}} {
		if code, _, _ := cli(t, env, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
