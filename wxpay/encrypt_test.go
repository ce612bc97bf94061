package wxpay

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestEncryptSensitive(t *testing.T) {
	k := keys(t)
	tests := []string{"张三", "6222021234567890123", "a", strings.Repeat("x", 214)}
	for _, plain := range tests {
		ct, err := EncryptSensitive(&k.wechat.PublicKey, plain, nil)
		if err != nil {
			t.Fatalf("%d bytes: %v", len(plain), err)
		}
		if got := decryptOAEP(t, k.wechat, ct); got != plain {
			t.Errorf("round trip gives %q, want %q", got, plain)
		}
		raw, _ := base64.StdEncoding.DecodeString(ct)
		if len(raw) != k.wechat.PublicKey.Size() {
			t.Errorf("ciphertext of %d bytes, want the modulus size", len(raw))
		}
		// SHA-1 OAEP, not SHA-256.
		if _, err := rsa.DecryptOAEP(sha256.New(), nil, k.wechat, raw, nil); err == nil {
			t.Error("the ciphertext decrypts as SHA-256 OAEP")
		}
	}

	// The randomness comes from the given reader: the same seed gives the
	// same ciphertext, another seed another.
	seed := bytes.Repeat([]byte{7}, 64)
	a, err := EncryptSensitive(&k.wechat.PublicKey, "6222021234567890123", bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := EncryptSensitive(&k.wechat.PublicKey, "6222021234567890123", bytes.NewReader(seed))
	c, _ := EncryptSensitive(&k.wechat.PublicKey, "6222021234567890123", nil)
	if a != b || a == c {
		t.Error("the OAEP seed does not come from the given reader")
	}

	failures := []struct {
		name  string
		pub   *rsa.PublicKey
		plain string
	}{
		{"no key", nil, "x"},
		{"empty key", &rsa.PublicKey{}, "x"},
		{"empty value", &k.wechat.PublicKey, ""},
		{"too long", &k.wechat.PublicKey, "SECRET-" + strings.Repeat("9", 208)},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EncryptSensitive(tt.pub, tt.plain, nil)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if len(tt.plain) > 4 && strings.Contains(err.Error(), tt.plain[:4]) {
				t.Errorf("message shows the plaintext: %v", err)
			}
		})
	}
	// A short reader is an error, not a weak ciphertext.
	if _, err := EncryptSensitive(&k.wechat.PublicKey, "x", bytes.NewReader([]byte{1})); err == nil {
		t.Error("encryption with an exhausted reader succeeded")
	}
}

// TestApplyCancelWithdrawRefusesOversizedField: a sensitive field too long
// to encrypt fails before any request, naming the field but not its value.
func TestApplyCancelWithdrawRefusesOversizedField(t *testing.T) {
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) { s.reply(w, 200, `{}`) })
	c := newTestClient(t, clk, srv.URL)
	secret := "ACCT" + strings.Repeat("7", 300)
	_, res, err := c.ApplyCancelWithdraw(t.Context(), ApplyCancelWithdrawRequest{SubMchid: "1", OutRequestNo: "P1",
		PayeeInfo: &PayeeInfo{AccountType: AccountPersonal, BankAccountInfo: &BankAccountInfo{AccountName: "王五", AccountNumber: secret}}})
	if !errors.Is(err, ErrInvalidArgument) || res.Attempts != 0 || len(srv.Requests()) != 0 {
		t.Fatalf("err %v result %+v", err, res)
	}
	if !strings.Contains(err.Error(), "account_number") || strings.Contains(err.Error(), "ACCT") || strings.Contains(err.Error(), "王五") {
		t.Errorf("message = %v", err)
	}
}
