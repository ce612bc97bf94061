package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/internal/embeddednats"
	"github.com/wxcancel/wxcancel/internal/settings"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

const demoHelp = `Usage: wxcancel demo [--verbose]

Runs everything in one process, with no configuration and no network beyond
loopback: an embedded JetStream server, the WeChat Pay simulator with
generated keys, and the service itself. It sends one command of every type
(plus one that is invalid, and one that meets a transient SYSTEM_ERROR and
recovers), prints each outcome and status event, and exits 0 when every
command ended as expected. Its data lives in a temporary directory that is
removed at exit.

Examples:
  wxcancel demo
  wxcancel demo --verbose   # with the service's own logs

Flags:
`

// demoStep is one command of the demo and the outcome it must reach.
type demoStep struct {
	ctype, id, note string
	body            string
	want            schemas.Outcome
}

const demoSubMchid = "1900000109"

func demoSteps() []demoStep {
	return []demoStep{
		{"validate-cancel", "demo-validate", "WeChat Pay answers SYSTEM_ERROR twice first; the service retries",
			`{"sub_mchid":"` + demoSubMchid + `"}`, schemas.Succeeded},
		{"apply-cancel-withdraw", "demo-apply", "bank account and payee identity are encrypted before sending",
			`{"sub_mchid":"` + demoSubMchid + `","out_request_no":"DEMO20261201001","withdraw":"APPLY_WITHDRAW",` +
				`"payee_info":{"account_type":"ACCOUNT_TYPE_CORPORATE","bank_account_info":{"account_name":"深圳某某科技有限公司",` +
				`"account_bank":"工商银行","bank_name":"中国工商银行股份有限公司深圳分行","account_number":"6222021234567890123"}}}`,
			schemas.Succeeded},
		{"query-cancel-withdraw", "demo-query-1", "an application awaiting the merchant's confirmation",
			`{"applyment_id":"2000001000000123"}`, schemas.Succeeded},
		{"confirm-cancel", "demo-confirm", "",
			`{"applyment_id":"2000001000000123","sub_mchid":"` + demoSubMchid + `","operator_identification":"运营张三01",` +
				`"confirm_time":"2026-12-01T10:00:00+08:00","cancel_contract_version":"V20241213"}`, schemas.Succeeded},
		{"query-cancel-withdraw", "demo-query-2", "the confirmation moved the application on",
			`{"applyment_id":"2000001000000123"}`, schemas.Succeeded},
		{"query-cancel-application", "demo-old-flow", "an application of the old cancellation flow",
			`{"out_apply_no":"DEMOOLD0001"}`, schemas.Succeeded},
		{"cancel-applyment", "demo-cancel-applyment", "WeChat Pay answers 204 No Content",
			`{"business_code":"1900013511_10000"}`, schemas.Succeeded},
		{"confirm-cancel", "demo-invalid", "invalid: confirm_time is not RFC 3339; nothing is sent to WeChat Pay",
			`{"applyment_id":"2000001000000123","sub_mchid":"` + demoSubMchid + `","operator_identification":"运营张三01",` +
				`"confirm_time":"yesterday","cancel_contract_version":"V20241213"}`, schemas.Rejected},
	}
}

func runDemo(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "demo", demoHelp)
	verbose := fs.Bool("verbose", false, "also print the service's logs (info level) on stderr")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	dir, err := os.MkdirTemp("", "wxcancel-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ns, err := embeddednats.Start("127.0.0.1", -1, filepath.Join(dir, "nats"))
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	sim, err := startSim(wxpaysim.Options{}, "system_error@validate-cancel/"+demoSubMchid+":times=2", "1900000001", "", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer sim.srv.Close()
	baseURL := sim.baseURL
	files, err := sim.WriteKeys(filepath.Join(dir, "keys"), sim.merchant)
	if err != nil {
		return err
	}

	cfg := settings.Default()
	cfg.NATS.URLs = []string{ns.ClientURL()}
	cfg.MchID, cfg.CertSerialNo, cfg.PrivateKeyFile = files.MchID, files.CertSerialNo, files.PrivateKeyFile
	cfg.PublicKeyID, cfg.PublicKeyFile = files.PublicKeyID, files.PublicKeyFile
	cfg.BaseURL, cfg.BackupBaseURL = baseURL, "-"
	cfg.RetryInitialInterval, cfg.RetryMaxInterval, cfg.RetryMaxElapsed = 100*time.Millisecond, time.Second, 10*time.Second
	cfg.HTTPAddr = "-"
	cfg.ShutdownTimeout = 5 * time.Second

	level := "error"
	if *verbose {
		level = "info"
	}
	log, closeLog, err := newLogger(logOptions{level: level, w: a.stderr, text: true})
	if err != nil {
		return err
	}
	defer closeLog()

	colour := isTerminalWriter(a.stdout)
	fmt.Fprintf(a.stdout, "wxcancel demo: embedded JetStream %s, WeChat Pay simulator %s (key %s)\n",
		ns.ClientURL(), baseURL, sim.PublicKeyID())

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var scriptErr error
	hooks := &serveHooks{started: func(_ *consumer.Service, js jetstream.JetStream) {
		scriptErr = demoScript(runCtx, a, js, cfg.Prefix, colour)
		stop()
	}}
	if err := serve(runCtx, cfg, log, hooks); err != nil {
		return err
	}
	if scriptErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if scriptErr == nil {
		fmt.Fprintf(a.stdout, "\nWeChat Pay received %d requests; every command ended as expected.\n", sim.Total())
	}
	return scriptErr
}

// demoScript sends the demo's commands one after the other and prints every
// event until each command's outcome has arrived.
func demoScript(ctx context.Context, a *app, js jetstream.JetStream, prefix string, colour bool) error {
	events := make(chan *nats.Msg, 256)
	sub, err := js.Conn().ChanSubscribe(prefix+".evt.>", events)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	var failures []string
	for _, st := range demoSteps() {
		fmt.Fprintf(a.stdout, "\n→ %s %s\n", st.ctype, st.body)
		if st.note != "" {
			fmt.Fprintf(a.stdout, "  (%s)\n", st.note)
		}
		msg := nats.NewMsg(prefix + ".cmd." + st.ctype)
		msg.Data = []byte(st.body)
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(st.id)); err != nil {
			return fmt.Errorf("publishing %s: %w", st.id, err)
		}
		outcome, err := awaitOutcome(ctx, a, events, st.id, colour)
		if err != nil {
			return err
		}
		if outcome != st.want {
			failures = append(failures, fmt.Sprintf("%s: %s, expected %s", st.id, outcome, st.want))
		}
	}
	if len(failures) > 0 {
		return errors.New("unexpected outcomes:\n  " + strings.Join(failures, "\n  "))
	}
	return nil
}

// awaitOutcome prints events as they come until the outcome of command id.
func awaitOutcome(ctx context.Context, a *app, events <-chan *nats.Msg, id string, colour bool) (schemas.Outcome, error) {
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-timeout.C:
			return "", fmt.Errorf("no outcome for %s within a minute", id)
		case m := <-events:
			fmt.Fprintln(a.stdout, "  "+strings.ReplaceAll(formatEvent(m.Data, colour), "\n", "\n  "))
			var ev publisher.Event
			if json.Unmarshal(m.Data, &ev) == nil && ev.Outcome() != "" && ev.Subject == id {
				return ev.Outcome(), nil
			}
		}
	}
}
