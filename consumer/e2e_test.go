package consumer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/consumer/deadletter"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

const subMchid = "1900000109"

func confirmBody(applymentID string) map[string]any {
	return map[string]any{
		"applyment_id": applymentID, "sub_mchid": subMchid, "operator_identification": "运营张三01",
		"confirm_time": "2026-12-01T10:00:00+08:00", "cancel_contract_version": "V20241213",
	}
}

// TestEveryCommandType runs one command of each type through the service
// and checks the request WeChat Pay received, the outcome event and the
// status events.
func TestEveryCommandType(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: "1900000110"})
	app := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm, OutRequestNo: "P100"})
	h.sim.PutCancelApplication(wxpaysim.CancelApplication{OutApplyNo: "OA100", SubMchid: subMchid})
	h.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: "1900013511_10000"})
	h.start("a")

	const accountNumber = "6222021234567890123"
	steps := []struct {
		id, ctype string
		body      any
		check     func(t *testing.T, e event, req wxpaysim.Request)
	}{
		{"v1", "validate-cancel", map[string]any{"sub_mchid": subMchid}, func(t *testing.T, e event, req wxpaysim.Request) {
			if req.Method != "GET" || req.URI != "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/"+subMchid {
				t.Errorf("request %s %s", req.Method, req.URI)
			}
			if r := e.result(); r["merchant_state"] != "NORMAL" || r["validate_result"] != "ALLOW_CANCEL_WITHDRAW" {
				t.Errorf("result %v", r)
			}
		}},
		{"q1", "query-cancel-withdraw", map[string]any{"applyment_id": app.ApplymentID}, func(t *testing.T, e event, req wxpaysim.Request) {
			if req.URI != "/v3/ecommerce/account/apply-cancel-withdraw/applyment-id/"+app.ApplymentID {
				t.Errorf("request %s %s", req.Method, req.URI)
			}
			if r := e.result(); r["cancel_state"] != "WAITING_MERCHANT_CONFIRM" {
				t.Errorf("result %v", r)
			}
		}},
		{"c1", "confirm-cancel", confirmBody(app.ApplymentID), func(t *testing.T, e event, req wxpaysim.Request) {
			if req.Method != "POST" || req.URI != "/v3/ecommerce/account/apply-cancel-withdraw/confirm" {
				t.Errorf("request %s %s", req.Method, req.URI)
			}
			for _, want := range []string{`"applyment_id":"` + app.ApplymentID + `"`, `"confirm_time":"2026-12-01T10:00:00+08:00"`, `"cancel_contract_version":"V20241213"`} {
				if !bytes.Contains(req.Body, []byte(want)) {
					t.Errorf("request body lacks %s: %s", want, req.Body)
				}
			}
			if a, _ := h.sim.CancelWithdraw(app.ApplymentID); a.State == wxpay.CancelWaitingMerchantConfirm {
				t.Errorf("the application is still %s after the confirmation", a.State)
			}
		}},
		{"q2", "query-cancel-withdraw", map[string]any{"out_request_no": "P100"}, func(t *testing.T, e event, req wxpaysim.Request) {
			if req.URI != "/v3/ecommerce/account/apply-cancel-withdraw/out-request-no/P100" {
				t.Errorf("request %s %s", req.Method, req.URI)
			}
		}},
		{"qa1", "query-cancel-application", map[string]any{"out_apply_no": "OA100"}, func(t *testing.T, e event, req wxpaysim.Request) {
			if req.URI != "/v3/ecommerce/account/cancel-applications/out-apply-no/OA100" {
				t.Errorf("request %s %s", req.Method, req.URI)
			}
			if r := e.result(); r["cancel_state"] != "REVIEWING" {
				t.Errorf("result %v", r)
			}
		}},
		{"ca1", "cancel-applyment", map[string]any{"business_code": "1900013511_10000"}, func(t *testing.T, e event, req wxpaysim.Request) {
			if req.Method != "POST" || req.URI != "/v3/apply4subject/applyment/1900013511_10000/cancel" {
				t.Errorf("request %s %s", req.Method, req.URI)
			}
			if r, ok := e.Data["result"]; !ok || r != nil {
				t.Errorf("result of a 204 = %v, want null", r)
			}
			if a, _ := h.sim.Applyment("1900013511_10000"); !a.Canceled {
				t.Error("the applyment is not cancelled")
			}
		}},
		{"ap1", "apply-cancel-withdraw", map[string]any{
			"sub_mchid": "1900000110", "out_request_no": "P200", "withdraw": "APPLY_WITHDRAW",
			"payee_info": map[string]any{"account_type": "ACCOUNT_TYPE_CORPORATE", "bank_account_info": map[string]any{
				"account_name": "深圳某某科技有限公司", "account_bank": "工商银行", "bank_name": "中国工商银行股份有限公司深圳分行", "account_number": accountNumber}},
		}, func(t *testing.T, e event, req wxpaysim.Request) {
			if req.Method != "POST" || req.URI != "/v3/ecommerce/account/apply-cancel-withdraw" {
				t.Errorf("request %s %s", req.Method, req.URI)
			}
			if bytes.Contains(req.Body, []byte(accountNumber)) || bytes.Contains(req.Body, []byte("深圳某某科技有限公司")) {
				t.Errorf("sensitive fields were sent in the clear: %s", req.Body)
			}
			id, _ := e.result()["applyment_id"].(string)
			stored, ok := h.sim.CancelWithdraw(id)
			if !ok || stored.Payee == nil || stored.Payee.BankAccountInfo == nil || stored.Payee.BankAccountInfo.AccountNumber != accountNumber {
				t.Errorf("WeChat Pay did not decrypt the payee: %+v (result %v)", stored.Payee, e.result())
			}
		}},
	}
	for _, st := range steps {
		before := len(h.sim.Requests())
		h.send(st.ctype, st.id, st.body)
		got := h.waitOutcomes(st.id)
		e := one(t, got, st.id)
		if e.Type != "wxpay."+st.ctype+".succeeded" || e.Subject != "wxpay.evt."+st.ctype+".succeeded" {
			t.Errorf("%s: event type %s on %s, want succeeded: %s", st.id, e.Type, e.Subject, e.Raw)
			continue
		}
		if e.attempts() != 1 || e.Data["command_type"] != st.ctype || e.Data["command_id"] != st.id {
			t.Errorf("%s: data %v", st.id, e.Data)
		}
		reqs := h.sim.Requests()
		if len(reqs) != before+1 {
			t.Fatalf("%s: %d WeChat Pay requests, want 1", st.id, len(reqs)-before)
		}
		st.check(t, e, reqs[before])
	}

	statuses := h.statuses()
	wantStates := map[string][]string{
		"merchant/" + subMchid:               {"NORMAL/ALLOW_CANCEL_WITHDRAW"},
		"cancel-withdraw/" + app.ApplymentID: {"WAITING_MERCHANT_CONFIRM", "SYSTEM_PROCESSING"},
		"cancel-application/OA100":           {"REVIEWING"},
		"applyment/1900013511_10000":         {"CANCELED"},
	}
	for key, want := range wantStates {
		var got []string
		for _, e := range statuses[key] {
			got = append(got, fmt.Sprint(e.Data["state"]))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("status events of %s: %v, want %v", key, got, want)
		}
	}
	if evs := statuses["cancel-withdraw/"+app.ApplymentID]; len(evs) == 2 && evs[1].Data["previous_state"] != "WAITING_MERCHANT_CONFIRM" {
		t.Errorf("second status event: previous_state %v", evs[1].Data["previous_state"])
	}
	if logs := h.logs.String(); strings.Contains(logs, accountNumber) || strings.Contains(logs, "运营张三01") {
		t.Error("personal data reached the logs")
	}
}

// TestRejections: every invalid command yields one rejected event naming
// the problem, and WeChat Pay never hears of it.
func TestRejections(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	h.start("a")
	huge := `{"sub_mchid":"` + strings.Repeat("1", 70<<10) + `"}`
	cases := []struct {
		id, ctype, body string
		field, rule     string
	}{
		{"r-json", "validate-cancel", `{"sub_mchid":`, "", ""},
		{"r-unknown-field", "validate-cancel", `{"sub_mchid":"1900000109","mchid":"1"}`, "mchid", "unknown_field"},
		{"r-type", "validate-cancel", `{"sub_mchid":1900000109}`, "sub_mchid", "type"},
		{"r-required", "confirm-cancel", `{"applyment_id":"X1"}`, "sub_mchid", "required"},
		{"r-trailing", "validate-cancel", `{"sub_mchid":"1900000109"} {}`, "", ""},
		{"r-utf8", "validate-cancel", "{\"sub_mchid\":\"19\xff\"}", "", ""},
		{"r-huge", "validate-cancel", huge, "", ""},
		{"r-path", "query-cancel-withdraw", `{"applyment_id":"../../v3/pay"}`, "applyment_id", "identifier"},
		{"r-both", "query-cancel-withdraw", `{"applyment_id":"A1","out_request_no":"P1"}`, "", ""},
		{"r-time", "confirm-cancel", `{"applyment_id":"X1","sub_mchid":"1900000109","operator_identification":"id","confirm_time":"2024-01-15","cancel_contract_version":"V1"}`, "confirm_time", "rfc3339"},
		{"r-unknown-type", "bogus", `{}`, "", ""},
		{"r-control-type", "bad\x01type", `{}`, "", ""},
		{"r-bad-id!", "validate-cancel", `{"sub_mchid":"1900000109"}`, "", "command_id"},
	}
	var ids []string
	for _, c := range cases {
		seq := h.send(c.ctype, c.id, c.body).Sequence
		if strings.HasSuffix(c.id, "!") {
			ids = append(ids, fmt.Sprintf("seq-%d", seq))
		} else {
			ids = append(ids, c.id)
		}
	}
	got := h.waitOutcomes(ids...)
	for i, c := range cases {
		e := one(t, got, ids[i])
		ctype := strings.Trim(strconv.QuoteToASCII(c.ctype), `"`) // as the service names an unprintable type
		token := schemas.EncodeToken(ctype)
		if e.Type != "wxpay."+token+".rejected" || e.Subject != "wxpay.evt."+token+".rejected" || e.Data["command_type"] != ctype {
			t.Errorf("%s: %s on %s, want rejected", c.id, e.Type, e.Subject)
			continue
		}
		if e.errorCode() != schemas.CodeInvalidCommand || e.attempts() != 0 {
			t.Errorf("%s: code %s, attempts %d", c.id, e.errorCode(), e.attempts())
		}
		errData, _ := e.Data["error"].(map[string]any)
		vs, _ := errData["violations"].([]any)
		if len(vs) == 0 {
			t.Errorf("%s: no violations: %s", c.id, e.Raw)
			continue
		}
		if c.rule != "" {
			found := false
			for _, v := range vs {
				v := v.(map[string]any)
				found = found || (v["field"] == c.field && v["rule"] == c.rule)
			}
			if !found {
				t.Errorf("%s: violations %v lack {%s %s}", c.id, vs, c.field, c.rule)
			}
		}
	}
	if n := h.sim.Total(); n != 0 {
		t.Errorf("WeChat Pay received %d requests for invalid commands", n)
	}
}

// TestTransientFailuresRetried: SYSTEM_ERROR and 429 are retried with a new
// signature each time until the command succeeds.
func TestTransientFailuresRetried(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	if err := h.sim.SetFaults(
		wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointValidateCancel, Times: 2},
		wxpaysim.Fault{Kind: wxpaysim.RateLimit, Endpoint: wxpaysim.EndpointQueryCancelApplication, Times: 1, RetryAfter: time.Millisecond},
	); err != nil {
		t.Fatal(err)
	}
	h.start("a")
	h.send("validate-cancel", "t1", map[string]any{"sub_mchid": subMchid})
	h.send("query-cancel-application", "t2", map[string]any{"out_apply_no": "OA1"})
	got := h.waitOutcomes("t1", "t2")
	for id, attempts := range map[string]int{"t1": 3, "t2": 2} {
		e := one(t, got, id)
		if e.outcome() != "succeeded" || e.attempts() != attempts {
			t.Errorf("%s: %s after %d attempts, want succeeded after %d: %s", id, e.outcome(), e.attempts(), attempts, e.Raw)
		}
	}
	// Each retry is signed afresh: the simulator refuses a reused nonce
	// with 401 SIGN_ERROR, which is never retried, so success after
	// retries proves it.
}

// TestRetriesExhaustedDeadLetter: a command that keeps meeting SYSTEM_ERROR
// is redelivered, then failed and copied to the dead-letter stream with the
// reason and its original headers.
func TestRetriesExhaustedDeadLetter(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	if err := h.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointQueryCancelWithdraw}); err != nil {
		t.Fatal(err)
	}
	h.start("a")
	msgBody := `{"applyment_id":"A1"}`
	// A header meant for the command's own publication, which the dead
	// letter's must not carry (the DLQ stream would refuse it).
	h.sendWith("query-cancel-withdraw", "d1", msgBody, nats.Header{jetstream.ExpectedStreamHeader: {"WXPAY_COMMANDS"}, "X-Trace": {"t1"}})
	h.send("validate-cancel", "d2", map[string]any{"sub_mchid": subMchid})
	got := h.waitOutcomes("d1", "d2")

	e := one(t, got, "d1")
	if e.outcome() != "failed" || e.errorCode() != "SYSTEM_ERROR" {
		t.Fatalf("d1: %s %s, want failed SYSTEM_ERROR: %s", e.outcome(), e.errorCode(), e.Raw)
	}
	calls := h.sim.Count(wxpaysim.EndpointQueryCancelWithdraw)
	if e.attempts() != calls || calls < h.cfg.MaxDeliver {
		t.Errorf("attempts %d, WeChat Pay saw %d requests, want ≥ %d (one delivery each at least)", e.attempts(), calls, h.cfg.MaxDeliver)
	}
	if e := one(t, got, "d2"); e.outcome() != "succeeded" {
		t.Errorf("d2 was held up: %s", e.Raw)
	}

	dlq, err := h.js.Stream(t.Context(), "WXPAY_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	m, err := dlq.GetLastMsgForSubject(t.Context(), "wxpay.dlq.query-cancel-withdraw")
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if string(m.Data) != msgBody {
		t.Errorf("dead letter body %q, want the original", m.Data)
	}
	for k, want := range map[string]string{
		schemas.HeaderCommandID: "d1", schemas.HeaderCommandType: "query-cancel-withdraw",
		schemas.HeaderErrorCode: "SYSTEM_ERROR", schemas.HeaderDeliveries: fmt.Sprint(h.cfg.MaxDeliver),
		"X-Trace": "t1", jetstream.ExpectedStreamHeader: "",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("dead letter header %s = %q, want %q", k, got, want)
		}
	}
	if info, _ := dlq.Info(t.Context()); info.State.Msgs != 1 {
		t.Errorf("%d dead letters, want 1", info.State.Msgs)
	}

	// Replay once WeChat Pay is healthy again.
	topo := consumer.NewTopology(h.cfg)
	dls, err := deadletter.List(t.Context(), h.js, topo, 0)
	if err != nil || len(dls) != 1 || dls[0].CommandID != "d1" || dls[0].ErrorCode != "SYSTEM_ERROR" {
		t.Fatalf("DeadLetters = %+v, %v", dls, err)
	}
	if err := h.sim.SetFaults(); err != nil {
		t.Fatal(err)
	}
	// Inside the commands stream's duplicate window the replay is refused
	// and changes nothing.
	if err := deadletter.Replay(t.Context(), h.js, topo, "wxpay", dls[0]); !errors.Is(err, deadletter.ErrDuplicateWindow) {
		t.Fatalf("replay inside the duplicate window: %v", err)
	}
	h.replayPastWindow(dls[0])
	h.eventually("the replay's outcome", func() bool { return len(h.outcomes()["d1"]) == 2 })
	h.waitIdle()
	replayed := h.outcomes()["d1"][1]
	if replayed.ID != "outcome/d1/replay-1" || replayed.outcome() != "succeeded" || replayed.attempts() != calls+1 {
		t.Errorf("replay outcome %s: %s after %d attempts: %s", replayed.ID, replayed.outcome(), replayed.attempts(), replayed.Raw)
	}
	// The dead letter stays until purged; replaying it again would run a
	// command that has succeeded since.
	if err := deadletter.Replay(t.Context(), h.js, topo, "wxpay", dls[0]); !errors.Is(err, deadletter.ErrAlreadyReplayed) {
		t.Errorf("second replay: %v, want ErrAlreadyReplayed", err)
	}
	h.waitIdle()
	if n := h.sim.Count(wxpaysim.EndpointQueryCancelWithdraw); n != calls+1 {
		t.Errorf("WeChat Pay saw %d requests, want %d", n, calls+1)
	}
	if n := len(h.outcomes()["d1"]); n != 2 {
		t.Errorf("%d outcome events for d1, want 2", n)
	}
	if err := deadletter.Purge(t.Context(), h.js, topo, dls[0].Seq); err != nil {
		t.Fatal(err)
	}
	if dls, err := deadletter.List(t.Context(), h.js, topo, 0); err != nil || len(dls) != 0 {
		t.Errorf("after purge: %+v, %v", dls, err)
	}
}

// TestDeadLetteredAgainAfterReplay: a replayed command that runs out of
// deliveries again is dead-lettered again, although its first copy was
// published moments before (the copies' ids differ per replay).
func TestDeadLetteredAgainAfterReplay(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	if err := h.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointQueryCancelWithdraw}); err != nil {
		t.Fatal(err)
	}
	h.start("a")
	h.send("query-cancel-withdraw", "d3", `{"applyment_id":"A3"}`)
	h.waitOutcomes("d3")
	topo := consumer.NewTopology(h.cfg)
	dls, err := deadletter.List(t.Context(), h.js, topo, 0)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters = %+v, %v", dls, err)
	}
	// Handled: purged, and replayed while WeChat Pay still fails.
	if err := deadletter.Purge(t.Context(), h.js, topo, dls[0].Seq); err != nil {
		t.Fatal(err)
	}
	h.replayPastWindow(dls[0])
	h.eventually("the replay to be dead-lettered again", func() bool {
		again, err := deadletter.List(t.Context(), h.js, topo, 0)
		return err == nil && len(again) == 1 && again[0].CommandID == "d3"
	})
	// The copy is made before the outcome event is published.
	h.eventually("the replay's outcome", func() bool { return len(h.outcomes()["d3"]) >= 2 })
	if evs := h.outcomes()["d3"]; len(evs) != 2 || evs[1].ID != "outcome/d3/replay-1" || evs[1].outcome() != "failed" {
		t.Errorf("outcome events of d3: %v", evs)
	}
}

// replayPastWindow replays dl once the commands stream has forgotten its
// id.
func (h *harness) replayPastWindow(dl deadletter.Letter) {
	h.t.Helper()
	h.untilAccepted("WXPAY_COMMANDS", func() bool {
		err := deadletter.Replay(h.t.Context(), h.js, consumer.NewTopology(h.cfg), "wxpay", dl)
		if err != nil && !errors.Is(err, deadletter.ErrDuplicateWindow) {
			h.t.Fatal(err)
		}
		return err == nil
	})
}

// TestFinalErrorsNotRetried: business errors (4xx) and responses whose
// signature does not verify fail at once, with one request.
func TestFinalErrorsNotRetried(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	waiting := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelReviewing})
	h.sim.PutCancelApplication(wxpaysim.CancelApplication{OutApplyNo: "OA1", SubMchid: subMchid})
	if err := h.sim.SetFaults(
		wxpaysim.Fault{Kind: wxpaysim.BadSignature, Endpoint: wxpaysim.EndpointValidateCancel},
		wxpaysim.Fault{Kind: wxpaysim.ProbeSignature, Endpoint: wxpaysim.EndpointQueryCancelApplication},
	); err != nil {
		t.Fatal(err)
	}
	h.start("a")
	cases := []struct {
		id, ctype string
		body      any
		code      string
		status    int
	}{
		{"f-notfound", "query-cancel-withdraw", map[string]any{"applyment_id": "NOPE1"}, "NOT_FOUND", 404},
		{"f-rulelimit", "confirm-cancel", confirmBody(waiting.ApplymentID), "RULE_LIMIT", 403},
		{"f-badsig", "validate-cancel", map[string]any{"sub_mchid": subMchid}, schemas.CodeResponseSignatureInvalid, 200},
		{"f-probe", "query-cancel-application", map[string]any{"out_apply_no": "OA1"}, schemas.CodeResponseSignatureInvalid, 0},
	}
	var ids []string
	for _, c := range cases {
		h.send(c.ctype, c.id, c.body)
		ids = append(ids, c.id)
	}
	got := h.waitOutcomes(ids...)
	for _, c := range cases {
		e := one(t, got, c.id)
		if e.outcome() != "failed" || e.errorCode() != c.code || e.attempts() != 1 {
			t.Errorf("%s: %s %s after %d attempts, want failed %s after 1: %s", c.id, e.outcome(), e.errorCode(), e.attempts(), c.code, e.Raw)
		}
		if c.status != 0 {
			if st, _ := e.Data["error"].(map[string]any)["http_status"].(float64); int(st) != c.status {
				t.Errorf("%s: http_status %v, want %d", c.id, st, c.status)
			}
		}
	}
	if n := h.sim.Total(); n != len(cases) {
		t.Errorf("WeChat Pay saw %d requests for %d commands: something was retried", n, len(cases))
	}
	if info, _ := h.js.Stream(t.Context(), "WXPAY_DLQ"); info != nil {
		if i, _ := info.Info(t.Context()); i.State.Msgs != 0 {
			t.Errorf("%d dead letters for final errors", i.State.Msgs)
		}
	}
}

// TestDuplicateCommandID: the same id sent again, inside JetStream's
// duplicate window or after it, is executed once and answered once — even
// past the events stream's duplicate window, which would no longer drop a
// republished outcome event (the record remembers it was published).
func TestDuplicateCommandID(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	a := h.start("a")
	body := map[string]any{"sub_mchid": subMchid}
	h.send("validate-cancel", "dup-1", body)
	if ack := h.send("validate-cancel", "dup-1", body); !ack.Duplicate {
		t.Error("a re-sent id inside the duplicate window was stored again")
	}
	h.waitOutcomes("dup-1")

	// Past the streams' duplicate windows the outcome record answers.
	h.forget("WXPAY_EVENTS")
	h.resend("validate-cancel", "dup-1", body)
	h.waitIdle()
	got := h.outcomes()
	one(t, got, "dup-1")
	if n := h.sim.Count(wxpaysim.EndpointValidateCancel); n != 1 {
		t.Errorf("WeChat Pay saw %d requests for one command id", n)
	}
	if n := count(a.metrics.Duplicates); n != 1 {
		t.Errorf("%d deliveries answered from the record, want the re-sent one", n)
	}
}

// TestResentWhileExecuting: a command sent again past the commands stream's
// duplicate window while its first message is still being executed waits
// for that execution, on whichever instance it lands: the confirmation is
// sent once and answered once, succeeded — not sent a second time, refused
// as already confirmed, and reported failed.
func TestResentWhileExecuting(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	app := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
	// The confirmation takes effect at once; its answer comes 5s later
	// (within the attempt timeout).
	slow := wxpaysim.Fault{Kind: wxpaysim.SlowAfter, Endpoint: wxpaysim.EndpointConfirmCancel, Delay: 5 * time.Second, Times: 1}
	if err := h.sim.SetFaults(slow); err != nil {
		t.Fatal(err)
	}
	h.attempt = 10 * time.Second
	a, b := h.start("a"), h.start("b")
	body := confirmBody(app.ApplymentID)
	h.send("confirm-cancel", "busy", body)
	h.eventually("the confirmation to reach WeChat Pay", func() bool { return h.requests.inProgress() == 1 })
	h.resend("confirm-cancel", "busy", body)
	h.eventually("the re-sent message to wait", func() bool {
		return count(a.metrics.ClaimWaits)+count(b.metrics.ClaimWaits) == 1
	})
	e := one(t, h.waitOutcomes("busy"), "busy")
	if e.outcome() != "succeeded" || e.Data["reconciled"] == true {
		t.Errorf("outcome %s reconciled=%v, want succeeded by its own answer: %s", e.outcome(), e.Data["reconciled"], e.Raw)
	}
	if n := h.sim.Count(wxpaysim.EndpointConfirmCancel); n != 1 {
		t.Errorf("confirm-cancel sent %d times for one command id, want once", n)
	}
}

// TestRedeliveryRepublishes: the outcome record is written as published
// before the event is; when the event's publication then fails, the command
// is redelivered, and the redelivery publishes the recorded event although
// the record says it is published — without calling WeChat Pay again.
func TestRedeliveryRepublishes(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	a := h.start("a")
	h.recordUnpublished(a, "refused")()
	one(t, h.waitOutcomes("refused"), "refused")
	if n := h.sim.Count(wxpaysim.EndpointValidateCancel); n != 2 {
		t.Errorf("WeChat Pay saw %d requests for two commands", n)
	}
}

// TestDeliveryCountLost: nats-server killed with SIGKILL may come back
// without the consumer's delivery counts, and deliver a command whose
// outcome is recorded but not yet published as a first delivery. The
// message that recorded the outcome publishes it however it is counted.
func TestDeliveryCountLost(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	a := h.start("a")
	open := h.recordUnpublished(a, "counted")
	a.stop(t)
	// A consumer made anew counts the command's next delivery as its first.
	if err := h.js.DeleteConsumer(t.Context(), "WXPAY_COMMANDS", consumer.NewTopology(h.cfg).Consumer.Durable); err != nil {
		t.Fatal(err)
	}
	open()
	h.start("b")
	one(t, h.waitOutcomes("counted"), "counted")
	if n := h.sim.Count(wxpaysim.EndpointValidateCancel); n != 2 {
		t.Errorf("WeChat Pay saw %d requests for two commands", n)
	}
}

// TestJetStreamErrorAfterSuccess: WeChat Pay cancels an applyment, then
// JetStream refuses the status event it reveals. The outcome is recorded
// before the status change is published, so the redelivery publishes both
// from the record: one request to WeChat Pay, one succeeded outcome (no
// query endpoint could tell a second request refused as already done).
func TestJetStreamErrorAfterSuccess(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	a := h.start("a")
	h.send("validate-cancel", "first", map[string]any{"sub_mchid": subMchid})
	h.waitOutcomes("first")

	open := h.fillEvents()
	h.send("cancel-applyment", "ca-2", map[string]any{"business_code": "1900013511_20000"})
	h.waitRefused(a, "ca-2")
	if len(h.statuses()["applyment/1900013511_20000"]) != 0 {
		t.Fatal("the status event was stored by a full stream; the test would prove nothing")
	}
	open()
	if e := one(t, h.waitOutcomes("ca-2"), "ca-2"); e.outcome() != "succeeded" {
		t.Errorf("ca-2: %s %s", e.outcome(), e.Raw)
	}
	if n := h.sim.Count(wxpaysim.EndpointCancelApplyment); n != 1 {
		t.Errorf("WeChat Pay saw %d cancellations for one command", n)
	}
	if n := len(h.statuses()["applyment/1900013511_20000"]); n != 1 {
		t.Errorf("%d status events for the applyment, want 1", n)
	}
}

// TestLateRedeliveryFindsStoredEvent: a delivery recorded an outcome, got
// its event stored and died before its ack; the service came back after the
// events stream's duplicate window. The redelivery finds the event in the
// stream and does not store it a second time.
func TestLateRedeliveryFindsStoredEvent(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	// The instances see every record as written ten minutes ago.
	h.clock = func() time.Time { return time.Now().Add(10 * time.Minute) }
	a := h.start("a")
	// The outcome is recorded, its event refused; the instance stops.
	open := h.recordUnpublished(a, "late")
	a.stop(t)
	open()
	// What the dying delivery stored: the recorded event, past the window.
	ev, ok, err := consumer.RecordedOutcome(t.Context(), h.js, consumer.NewTopology(h.cfg), "late")
	if err != nil || !ok {
		t.Fatalf("no recorded outcome: %v", err)
	}
	pub, err := publisher.New(h.js, publisher.Config{Prefix: "wxpay", MchID: h.cfg.MchID})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	h.forget("WXPAY_EVENTS")

	b := h.start("b")
	h.eventually("instance b to answer the redelivery from the record", func() bool {
		return count(b.metrics.Duplicates) == 1
	})
	h.waitIdle()
	one(t, h.outcomes(), "late")
	if found := value(b.metrics.EventLookups.WithLabelValues("found")); found != 1 {
		t.Errorf("the redelivery found the event in %v lookups, want 1", found)
	}

	// A delivery that concludes after earlier ones wrote progress (here:
	// dead-lettered) publishes its own new event without looking it up,
	// however old the progress.
	if err := h.sim.SetFaults(wxpaysim.Fault{Kind: wxpaysim.SystemError, Endpoint: wxpaysim.EndpointQueryCancelWithdraw}); err != nil {
		t.Fatal(err)
	}
	h.send("query-cancel-withdraw", "dead-late", `{"applyment_id":"A9"}`)
	if e := one(t, h.waitOutcomes("dead-late"), "dead-late"); e.outcome() != "failed" {
		t.Errorf("dead-late: %s", e.Raw)
	}
	if n := count(b.metrics.EventLookups); n != 1 {
		t.Errorf("%d lookups in the events stream, want only the redelivery's: a new outcome was looked up", n)
	}
}

// TestResentRedeliveryPublishesNothing: a command id sent again past the
// duplicate windows is answered from its record, and so is the redelivery
// of that new message after an instance took it and died: the recorded
// outcome event, stored long before, is not stored a second time.
func TestResentRedeliveryPublishesNothing(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	a := h.start("a")
	body := map[string]any{"sub_mchid": subMchid}
	h.send("validate-cancel", "again", body)
	h.waitOutcomes("again")
	a.stop(t)

	h.forget("WXPAY_EVENTS")
	h.resend("validate-cancel", "again", body)
	// An instance takes the new message and dies before settling it.
	c, err := h.js.Consumer(t.Context(), "WXPAY_COMMANDS", consumer.NewTopology(h.cfg).Consumer.Durable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var taken jetstream.Msg
	for m := range batch.Messages() {
		taken = m
	}
	if taken == nil || taken.Headers().Get(jetstream.MsgIDHeader) != "again" {
		t.Fatalf("the re-sent command was not delivered: %v", batch.Error())
	}

	b := h.start("b")
	h.eventually("the redelivery to be answered from the record", func() bool {
		return count(b.metrics.Duplicates) == 1
	})
	h.waitIdle()
	one(t, h.outcomes(), "again")
	if n := h.sim.Count(wxpaysim.EndpointValidateCancel); n != 1 {
		t.Errorf("WeChat Pay saw %d requests for one command id", n)
	}
}

// confirmThenCrash sends n confirmations of new applications (ids
// prefix-0, prefix-1, ...), waits until instance a executes at least
// executing of them, then kills a and starts instance b. With the
// simulator answering after a second, the confirmations are at WeChat Pay
// when a dies, and WeChat Pay acts on them.
func (h *harness) confirmThenCrash(a *instance, prefix string, n, executing int) []string {
	h.t.Helper()
	var ids []string
	for i := range n {
		app := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
		id := fmt.Sprintf("%s-%d", prefix, i)
		h.send("confirm-cancel", id, confirmBody(app.ApplymentID))
		ids = append(ids, id)
	}
	h.eventually("instance a to be executing confirmations", func() bool {
		return h.requests.inProgress() >= executing
	})
	a.crash(h.t)
	h.start("b")
	return ids
}

// TestCrashMidCommand: an instance dies after WeChat Pay acted on its
// confirmations and before it recorded them; another instance takes the
// commands over. Every command ends with exactly one outcome, succeeded:
// the confirmations already made are recognised by query, not failed as
// RULE_LIMIT, and not made twice.
func TestCrashMidCommand(t *testing.T) {
	// Every answer takes a second: the instance dies while its requests
	// are at WeChat Pay, which then acts on them.
	h := newHarness(t, wxpaysim.Options{Latency: time.Second})
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	a := h.start("a")
	const n = 16
	ids := h.confirmThenCrash(a, "crash", n, 4)
	got := h.waitOutcomes(ids...)
	reconciled := 0
	for _, id := range ids {
		e := one(t, got, id)
		if e.outcome() != "succeeded" {
			t.Errorf("%s: %s %s: %s", id, e.outcome(), e.errorCode(), e.Raw)
		}
		if e.Data["reconciled"] == true {
			reconciled++
		}
	}
	if reconciled == 0 {
		t.Error("no confirmation was reconciled: the crash did not interrupt any command")
	}
	t.Logf("%d of %d confirmations reconciled after the crash", reconciled, n)
}

// TestCrashOnLastDelivery: the last allowed delivery of confirmations dies
// after WeChat Pay acted on them. The next delivery does not send them
// again, nor fail them blindly: a query proves each took effect, and each
// ends succeeded, reconciled; nothing is dead-lettered.
func TestCrashOnLastDelivery(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{Latency: time.Second})
	h.cfg.MaxDeliver = 1
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	a := h.start("a")
	const n = 4
	ids := h.confirmThenCrash(a, "last", n, n)
	got := h.waitOutcomes(ids...)
	for _, id := range ids {
		if e := one(t, got, id); e.outcome() != "succeeded" || e.Data["reconciled"] != true {
			t.Errorf("%s: %s %s, want succeeded, reconciled: %s", id, e.outcome(), e.errorCode(), e.Raw)
		}
	}
	if c := h.sim.Count(wxpaysim.EndpointConfirmCancel); c != n {
		t.Errorf("WeChat Pay saw %d confirmations for %d commands", c, n)
	}
	dlq, err := h.js.Stream(t.Context(), "WXPAY_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dlq.Info(t.Context()); err != nil || info.State.Msgs != 0 {
		t.Errorf("dead letters: %v %v", info.State.Msgs, err)
	}
}

// TestTwoInstances: two instances on the shared consumer share the work,
// and handle each command once.
func TestTwoInstances(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true, Latency: 20 * time.Millisecond})
	a := h.start("a")
	b := h.start("b")
	var ids []string
	for i := range 100 {
		id := fmt.Sprintf("two-%d", i)
		h.send("validate-cancel", id, map[string]any{"sub_mchid": fmt.Sprintf("19%08d", i)})
		ids = append(ids, id)
	}
	h.waitSucceeded(ids...)
	if n := h.sim.Count(wxpaysim.EndpointValidateCancel); n != len(ids) {
		t.Errorf("WeChat Pay saw %d requests for %d commands", n, len(ids))
	}
	na, nb := count(a.metrics.Commands), count(b.metrics.Commands)
	if na == 0 || nb == 0 || na+nb != len(ids) {
		t.Errorf("instance a finished %d commands and b %d, want both some and %d in all", na, nb, len(ids))
	}
}

// TestNATSRestart: the NATS server restarts in the middle of a run; every
// command still ends with exactly one outcome event.
func TestNATSRestart(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true, Latency: 20 * time.Millisecond})
	h.start("a")
	var ids []string
	for i := range 60 {
		id := fmt.Sprintf("restart-%d", i)
		h.send("query-cancel-withdraw", id, map[string]any{"applyment_id": fmt.Sprintf("A%d", i)})
		ids = append(ids, id)
	}
	h.eventually("some commands to be done", func() bool { return len(h.outcomes()) >= 5 })
	h.ns.Shutdown()
	h.ns.WaitForShutdown()
	h.startNATS(h.port)
	h.waitSucceeded(ids...)
}

// TestNoProvisionReportsWhatIsMissing: with provisioning off, a service
// facing an empty JetStream names every missing object.
func TestNoProvisionReportsWhatIsMissing(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	h.cfg.Provision = false
	_, js := h.connect("np")
	wcfg, _ := h.sim.ClientConfig(h.merchant, h.simURL)
	client, err := wxpay.NewClient(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = consumer.New(t.Context(), h.cfg, consumer.Options{JetStream: js, Client: client})
	if !errors.Is(err, consumer.ErrNotProvisioned) {
		t.Fatalf("err = %v, want ErrNotProvisioned", err)
	}
	for _, name := range []string{"WXPAY_COMMANDS", "WXPAY_EVENTS", "WXPAY_DLQ", "wxcancel", "WXPAY_OUTCOMES", "WXPAY_STATUS"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("the error does not name %s: %v", name, err)
		}
	}
}

// TestLostAnswersReconciled: WeChat Pay acts on a POST and the answer is
// lost; the client's retry is refused as already done, and a query proves
// the effect: succeeded, reconciled, not failed and not sent a third time.
func TestLostAnswersReconciled(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{})
	h.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	app := h.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
	if err := h.sim.SetFaults(
		wxpaysim.Fault{Kind: wxpaysim.DropAfter, Endpoint: wxpaysim.EndpointConfirmCancel, Times: 1},
		wxpaysim.Fault{Kind: wxpaysim.DropAfter, Endpoint: wxpaysim.EndpointApplyCancelWithdraw, Times: 1},
	); err != nil {
		t.Fatal(err)
	}
	h.start("a")
	h.send("confirm-cancel", "lost-confirm", confirmBody(app.ApplymentID))
	h.send("apply-cancel-withdraw", "lost-apply", map[string]any{"sub_mchid": subMchid, "out_request_no": "P300"})
	got := h.waitOutcomes("lost-confirm", "lost-apply")
	for _, id := range []string{"lost-confirm", "lost-apply"} {
		e := one(t, got, id)
		if e.outcome() != "succeeded" || e.Data["reconciled"] != true {
			t.Errorf("%s: %s reconciled=%v: %s", id, e.outcome(), e.Data["reconciled"], e.Raw)
		}
	}
	if r := one(t, got, "lost-confirm").result(); r["cancel_state"] != "SYSTEM_PROCESSING" {
		t.Errorf("the reconciled confirmation reports the queried application: %v", r)
	}
	if n := h.sim.Count(wxpaysim.EndpointConfirmCancel); n != 2 {
		t.Errorf("confirm-cancel sent %d times, want 2 (the lost one and the refused retry)", n)
	}
	if r := one(t, got, "lost-apply").result(); r["out_request_no"] != "P300" {
		t.Errorf("the reconciled application: %v", r)
	}
}

// TestTraceparent: a valid traceparent is carried into the events; one the
// service cannot vouch for (all-zero trace id, reserved version ff) is
// dropped, and the command is answered all the same.
func TestTraceparent(t *testing.T) {
	h := newHarness(t, wxpaysim.Options{AutoCreate: true})
	h.start("a")
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	cases := map[string]string{
		"tp-valid":     valid,
		"tp-zero":      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"tp-ff":        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tp-malformed": "not a traceparent",
	}
	var ids []string
	for id, tp := range cases {
		h.sendWith("validate-cancel", id, map[string]any{"sub_mchid": subMchid}, nats.Header{"traceparent": {tp}})
		ids = append(ids, id)
	}
	got := h.waitOutcomes(ids...)
	for id := range cases {
		e := one(t, got, id)
		if e.outcome() != "succeeded" {
			t.Errorf("%s: %s", id, e.Raw)
		}
		want := ""
		if id == "tp-valid" {
			want = valid
		}
		var ce map[string]any
		if err := json.Unmarshal(e.Raw, &ce); err != nil {
			t.Fatal(err)
		}
		if tp, _ := ce["traceparent"].(string); tp != want {
			t.Errorf("%s: traceparent attribute %q, want %q", id, tp, want)
		}
	}
}
