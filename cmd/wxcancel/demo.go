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
recovers), then shows lifecycle tracking: the simulator moves applications
on by themselves, every half second, and the service polls them and
publishes every step with no command sent, following one application from
its submission through its confirmation to FINISH and another, left
unconfirmed, until WeChat Pay revokes it. It prints every outcome, status
and tracking event and exits 0 when everything ended as expected. Its data
lives in a temporary directory that is removed at exit.

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

const (
	demoSubMchid        = "1900000109"
	demoTrackedSubMchid = "1900000110" // its application is followed to FINISH
	demoRevokedSubMchid = "1900000111" // its application is left unconfirmed
)

// The simulator's pace in the demo, and the service's polls.
const (
	demoPace          = 500 * time.Millisecond
	demoRevokeAfter   = 6 * demoPace
	demoTrackInterval = 200 * time.Millisecond
)

func demoSteps() []demoStep {
	return []demoStep{
		{"validate-cancel", "demo-validate", "WeChat Pay answers SYSTEM_ERROR twice first; the service retries",
			`{"sub_mchid":"` + demoSubMchid + `"}`, schemas.Succeeded},
		{"apply-cancel-withdraw", "demo-apply", "bank account and payee identity are encrypted before sending; the service tracks the application from now on",
			`{"sub_mchid":"` + demoTrackedSubMchid + `","out_request_no":"DEMO20261201001","withdraw":"APPLY_WITHDRAW",` +
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
		{"track", "demo-track", "asks for that application to be tracked: queried at once, then polled until it is final",
			`{"out_apply_no":"DEMOOLD0001"}`, schemas.Succeeded},
		{"untrack", "demo-untrack", "ends that tracking: no request to WeChat Pay; the result says whether it was tracked",
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

	sim, err := startSim(wxpaysim.Options{Step: demoPace, RevokeAfter: demoRevokeAfter},
		"system_error@validate-cancel/"+demoSubMchid+":times=2", "1900000001", "", "127.0.0.1:0")
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
	cfg.TrackInterval, cfg.TrackMaxInterval, cfg.TrackRate = demoTrackInterval, 2*demoTrackInterval, 50

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
		fmt.Fprintf(a.stdout, "\nWeChat Pay received %d requests; every command and every tracking ended as expected.\n", sim.Total())
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
	var tracked string // the applyment id of demo-apply
	for _, st := range demoSteps() {
		ev, err := demoSend(ctx, a, js, events, prefix, st, colour)
		if err != nil {
			return err
		}
		if ev.Outcome() != st.want {
			failures = append(failures, fmt.Sprintf("%s: %s, expected %s", st.id, ev.Outcome(), st.want))
		}
		if st.id == "demo-apply" {
			tracked = applymentID(ev)
		}
	}
	if len(failures) > 0 {
		return errors.New("unexpected outcomes:\n  " + strings.Join(failures, "\n  "))
	}
	return demoTracking(ctx, a, js, events, prefix, tracked, colour)
}

// demoTracking shows lifecycle tracking: the application of demo-apply is
// followed, with no command sent, until it awaits confirmation, confirmed,
// and followed to FINISH; another one is followed until WeChat Pay revokes
// it unconfirmed.
func demoTracking(ctx context.Context, a *app, js jetstream.JetStream, events <-chan *nats.Msg, prefix, tracked string, colour bool) error {
	fmt.Fprintf(a.stdout, "\n— lifecycle tracking: the simulator moves applications on every %s; the service polls them and publishes every step —\n", demoPace)
	ev, err := demoSend(ctx, a, js, events, prefix, demoStep2("apply-cancel-withdraw", "demo-apply-unconfirmed", "an application nobody will confirm",
		`{"sub_mchid":"`+demoRevokedSubMchid+`","out_request_no":"DEMO20261201002"}`), colour)
	if err != nil {
		return err
	}
	revoked := applymentID(ev)
	if tracked == "" || revoked == "" {
		return errors.New("the applications have no applyment_id")
	}
	fmt.Fprintf(a.stdout, "\n  (waiting for cancel-withdraw/%s to await confirmation, with no command sent)\n", tracked)
	if _, err := awaitEvent(ctx, a, events, colour, "WAITING_MERCHANT_CONFIRM of cancel-withdraw/"+tracked, func(ev publisher.Event) bool {
		return ev.Subject == "cancel-withdraw/"+tracked && strings.Contains(string(ev.Data), `"state":"WAITING_MERCHANT_CONFIRM"`)
	}); err != nil {
		return err
	}
	ev, err = demoSend(ctx, a, js, events, prefix, demoStep2("confirm-cancel", "demo-confirm-tracked", "the tracked application is confirmed; polls show every step to FINISH",
		`{"applyment_id":"`+tracked+`","sub_mchid":"`+demoTrackedSubMchid+`","operator_identification":"运营张三01",`+
			`"confirm_time":"2026-12-01T10:00:00+08:00","cancel_contract_version":"V20241213"}`), colour)
	if err != nil {
		return err
	}
	if ev.Outcome() != schemas.Succeeded {
		return fmt.Errorf("demo-confirm-tracked: %s", ev.Outcome())
	}
	fmt.Fprintln(a.stdout, "\n  (waiting for both trackings to end)")
	want := map[string]string{"cancel-withdraw/" + tracked: `"state":"FINISH/WITHDRAW_SUCCEED"`, "cancel-withdraw/" + revoked: `"state":"REVOKED"`}
	for len(want) > 0 {
		ev, err := awaitEvent(ctx, a, events, colour, "end of the trackings", func(ev publisher.Event) bool {
			_, ok := want[ev.Subject]
			return ok && ev.Type == schemas.EventTypeTrackingEnded
		})
		if err != nil {
			return err
		}
		if !strings.Contains(string(ev.Data), want[ev.Subject]) || !strings.Contains(string(ev.Data), `"reason":"final"`) {
			return fmt.Errorf("the tracking of %s ended unexpectedly: %s", ev.Subject, ev.Data)
		}
		delete(want, ev.Subject)
	}
	return nil
}

func demoStep2(ctype, id, note, body string) demoStep {
	return demoStep{ctype: ctype, id: id, note: note, body: body, want: schemas.Succeeded}
}

// demoSend publishes the command of st and prints every event until its
// outcome.
func demoSend(ctx context.Context, a *app, js jetstream.JetStream, events <-chan *nats.Msg, prefix string, st demoStep, colour bool) (publisher.Event, error) {
	fmt.Fprintf(a.stdout, "\n→ %s %s\n", st.ctype, st.body)
	if st.note != "" {
		fmt.Fprintf(a.stdout, "  (%s)\n", st.note)
	}
	msg := nats.NewMsg(prefix + ".cmd." + st.ctype)
	msg.Data = []byte(st.body)
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(st.id)); err != nil {
		return publisher.Event{}, fmt.Errorf("publishing %s: %w", st.id, err)
	}
	return awaitEvent(ctx, a, events, colour, "outcome of "+st.id, func(ev publisher.Event) bool { return ev.Outcome() != "" && ev.Subject == st.id })
}

// applymentID is the applyment_id of a succeeded outcome's result.
func applymentID(ev publisher.Event) string {
	var data struct {
		Result struct {
			ApplymentID string `json:"applyment_id"`
		} `json:"result"`
	}
	_ = json.Unmarshal(ev.Data, &data)
	return data.Result.ApplymentID
}

// awaitEvent prints events as they come until one that done accepts, and
// returns it; what names the event awaited in the error of a minute without
// it.
func awaitEvent(ctx context.Context, a *app, events <-chan *nats.Msg, colour bool, what string, done func(publisher.Event) bool) (publisher.Event, error) {
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for {
		select {
		case <-ctx.Done():
			return publisher.Event{}, ctx.Err()
		case <-timeout.C:
			return publisher.Event{}, fmt.Errorf("no %s within a minute", what)
		case m := <-events:
			fmt.Fprintln(a.stdout, "  "+strings.ReplaceAll(formatEvent(m.Data, colour), "\n", "\n  "))
			var ev publisher.Event
			if json.Unmarshal(m.Data, &ev) == nil && done(ev) {
				return ev, nil
			}
		}
	}
}
