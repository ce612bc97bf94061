package wxpay

// Cross-checks against the official SDK, github.com/wechatpay-apiv3/wechatpay-go,
// used here as an independent oracle of the wire format.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/signers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/validators"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// authPattern parses an Authorization header independently of
// ParseAuthorization.
var authPattern = regexp.MustCompile(`^WECHATPAY2-SHA256-RSA2048 mchid="([^"]*)",nonce_str="([^"]*)",timestamp="([0-9]+)",serial_no="([^"]*)",signature="([^"]*)"$`)

// TestOracleVerifiesOurRequests: the official verifier accepts the signature
// of every kind of request we send, over the message rebuilt from what the
// server received, and refuses it once anything is changed.
func TestOracleVerifiesOurRequests(t *testing.T) {
	clk := newFakeClock()
	srv := newWXServer(t, clk.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/cancel") {
			s.reply(w, 204, "")
			return
		}
		s.reply(w, 200, `{}`)
	})
	c := newTestClient(t, clk, srv.URL)
	ctx := t.Context()
	if _, _, err := c.ValidateCancel(ctx, "1900000109"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.QueryCancelWithdrawByOutRequestNo(ctx, "P 1/中文"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ConfirmCancel(ctx, confirmReq); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CancelApplyment(ctx, CancelApplymentRequest{BusinessCode: "1900013511_10000", ApplymentID: 20000011111}); err != nil {
		t.Fatal(err)
	}

	oracle := verifiers.NewSHA256WithRSAPubkeyVerifier(testMchSerial, keys(t).merchant.PublicKey)
	oracleSigner := &signers.SHA256WithRSASigner{MchID: testMchID, CertificateSerialNo: testMchSerial, PrivateKey: keys(t).merchant}
	for _, rq := range srv.Requests() {
		t.Run(rq.Method+" "+rq.URI, func(t *testing.T) {
			header := rq.Header.Get("Authorization")
			m := authPattern.FindStringSubmatch(header)
			if m == nil {
				t.Fatalf("Authorization header has an unexpected layout: %.60s…", header)
			}
			mchid, nonce, ts, serial, sig := m[1], m[2], m[3], m[4], m[5]
			msg := fmt.Sprintf("%s\n%s\n%s\n%s\n%s\n", rq.Method, rq.URI, ts, nonce, rq.Body)
			if err := oracle.Verify(context.Background(), serial, msg, sig); err != nil {
				t.Fatalf("official verifier refuses our signature: %v", err)
			}
			// Same layout as the official SDK writes.
			var tsInt int64
			fmt.Sscan(ts, &tsInt)
			if want := fmt.Sprintf(consts.HeaderAuthorizationFormat, "WECHATPAY2-SHA256-RSA2048", mchid, nonce, tsInt, serial, sig); header != want {
				t.Errorf("header\n got %s\nwant %s", header, want)
			}
			// PKCS#1 v1.5 is deterministic: the official signer gives the
			// same signature over the same message.
			res, err := oracleSigner.Sign(context.Background(), msg)
			if err != nil || res.Signature != sig {
				t.Errorf("official signer gives a different signature (%v)", err)
			}
			for name, tampered := range map[string]string{
				"body":      fmt.Sprintf("%s\n%s\n%s\n%s\n%s\n", rq.Method, rq.URI, ts, nonce, string(rq.Body)+" "),
				"uri":       fmt.Sprintf("%s\n%s\n%s\n%s\n%s\n", rq.Method, rq.URI+"x", ts, nonce, rq.Body),
				"method":    fmt.Sprintf("%s\n%s\n%s\n%s\n%s\n", "PUT", rq.URI, ts, nonce, rq.Body),
				"timestamp": fmt.Sprintf("%s\n%s\n%d\n%s\n%s\n", rq.Method, rq.URI, tsInt+1, nonce, rq.Body),
			} {
				if err := oracle.Verify(context.Background(), serial, tampered, sig); err == nil {
					t.Errorf("official verifier accepts a tampered %s", name)
				}
			}
		})
	}
}

// TestWeVerifyOracleSignedResponses: answers signed by the official signer
// pass our verification (public key and platform certificate modes) and the
// official validator; tampered ones fail both.
func TestWeVerifyOracleSignedResponses(t *testing.T) {
	k := keys(t)
	now := time.Now()
	// A certificate valid now, with a serial whose first nibble is zero.
	serial, _ := new(big.Int).SetString("0A1B2C3D4E5F60718293A4B5C6D7E8F901234567", 16)
	cert := selfSigned(k.wechat, serial, now.Add(-time.Hour), now.Add(time.Hour))
	certSerial := utils.GetCertificateSerialNumber(*cert)

	pubVerifier, err := NewVerifier(VerifierConfig{PublicKeyID: testPubKeyID, PublicKey: &k.wechat.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	certVerifier, err := NewVerifier(VerifierConfig{Certificates: []*x509.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"applyment_id":"X1","cancel_state":"WAITING_MERCHANT_CONFIRM"}`
	tests := []struct {
		name     string
		serial   string
		ours     *Verifier
		theirs   auth.Verifier
		sent     string // body on the wire; differs from the signed one when tampered
		wantFail bool
	}{
		{"public key", testPubKeyID, pubVerifier, verifiers.NewSHA256WithRSAPubkeyVerifier(testPubKeyID, k.wechat.PublicKey), body, false},
		{"platform certificate", certSerial, certVerifier, verifiers.NewSHA256WithRSAVerifier(core.NewCertificateMapWithList([]*x509.Certificate{cert})), body, false},
		{"tampered, public key", testPubKeyID, pubVerifier, verifiers.NewSHA256WithRSAPubkeyVerifier(testPubKeyID, k.wechat.PublicKey),
			strings.Replace(body, "WAITING_MERCHANT_CONFIRM", "FINISH", 1), true},
		{"tampered, certificate", certSerial, certVerifier, verifiers.NewSHA256WithRSAVerifier(core.NewCertificateMapWithList([]*x509.Certificate{cert})),
			body + " ", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer := &signers.SHA256WithRSASigner{MchID: testMchID, CertificateSerialNo: tt.serial, PrivateKey: k.wechat}
			var hdr http.Header
			srv := newWXServer(t, time.Now, func(s *wxServer, w http.ResponseWriter, r *http.Request, n int) {
				ts := time.Now().Unix()
				nonce := "oracleNonce1234567890"
				res, err := signer.Sign(r.Context(), fmt.Sprintf("%d\n%s\n%s\n", ts, nonce, body))
				if err != nil {
					panic(err)
				}
				w.Header().Set(consts.WechatPayTimestamp, fmt.Sprint(ts))
				w.Header().Set(consts.WechatPayNonce, nonce)
				w.Header().Set(consts.WechatPaySignature, res.Signature)
				w.Header().Set(consts.WechatPaySerial, res.CertificateSerialNo)
				w.Header().Set(consts.RequestID, "oracle-req")
				hdr = w.Header().Clone()
				_, _ = io.WriteString(w, tt.sent)
			})
			c, err := NewClient(Config{Signer: testSigner(t), Verifier: tt.ours, BaseURL: srv.URL, BackupBaseURL: NoBackup})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.CloseIdleConnections)
			app, res, err := c.QueryCancelWithdrawByApplymentID(t.Context(), "X1")

			theirErr := validators.NewWechatPayResponseValidator(tt.theirs).Validate(context.Background(),
				&http.Response{Header: hdr, Body: io.NopCloser(bytes.NewReader([]byte(tt.sent)))})
			if tt.wantFail {
				se, ok := asSignatureError(err)
				if !ok || se.Reason != SignatureMismatch {
					t.Errorf("our client accepted a tampered answer: %v", err)
				}
				if theirErr == nil {
					t.Error("the official validator accepted a tampered answer")
				}
				return
			}
			if err != nil {
				t.Fatalf("we refuse an answer signed by the official signer: %v", err)
			}
			if theirErr != nil {
				t.Fatalf("the official validator refuses it: %v", theirErr)
			}
			if app.CancelState != CancelWaitingMerchantConfirm || string(res.Body) != body || res.RequestID != "oracle-req" {
				t.Errorf("app %+v result %+v", app, res)
			}
		})
	}
}

func asSignatureError(err error) (*SignatureError, bool) {
	var se *SignatureError
	ok := errors.As(err, &se)
	return se, ok
}

// TestCertificateSerialMatchesOracle: serials are written as the official
// SDK (and WeChat Pay) write them, leading zeros included.
func TestCertificateSerialMatchesOracle(t *testing.T) {
	k := keys(t)
	for _, hex := range []string{"01", "0F", "10", "7E57", "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"} {
		n, _ := new(big.Int).SetString(hex, 16)
		cert := selfSigned(k.wechat, n, testEpoch, testEpoch.Add(time.Hour))
		if got, want := CertificateSerial(cert), utils.GetCertificateSerialNumber(*cert); got != want {
			t.Errorf("serial %s: we write %s, the SDK %s", hex, got, want)
		}
	}
}

// TestEncryptSensitiveOracle: the official SDK decrypts our ciphertext.
func TestEncryptSensitiveOracle(t *testing.T) {
	k := keys(t)
	for _, plain := range []string{"中国工商银行", "6222021234567890123"} {
		ct, err := EncryptSensitive(&k.wechat.PublicKey, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := utils.DecryptOAEP(ct, k.wechat)
		if err != nil || got != plain {
			t.Errorf("official DecryptOAEP = %q, %v; want %q", got, err, plain)
		}
	}
}
