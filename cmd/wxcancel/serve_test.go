package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/internal/embeddednats"
	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// syncBuffer is a bytes.Buffer safe for a running subcommand and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func envFunc(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// simEnv starts a simulator over HTTP and returns the environment a serve
// needs to talk to it.
func simEnv(t *testing.T, o wxpaysim.Options) (*wxpaysim.Server, map[string]string) {
	t.Helper()
	sim, err := wxpaysim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	m, err := wxpaysim.NewMerchant("1900000001")
	if err != nil {
		t.Fatal(err)
	}
	sim.RegisterMerchant(m)
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)
	files, err := sim.WriteKeys(t.TempDir(), m)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"WXPAY_BASE_URL": hs.URL, "WXPAY_BACKUP_BASE_URL": "-"}
	for _, kv := range files.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return sim, env
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServeReportsEveryConfigurationProblem(t *testing.T) {
	dir := t.TempDir()
	// A private key given where the public key belongs: the error must
	// name the file, never print its content.
	_, env := simEnv(t, wxpaysim.Options{})
	key, _ := os.ReadFile(env["WXPAY_PRIVATE_KEY_FILE"])
	env["WXPAY_PUBLIC_KEY_FILE"] = env["WXPAY_PRIVATE_KEY_FILE"]
	env["WXPAY_MCHID"] = "19x"
	env["WXPAY_BASE_URL"] = "http://api.example.com"
	env["WXCANCEL_CONCURRENCY"] = "0"
	env["WXCANCEL_MAX_DELIVER"] = "many"
	env["WXCANCEL_EMBEDDED_STORE_DIR"] = filepath.Join(dir, "nats")
	env["WXCANCEL_LOG_LEVEL"] = "chatty"
	env["WXCANCEL_LOG_FILE"] = filepath.Join(dir, "no-such-dir", "wxcancel.log")
	var stdout, stderr syncBuffer
	code := run(t.Context(), &app{stdout: &stdout, stderr: &stderr, getenv: envFunc(env)}, []string{"serve"})
	if code != exitUsage {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
	}
	out := stderr.String()
	for _, want := range []string{"WXPAY_MCHID", "WXPAY_BASE_URL", "WXCANCEL_CONCURRENCY", "WXCANCEL_MAX_DELIVER", "WXPAY_PUBLIC_KEY_FILE", "WXCANCEL_LOG_LEVEL"} {
		if !strings.Contains(out, want) {
			t.Errorf("the message does not name %s:\n%s", want, out)
		}
	}
	block := strings.Split(string(key), "\n")[1]
	if strings.Contains(out, block) || strings.Contains(out, "PRIVATE KEY-----") {
		t.Errorf("key material in the error message:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "nats")); err == nil {
		t.Error("an invalid configuration still started an embedded server")
	}
}

// served is a serve subcommand running in-process against an embedded
// NATS server and the simulator.
type served struct {
	ns     *server.Server
	sim    *wxpaysim.Server
	addr   string // of the ops HTTP server
	stderr *syncBuffer
	exit   chan int
	cancel context.CancelFunc
}

// startServe runs serve against an embedded NATS server and a simulator
// made with o, with extra added to their environment, until the test ends
// (when it must exit 0), and waits for it to be ready.
func startServe(t *testing.T, o wxpaysim.Options, extra map[string]string) *served {
	t.Helper()
	ns, err := embeddednats.Start("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	sim, senv := simEnv(t, o)
	s := &served{ns: ns, sim: sim, addr: freeAddr(t), stderr: &syncBuffer{}, exit: make(chan int, 1)}
	senv["NATS_URL"] = ns.ClientURL()
	senv["WXCANCEL_HTTP_ADDR"] = s.addr
	for k, v := range extra {
		senv[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		s.exit <- run(ctx, &app{stdout: &syncBuffer{}, stderr: s.stderr, getenv: envFunc(senv)}, []string{"serve"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case c := <-s.exit:
			if c != exitOK {
				t.Errorf("serve exited %d:\n%s", c, s.stderr.String())
			}
		case <-time.After(40 * time.Second):
			t.Error("serve did not stop")
		}
	})
	poll.Until(t, 30*time.Second, "/readyz to answer 200", func() error {
		select {
		case c := <-s.exit:
			t.Fatalf("serve exited %d before it was ready:\n%s", c, s.stderr.String())
		default:
		}
		if code, body := s.get("/readyz"); code != http.StatusOK {
			return fmt.Errorf("%d %s\n%s", code, body, s.stderr.String())
		}
		return nil
	})
	return s
}

// clientEnv is the environment of a client of the served NATS server.
func (s *served) clientEnv() map[string]string {
	return map[string]string{"NATS_URL": s.ns.ClientURL()}
}

// get requests path from the ops HTTP server.
func (s *served) get(path string) (int, string) {
	resp, err := http.Get("http://" + s.addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stop shuts serve down, as SIGTERM does, and returns its exit code.
func (s *served) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case c := <-s.exit:
		s.exit <- c // for the cleanup
		return c
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not stop")
	}
	return -1
}

// validate sends a validate-cancel command with id and header (nil: none)
// and returns its outcome event.
func (s *served) validate(t *testing.T, id string, header nats.Header) *nats.Msg {
	t.Helper()
	nc, err := nats.Connect(s.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	sub, err := nc.SubscribeSync("wxpay.evt.validate-cancel.>")
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("wxpay.cmd.validate-cancel")
	for k, v := range header {
		msg.Header[k] = v
	}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Data = []byte(`{"sub_mchid":"1900000109"}`)
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	ev, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no outcome event: %v\n%s", err, s.stderr.String())
	}
	return ev
}

// TestServe runs the serve subcommand against a NATS server and the
// simulator: it becomes ready, executes a command, exposes metrics and
// exits 0 on shutdown.
func TestServe(t *testing.T) {
	s := startServe(t, wxpaysim.Options{AutoCreate: true}, nil)
	sim, get, stderr := s.sim, s.get, s.stderr
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %s", code, body)
	}

	ev := s.validate(t, "serve-1", nil)
	var ce struct {
		Type    string `json:"type"`
		Subject string `json:"subject"`
	}
	if err := json.Unmarshal(ev.Data, &ce); err != nil || ce.Type != "wxpay.validate-cancel.succeeded" || ce.Subject != "serve-1" {
		t.Errorf("outcome event %s (%v)", ev.Data, err)
	}
	if n := sim.Count(wxpaysim.EndpointValidateCancel); n != 1 {
		t.Errorf("WeChat Pay saw %d requests", n)
	}

	// The event can reach this subscriber before the service has recorded
	// how long its publication took: read /metrics until it has it all.
	wants := []string{
		`wxcancel_commands_total{outcome="succeeded",type="validate-cancel"} 1`,
		`wxcancel_wxpay_requests_total{endpoint="validate-cancel",status="200"} 1`,
		`wxcancel_wxpay_request_duration_seconds_count{endpoint="validate-cancel"} 1`,
		`wxcancel_jetstream_duration_seconds_count{step="outcome_read"} 1`,
		`wxcancel_jetstream_duration_seconds_count{step="status"} 1`,
		`wxcancel_jetstream_duration_seconds_count{step="outcome_write"} 1`,
		`wxcancel_jetstream_duration_seconds_count{step="event_publish"} 1`,
		"process_resident_memory_bytes",
	}
	poll.Until(t, 10*time.Second, "/metrics to show the command", func() error {
		_, metrics := get("/metrics")
		var missing []string
		for _, want := range wants {
			if !strings.Contains(metrics, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("/metrics lacks %s", strings.Join(missing, ", "))
		}
		return nil
	})

	if c := s.stop(t); c != exitOK {
		t.Errorf("serve exited %d after SIGTERM-like shutdown:\n%s", c, stderr.String())
	}
	logs := stderr.String()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
		}
	}
	if !strings.Contains(logs, `"command_id":"serve-1"`) || !strings.Contains(logs, `"msg":"drained"`) {
		t.Errorf("logs lack the command or the drain:\n%s", logs)
	}
}
