package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
)

// Floor is the CPU floor of one WeChat Pay request: one RSA-2048 signature of
// the request and one verification of the answer, with the project's own
// wxpay.Signer and wxpay.Verifier, on one core.
type Floor struct {
	// Signer is the RSA implementation measured (wxpay.SignerBackend).
	Signer   string  `json:"signer"`
	SignMS   float64 `json:"sign_ms"`
	VerifyMS float64 `json:"verify_ms"`
	// PerRequestMS = SignMS + VerifyMS: the least CPU one command can cost.
	PerRequestMS float64 `json:"per_request_ms"`
	// CPUBoundRate = cores ÷ PerRequestMS: commands/s if the machine did
	// nothing but sign and verify.
	CPUBoundRate float64 `json:"cpu_bound_rate"`
	Samples      int     `json:"samples"`
}

// floorMeter signs and verifies like the client does, with the project's
// own wxpay.Signer and wxpay.Verifier.
type floorMeter struct {
	signer    *wxpay.Signer
	verifier  *wxpay.Verifier
	wechatKey *rsa.PrivateKey
	keyID     string
	header    http.Header
	body      []byte
}

func newFloorMeter() (*floorMeter, error) {
	merchantKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	wechatKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	signer, err := wxpay.NewSigner(benchMchID, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", merchantKey)
	if err != nil {
		return nil, err
	}
	const keyID = "PUB_KEY_ID_0119000000012025052000000000"
	verifier, err := wxpay.NewVerifier(wxpay.VerifierConfig{PublicKeyID: keyID, PublicKey: &wechatKey.PublicKey})
	if err != nil {
		return nil, err
	}
	m := &floorMeter{signer: signer, verifier: verifier, wechatKey: wechatKey, keyID: keyID,
		// A typical answer (validate-cancel).
		body: []byte(`{"sub_mchid":"1900000101","merchant_state":"NORMAL","validate_result":"ALLOW_CANCEL_WITHDRAW","account_info":[{"out_account_type":"BASIC_ACCOUNT","amount":0}]}`)}
	return m, m.signAnswer()
}

// signAnswer signs the sample answer as WeChat Pay does, now.
func (m *floorMeter) signAnswer() error {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	nonce := "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
	sum := sha256.Sum256(wxpay.ResponseMessage(ts, nonce, m.body))
	raw, err := rsa.SignPKCS1v15(nil, m.wechatKey, crypto.SHA256, sum[:])
	if err != nil {
		return err
	}
	h := http.Header{}
	h.Set(wxpay.HeaderTimestamp, ts)
	h.Set(wxpay.HeaderNonce, nonce)
	h.Set(wxpay.HeaderSignature, base64.StdEncoding.EncodeToString(raw))
	h.Set(wxpay.HeaderSerial, m.keyID)
	if err := m.verifier.Verify(h, m.body); err != nil {
		return fmt.Errorf("floor: the sample answer does not verify: %w", err)
	}
	m.header = h
	return nil
}

// measure times signs and verifies (ten per sign) on one locked OS thread,
// by that thread's CPU time (not wall time; for the OpenSSL signer's
// signatures, made on its own threads, by theirs: wxpay.SigningCPU), in
// batches, and takes the median batch. The answer's timestamp is refreshed
// first: the Verifier refuses one 5 minutes old.
func (m *floorMeter) measure(signs, batches int) (Floor, error) {
	const uri = "/v3/ecommerce/account/apply-cancel-withdraw/validate-cancel/1900000101"
	const nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
	if err := m.signAnswer(); err != nil {
		return Floor{}, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var failure error
	// The OpenSSL signer signs on threads of its own, which count their
	// signatures' CPU; crypto/rsa signs on this one.
	signClock := threadCPU
	if _, ok := wxpay.SigningCPU(); ok {
		signClock = func() time.Duration { d, _ := wxpay.SigningCPU(); return d }
	}
	sign := func(n int) time.Duration {
		start := signClock()
		for i := range n {
			if _, err := m.signer.Authorization(http.MethodGet, uri, nil, time.Now().Unix(), nonce+strconv.Itoa(i)); err != nil {
				failure = err
			}
		}
		return signClock() - start
	}
	verifies := signs * 10
	verify := func(n int) time.Duration {
		start := threadCPU()
		for range n {
			if err := m.verifier.Verify(m.header, m.body); err != nil {
				failure = err
			}
		}
		return threadCPU() - start
	}
	sign(5) // warm up
	verify(20)
	var signMS, verifyMS []float64
	for range batches {
		signMS = append(signMS, ms(sign(signs))/float64(signs))
		verifyMS = append(verifyMS, ms(verify(verifies))/float64(verifies))
	}
	if failure != nil {
		return Floor{}, failure
	}
	f := Floor{Signer: wxpay.SignerBackend(), SignMS: median(signMS), VerifyMS: median(verifyMS), Samples: batches * signs}
	f.PerRequestMS = f.SignMS + f.VerifyMS
	f.CPUBoundRate = float64(runtime.NumCPU()) * 1000 / f.PerRequestMS
	return f, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
