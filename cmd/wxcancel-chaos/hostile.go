package main

import (
	"bytes"
	mrand "math/rand/v2"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// hostileInput is one command no valid service may act on.
type hostileInput struct {
	name, typ string
	id        string // Nats-Msg-Id as sent ("" for none)
	body      []byte
}

// hostileInputs returns the inputs of the hostile phase: bodies that are
// not JSON objects, not UTF-8, too big or too deep; unknown fields and
// wrong types; identifiers that would change a URL path or a subject;
// unknown types; and ids that are not command ids.
func hostileInputs(seed uint64) []hostileInput {
	rng := mrand.New(mrand.NewPCG(seed, 77))
	random := make([]byte, 512)
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	deep := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	var in []hostileInput
	add := func(name, typ, body string) {
		in = append(in, hostileInput{name: name, typ: typ, id: "h-" + strconv.Itoa(len(in)), body: []byte(body)})
	}
	add("random bytes", "validate-cancel", string(random))
	add("invalid UTF-8", "validate-cancel", "{\"sub_mchid\":\"19\xff\xfe\"}")
	add("unknown field", "validate-cancel", `{"sub_mchid":"1900000109","admin":true}`)
	add("wrong type", "confirm-cancel", `{"applyment_id":1,"sub_mchid":1900000109,"operator_identification":[],"confirm_time":{},"cancel_contract_version":null}`)
	add("over 64 KiB", "validate-cancel", `{"sub_mchid":"`+string(bytes.Repeat([]byte("1"), 70<<10))+`"}`)
	add("deep nesting", "apply-cancel-withdraw", deep)
	add("not an object", "query-cancel-withdraw", `["applyment_id"]`)
	add("trailing data", "validate-cancel", `{"sub_mchid":"1900000109"}{"sub_mchid":"1"}`)
	for _, v := range []string{"../1900000109", "a.b", "a%2Fb", "a b", "a*b", "a>b", "a/b", "\u202e1900"} {
		add("identifier "+strconv.Quote(v), "query-cancel-withdraw", string(mustJSON(map[string]any{"applyment_id": v})))
	}
	for _, v := range []string{"一二三四五", "１９００", "19000001０9"} {
		add("Han or full-width digits in sub_mchid", "validate-cancel", string(mustJSON(map[string]any{"sub_mchid": v})))
	}
	add("path in business_code", "cancel-applyment", `{"business_code":"../../v3/pay/transactions"}`)
	add("subject injection in out_apply_no", "track", `{"out_apply_no":"x.>"}`)
	add("unknown type", "delete-merchant", `{"sub_mchid":"1900000109"}`)
	add("type with a dot", "validate-cancel.x", `{"sub_mchid":"1900000109"}`)
	for _, id := range []string{"id with space", "id/slash", "中文id", strings.Repeat("x", 129)} {
		in = append(in, hostileInput{name: "invalid Nats-Msg-Id " + strconv.Quote(id[:min(len(id), 12)]), typ: "validate-cancel", id: id,
			body: []byte(`{"sub_mchid":"1900000109"}`)})
	}
	return in
}

// header is the command's headers.
func (h hostileInput) header() nats.Header {
	hd := nats.Header{}
	if h.id != "" {
		hd.Set(jetstream.MsgIDHeader, h.id)
	}
	return hd
}
