package wxpay

import (
	"net/http"
	"testing"
	"time"
)

// BenchmarkSign is one request's Authorization with the build's signer
// (go test -bench Sign, and again with -tags openssl).
func BenchmarkSign(b *testing.B) {
	s, err := NewSigner(testMchID, testMchSerial, keys(b).merchant)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Authorization(http.MethodGet, "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/1900000109", nil, 1700000000, "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is one answer's signature check with the build's
// verifier.
func BenchmarkVerify(b *testing.B) {
	key := keys(b).wechat
	v, err := NewVerifier(VerifierConfig{PublicKeyID: testPubKeyID, PublicKey: &key.PublicKey})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"sub_mchid":"1900000109","merchant_state":"NORMAL","validate_result":"ALLOW_CANCEL_WITHDRAW"}`)
	h := http.Header{}
	signResponse(h, key, testPubKeyID, time.Now(), "nonce", body)
	for b.Loop() {
		if err := v.Verify(h, body); err != nil {
			b.Fatal(err)
		}
	}
}
