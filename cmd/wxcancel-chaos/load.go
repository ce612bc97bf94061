package main

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// sent is one command the load generator published.
type sent struct {
	id, typ string
	body    []byte
	// key is the resource a POST acts on, as the simulator's requests name
	// it first: the applyment_id of a confirmation, the out_request_no of a
	// submission, the business_code of a cancel-applyment.
	key string
}

// load generates the mix of commands: every type, each POST on a
// resource the simulator knows and its own, a share of ids sent again.
type load struct {
	sim     *wxpaysim.Server
	rng     *mrand.Rand
	secrets *secrets
	mu      sync.Mutex
	all     []sent          // every command, in order, re-sends included
	byID    map[string]sent // each id once
	apps    []string        // applications commands have named
}

// distinct is the number of distinct ids sent so far.
func (l *load) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}

func newLoad(sim *wxpaysim.Server, seed uint64, sec *secrets) *load {
	return &load{sim: sim, rng: mrand.New(mrand.NewPCG(seed, seed^0x5DEECE66D)), secrets: sec, byID: map[string]sent{}}
}

// subMchids is the pool of sub-merchants the commands name.
const subMchids = 40

func (l *load) subMchid() string { return strconv.Itoa(1900100000 + l.rng.IntN(subMchids)) }

// next returns command number i of the mix, or an earlier one to send again.
func (l *load) next(i int) sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) > 10 && l.rng.IntN(10) == 0 {
		// Mostly past the commands stream's duplicate window: the service
		// answers it from its record.
		again := l.all[l.rng.IntN(len(l.all))]
		l.all = append(l.all, again)
		return again
	}
	id := "c-" + strconv.Itoa(i)
	var c sent
	switch n := l.rng.IntN(100); {
	case n < 20:
		c = sent{typ: "validate-cancel", body: mustJSON(map[string]any{"sub_mchid": l.subMchid()})}
	case n < 32 && len(l.apps) > 0:
		c = sent{typ: "query-cancel-withdraw", body: mustJSON(map[string]any{"applyment_id": l.apps[l.rng.IntN(len(l.apps))]})}
	case n < 40:
		c = sent{typ: "query-cancel-application", body: mustJSON(map[string]any{"out_apply_no": "OA" + strconv.Itoa(i)})}
	case n < 60:
		sub := l.subMchid()
		app := l.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: sub, State: wxpay.CancelWaitingMerchantConfirm})
		l.apps = append(l.apps, app.ApplymentID)
		operator := "运营" + strconv.Itoa(10000000+l.rng.IntN(90000000))
		l.secrets.add(operator)
		c = sent{typ: "confirm-cancel", key: app.ApplymentID, body: mustJSON(map[string]any{"applyment_id": app.ApplymentID, "sub_mchid": sub,
			"operator_identification": operator, "confirm_time": "2026-12-01T10:00:00+08:00", "cancel_contract_version": "V20241213"})}
	case n < 75:
		outNo := "CH" + strconv.Itoa(i)
		account := strconv.Itoa(62220000+l.rng.IntN(10000000)) + strconv.Itoa(10000000000+l.rng.IntN(80000000000))
		name := "深圳混沌测试" + strconv.Itoa(1000+l.rng.IntN(9000)) + "有限公司"
		idNo := "4403" + strconv.Itoa(10000000000000+l.rng.IntN(80000000000000))
		l.secrets.add(account, name, idNo)
		c = sent{typ: "apply-cancel-withdraw", key: outNo, body: mustJSON(map[string]any{"sub_mchid": l.subMchid(), "out_request_no": outNo,
			"withdraw": "APPLY_WITHDRAW", "payee_info": map[string]any{"account_type": "ACCOUNT_TYPE_PERSONAL",
				"bank_account_info": map[string]any{"account_name": name, "account_bank": "工商银行", "account_number": account},
				"identity_info":     map[string]any{"id_doc_type": "IDENTIFICATION_TYPE_MAINLAND_IDCARD", "identification_name": name, "identification_no": idNo}}})}
	case n < 87:
		code := "CHAOS_" + strconv.Itoa(i)
		l.sim.PutApplyment(wxpaysim.Applyment{BusinessCode: code})
		c = sent{typ: "cancel-applyment", key: code, body: mustJSON(map[string]any{"business_code": code})}
	default:
		var body map[string]any
		if len(l.apps) > 0 && l.rng.IntN(2) == 0 {
			body = map[string]any{"applyment_id": l.apps[l.rng.IntN(len(l.apps))]}
		} else {
			body = map[string]any{"out_apply_no": "OT" + strconv.Itoa(i)}
		}
		c = sent{typ: "track", body: mustJSON(body)}
	}
	c.id = id
	if _, err := schemas.Parse(c.typ, c.body); err != nil {
		panic(fmt.Sprintf("chaos: the mix made an invalid %s: %v", c.typ, err)) // a bug of the mix itself
	}
	l.all = append(l.all, c)
	l.byID[id] = c
	return c
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// publish sends one command, again and again while NATS is down, until
// JetStream has it (the id makes a repeat a duplicate) or ctx ends. It
// returns the stream sequence.
func publish(ctx context.Context, js jetstream.JetStream, subject string, header nats.Header, body []byte) (uint64, error) {
	for {
		msg := nats.NewMsg(subject)
		msg.Data = body
		for k, v := range header {
			msg.Header[k] = v
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("publishing on %s: %w (last: %v)", subject, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
