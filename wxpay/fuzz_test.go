package wxpay

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func FuzzParseAuthorization(f *testing.F) {
	s := testSigner(f)
	valid, err := s.Authorization("POST", "/v3/ecommerce/account/apply-cancel-withdraw/confirm", []byte(`{"a":1}`), 1767225600, "593BEC0C930BF1AFEB40B4A08C8FB242")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		valid,
		`WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",timestamp="1",serial_no="s",signature="x"`,
		`WECHATPAY2-SHA256-RSA2048 signature="x",serial_no="s",timestamp="+1",nonce_str="n",mchid="1"`,
		`WECHATPAY2-SHA256-RSA2048  mchid="1", nonce_str="n,",timestamp="1",serial_no="s",signature="x"`,
		`WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="2"`,
		`WECHATPAY2-SHA256-RSA2048 mchid="1",`,
		`WECHATPAY2-SHA256-RSA2048 mchid=1`,
		`WECHATPAY2-SHA256-RSA2048 ="x"`,
		`WECHATPAY2-SHA256-RSA2048 mchid="`,
		`WECHATPAY2-SHA256-RSA2048 timestamp="x"`,
		`Bearer abc`,
		"",
		"WECHATPAY2-SHA256-RSA2048 ",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		a, err := ParseAuthorization(header)
		if err != nil {
			if !errors.Is(err, ErrAuthorization) {
				t.Fatalf("error %v does not match ErrAuthorization", err)
			}
			if len(a.Signature) >= 12 && strings.Contains(err.Error(), a.Signature) {
				t.Fatalf("error repeats the signature")
			}
			return
		}
		if a.MchID == "" || a.Nonce == "" || a.Timestamp == "" || a.SerialNo == "" || a.Signature == "" {
			t.Fatalf("parsed with an empty field: %+v", a)
		}
		if _, err := strconv.ParseInt(a.Timestamp, 10, 64); err != nil {
			t.Fatalf("accepted timestamp %q", a.Timestamp)
		}
		again, err := ParseAuthorization(a.header())
		if err != nil {
			t.Fatalf("re-serialised header does not parse: %v", err)
		}
		if again != a {
			t.Fatalf("round trip changed the header: %+v != %+v", again, a)
		}
		others := a.MchID + "\x00" + a.Nonce + "\x00" + a.Timestamp + "\x00" + a.SerialNo
		if len(a.Signature) > 12 && !strings.Contains(others, a.Signature) && strings.Contains(a.String(), a.Signature) {
			t.Fatalf("String() shows the signature")
		}
	})
}

// FuzzVerify: arbitrary signature headers and bodies never panic and are
// accepted only when they really are a valid signature of the WeChat Pay key
// within the clock skew.
func FuzzVerify(f *testing.F) {
	k := keys(f)
	now := testEpoch
	v, err := NewVerifier(VerifierConfig{PublicKeyID: testPubKeyID, PublicKey: &k.wechat.PublicKey,
		Certificates: []*x509.Certificate{k.cert, k.expired}, Clock: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	body := []byte(`{"sub_mchid":"1900000109"}`)
	h := http.Header{}
	signResponse(h, k.wechat, testPubKeyID, now, "nonce1", body)
	ts, sig := h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	f.Add(ts, "nonce1", sig, testPubKeyID, body)
	f.Add(ts, "nonce1", sig, testPubKeyID, []byte(`{"sub_mchid":"1900000108"}`))
	f.Add(ts, "nonce1", ProbeSignaturePrefix+sig, testPubKeyID, body)
	f.Add(ts, "nonce1", sig, strings.ToLower(testPubKeyID), body)
	f.Add(ts, "nonce1", sig, CertificateSerial(k.cert), body)
	f.Add(ts, "nonce1", sig, strings.TrimLeft(CertificateSerial(k.cert), "0"), body)
	f.Add(ts, "nonce1", sig, CertificateSerial(k.expired), body)
	f.Add(strconv.FormatInt(now.Add(-MaxClockSkew).Unix(), 10), "nonce1", sig, testPubKeyID, body)
	f.Add("1e9", "n", "!!", "s", []byte{})
	f.Add("", "", "", "", []byte(nil))
	f.Add("-9223372036854775808", "n", "AAAA", testPubKeyID, []byte("x"))
	f.Fuzz(func(t *testing.T, ts, nonce, sig, serial string, body []byte) {
		h := http.Header{}
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderNonce, nonce)
		h.Set(HeaderSignature, sig)
		h.Set(HeaderSerial, serial)
		err := v.Verify(h, body)
		if err == nil {
			// Accepted: it must be genuine.
			sec, perr := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
			if perr != nil || now.Sub(time.Unix(sec, 0)).Abs() >= MaxClockSkew {
				t.Fatalf("accepted timestamp %q", ts)
			}
			if strings.HasPrefix(h.Get(HeaderSignature), ProbeSignaturePrefix) {
				t.Fatal("accepted a probe")
			}
			if s := h.Get(HeaderSerial); s != testPubKeyID && strings.TrimLeft(strings.ToUpper(s), "0") != strings.TrimLeft(CertificateSerial(k.cert), "0") {
				t.Fatalf("accepted serial %q", serial)
			}
			if verr := verifyRSA(&k.wechat.PublicKey, ResponseMessage(h.Get(HeaderTimestamp), h.Get(HeaderNonce), body), h.Get(HeaderSignature)); verr != nil {
				t.Fatalf("accepted a signature that does not verify: %v", verr)
			}
			return
		}
		var se *SignatureError
		if !errors.As(err, &se) || !errors.Is(err, ErrSignature) {
			t.Fatalf("error %T %v is not a SignatureError", err, err)
		}
		switch se.Reason {
		case SignatureMissing, SignatureMalformed, SignatureUnknownSerial, SignatureExpired, SignatureProbe, SignatureMismatch, SignatureCertificateExpired:
		default:
			t.Fatalf("unknown reason %q", se.Reason)
		}
		msg := strings.ReplaceAll(err.Error(), strconv.Quote(serial), "")
		for _, id := range v.KeyIDs() {
			msg = strings.ReplaceAll(msg, id, "")
		}
		if len(sig) >= 16 && strings.Contains(msg, sig) {
			t.Fatalf("error repeats the signature")
		}
	})
}

// keyMessage is the closed set of messages key parsing may produce: fixed
// text, bit counts and names of algorithms and PEM types — never input.
var keyMessage = regexp.MustCompile(`^wxpay: (` + strings.Join([]string{
	`the key file is empty`,
	`no PEM block found \(is the file PEM-encoded\?\)`,
	`the private key is encrypted; provide it unencrypted \(PKCS#8 or PKCS#1\)`,
	`found a certificate where the private key was expected \(apiclient_cert\.pem instead of apiclient_key\.pem\?\)`,
	`found a public key where the private key was expected`,
	`the private key is encrypted \(Proc-Type header\); provide it unencrypted`,
	`the PKCS#(1|8) (private|public) key cannot be parsed`,
	`the public key cannot be parsed`,
	`the (private|public) key is (ECDSA|Ed25519|X25519|of an unsupported algorithm), not RSA`,
	`found (BLOCK) where (the private key|a public key) was expected; want a PEM block (PRIVATE KEY or RSA PRIVATE KEY|PUBLIC KEY)`,
	`the (private|public) key has [0-9]+ bits; at least 2048 are required`,
	`found a certificate where a public key was expected; configure it as a platform certificate`,
	`found a private key where a public key was expected`,
}, "|") + `)$`)

func init() {
	blocks := `an EC private key|a DSA private key|an OpenSSH private key|a certificate request|a certificate revocation list|a private key|a public key|a certificate|a PEM block of another type`
	keyMessage = regexp.MustCompile(strings.Replace(keyMessage.String(), "(BLOCK)", "("+blocks+")", 1))
}

func keySeeds(f *testing.F) {
	k := keys(f)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k.merchant)
	pkix, _ := x509.MarshalPKIXPublicKey(&k.merchant.PublicKey)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ed8, _ := x509.MarshalPKCS8PrivateKey(ed)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, b := range []*pem.Block{
		{Type: "PRIVATE KEY", Bytes: pkcs8},
		{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.merchant)},
		{Type: "PUBLIC KEY", Bytes: pkix},
		{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.merchant.PublicKey)},
		{Type: "CERTIFICATE", Bytes: k.cert.Raw},
		{Type: "PRIVATE KEY", Bytes: ec8},
		{Type: "PUBLIC KEY", Bytes: ecPub},
		{Type: "PRIVATE KEY", Bytes: ed8},
		{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)},
		{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&small.PublicKey)},
		{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}},
		{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,SECRETIV"}, Bytes: []byte{1}},
		{Type: "EC PRIVATE KEY", Bytes: []byte{1}},
		{Type: "MY-SECRET-TYPE", Bytes: []byte("hello")},
		{Type: "PRIVATE KEY", Bytes: []byte("not DER")},
		{Type: "PUBLIC KEY", Bytes: []byte("not DER")},
	} {
		f.Add(pem.EncodeToMemory(b))
	}
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("just some text"))
}

func checkKeyError(t *testing.T, err error, bits int) {
	t.Helper()
	if err == nil {
		if bits < MinRSABits {
			t.Fatalf("accepted a %d-bit key", bits)
		}
		return
	}
	if !errors.Is(err, ErrKey) {
		t.Fatalf("error %v does not match ErrKey", err)
	}
	if !keyMessage.MatchString(err.Error()) {
		t.Fatalf("unexpected message (may carry input): %q", err)
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	keySeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data)
		bits := 0
		if err == nil {
			bits = k.N.BitLen()
		}
		checkKeyError(t, err, bits)
	})
}

func FuzzParsePublicKey(f *testing.F) {
	keySeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePublicKey(data)
		bits := 0
		if err == nil {
			bits = k.N.BitLen()
		}
		checkKeyError(t, err, bits)
	})
}

// FuzzParseCertificates: never panics; every error matches ErrKey.
func FuzzParseCertificates(f *testing.F) {
	keySeeds(f)
	k := keys(f)
	f.Add(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.expired.Raw})...))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificates(data)
		if err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("error %v does not match ErrKey", err)
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
	})
}

// FuzzAPIError: any status and body give a usable, printable error.
func FuzzAPIError(f *testing.F) {
	f.Add(400, []byte(`{"code":"PARAM_ERROR","message":"参数错误","detail":{"field":"x"}}`))
	f.Add(500, []byte("<html>\x00\xff</html>"))
	f.Add(599, []byte(`{"code":"","message":"m"}`))
	f.Add(429, []byte(`{"code":"X\n\u0000Y","detail":null}`))
	f.Add(202, []byte{})
	f.Add(-1, []byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := newAPIError("GET", "/p", status, http.Header{}, body, false)
		if e.Code == "" || e.Message == "" {
			t.Fatalf("empty code or message: %+v", e)
		}
		for _, s := range []string{e.Code, e.Message, e.Error()} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 in %q", s)
			}
			for _, r := range s {
				if r != ' ' && !unicode.IsPrint(r) {
					t.Fatalf("unprintable %U in %q", r, s)
				}
			}
		}
		if n := utf8.RuneCountInString(e.Message); n > 1025 {
			t.Fatalf("message of %d runes", n)
		}
		if len(e.Detail) > 0 && !json.Valid(e.Detail) {
			t.Fatalf("detail is not JSON: %q", e.Detail)
		}
	})
}

// FuzzRetryAfter: never panics, never negative.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "Thu, 01 Jan 2026 00:00:30 GMT", "Monday, 02-Jan-06 15:04:05 MST", "Mon Jan  2 15:04:05 2006", "-5", "1e3", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, testEpoch)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("parseRetryAfter(%q) = %v, %v", v, d, ok)
		}
	})
}
