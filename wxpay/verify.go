package wxpay

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Response signature headers.
const (
	HeaderTimestamp = "Wechatpay-Timestamp"
	HeaderNonce     = "Wechatpay-Nonce"
	HeaderSignature = "Wechatpay-Signature"
	HeaderSerial    = "Wechatpay-Serial"
	HeaderRequestID = "Request-Id"
)

// MaxClockSkew is how far a response timestamp may be from local time: a
// response 5 minutes or more away is refused, as every official SDK does.
const MaxClockSkew = 5 * time.Minute

// PublicKeyIDPrefix starts every WeChat Pay public key id.
const PublicKeyIDPrefix = "PUB_KEY_ID_"

// ErrSignature is matched (with errors.Is) by every *SignatureError.
var ErrSignature = errors.New("wxpay: response signature invalid")

// SignatureReason says why a response signature was refused. It is short and
// stable, for metric labels.
type SignatureReason string

// The reasons a response signature is refused.
const (
	SignatureMissing            SignatureReason = "missing"             // a Wechatpay-* header is absent or empty
	SignatureMalformed          SignatureReason = "malformed"           // timestamp not an integer, signature not Base64
	SignatureUnknownSerial      SignatureReason = "unknown_serial"      // no configured key has the Wechatpay-Serial
	SignatureExpired            SignatureReason = "expired"             // timestamp 5 minutes or more from local time
	SignatureProbe              SignatureReason = "probe"               // WECHATPAY/SIGNTEST/ probe, must fail
	SignatureMismatch           SignatureReason = "mismatch"            // the signature does not verify
	SignatureCertificateExpired SignatureReason = "certificate_expired" // the platform certificate is not valid now
)

// SignatureError reports a response whose signature was refused. It matches
// [ErrSignature]. It never carries the signature itself.
type SignatureError struct {
	Reason SignatureReason
	Serial string // the response's Wechatpay-Serial, when present
	Detail string // a human-readable explanation
}

func (e *SignatureError) Error() string {
	msg := "wxpay: response signature invalid (" + string(e.Reason) + ")"
	if e.Serial != "" {
		msg += " serial " + strconv.Quote(e.Serial)
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Is reports whether target is [ErrSignature].
func (e *SignatureError) Is(target error) bool { return target == ErrSignature }

// VerifierConfig lists the WeChat Pay keys responses may be signed with. At
// least one of PublicKey and Certificates must be set; both may be, during a
// migration from platform certificates to the public key, and then each
// response's Wechatpay-Serial picks the key.
type VerifierConfig struct {
	// PublicKeyID is the id of the WeChat Pay public key, "PUB_KEY_ID_…".
	PublicKeyID string
	// PublicKey is the WeChat Pay public key. Required with PublicKeyID.
	PublicKey *rsa.PublicKey
	// Certificates are WeChat Pay platform certificates, keyed by serial.
	Certificates []*x509.Certificate
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
}

// Validate reports every problem with the configuration at once.
func (c VerifierConfig) Validate() error {
	var errs []error
	if c.PublicKey == nil && len(c.Certificates) == 0 {
		errs = append(errs, errors.New("wxpay: a WeChat Pay public key or a platform certificate is required"))
	}
	if (c.PublicKeyID == "") != (c.PublicKey == nil) {
		errs = append(errs, errors.New("wxpay: the WeChat Pay public key and its id go together"))
	}
	if c.PublicKeyID != "" && !strings.HasPrefix(c.PublicKeyID, PublicKeyIDPrefix) {
		errs = append(errs, fmt.Errorf("wxpay: WeChat Pay public key id must start with %s", PublicKeyIDPrefix))
	}
	for i, cert := range c.Certificates {
		if cert == nil {
			errs = append(errs, fmt.Errorf("wxpay: platform certificate %d is nil", i))
		} else if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
			errs = append(errs, fmt.Errorf("wxpay: platform certificate %s does not hold an RSA key", CertificateSerial(cert)))
		}
	}
	return errors.Join(errs...)
}

type verifyKey struct {
	key       digestVerifier
	notBefore time.Time // zero for a public key
	notAfter  time.Time
}

// digestVerifier checks a PKCS#1 v1.5 signature of a SHA-256 digest with
// one RSA public key: nil, or an error when it does not match. Safe for
// concurrent use. The implementation is the build's, as for signing (see
// [SignerBackend]).
type digestVerifier interface {
	verifyDigest(digest *[sha256.Size]byte, sig []byte) error
}

// goPublicKey verifies with crypto/rsa.
type goPublicKey struct{ key *rsa.PublicKey }

func (k goPublicKey) verifyDigest(digest *[sha256.Size]byte, sig []byte) error {
	return rsa.VerifyPKCS1v15(k.key, crypto.SHA256, digest[:], sig)
}

// Verifier verifies WeChat Pay response signatures. It is immutable and safe
// for concurrent use.
type Verifier struct {
	keys    map[string]verifyKey // public key id, or upper-case certificate serial
	encID   string
	encKey  *rsa.PublicKey
	clock   func() time.Time
	maxSkew time.Duration
	idOrder []string
}

// NewVerifier returns a Verifier for the keys in c, or the problems of c
// (with the OpenSSL signer, also a key libcrypto cannot load).
func NewVerifier(c VerifierConfig) (*Verifier, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{keys: map[string]verifyKey{}, clock: c.Clock, maxSkew: MaxClockSkew}
	if v.clock == nil {
		v.clock = time.Now
	}
	if c.PublicKey != nil {
		dv, err := newDigestVerifier(c.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("wxpay: WeChat Pay public key %s: %w", c.PublicKeyID, err)
		}
		v.keys[c.PublicKeyID] = verifyKey{key: dv}
		v.idOrder = append(v.idOrder, c.PublicKeyID)
		v.encID, v.encKey = c.PublicKeyID, c.PublicKey
	}
	var newest *x509.Certificate
	for _, cert := range c.Certificates {
		serial := CertificateSerial(cert)
		dv, err := newDigestVerifier(cert.PublicKey.(*rsa.PublicKey))
		if err != nil {
			return nil, fmt.Errorf("wxpay: platform certificate %s: %w", serial, err)
		}
		v.keys[serial] = verifyKey{key: dv, notBefore: cert.NotBefore, notAfter: cert.NotAfter}
		v.idOrder = append(v.idOrder, serial)
		if newest == nil || cert.NotAfter.After(newest.NotAfter) {
			newest = cert
		}
	}
	if v.encKey == nil {
		v.encID, v.encKey = CertificateSerial(newest), newest.PublicKey.(*rsa.PublicKey)
	}
	return v, nil
}

// lookup finds the key named by a Wechatpay-Serial: a public key id exactly,
// a certificate serial in either case and with or without leading zeros.
func (v *Verifier) lookup(serial string) (verifyKey, bool) {
	if k, ok := v.keys[serial]; ok {
		return k, true
	}
	if len(serial) > 64 {
		return verifyKey{}, false
	}
	norm := strings.TrimLeft(strings.ToUpper(serial), "0")
	for id, k := range v.keys {
		if norm != "" && !k.notAfter.IsZero() && strings.TrimLeft(id, "0") == norm {
			return k, true
		}
	}
	return verifyKey{}, false
}

// KeyIDs returns the public key id and certificate serials the Verifier
// accepts, in configuration order.
func (v *Verifier) KeyIDs() []string { return append([]string(nil), v.idOrder...) }

// EncryptionKey returns the key that sensitive request fields are encrypted
// with, and the id that the request's Wechatpay-Serial must name: the public
// key when configured (WeChat Pay's recommended mode), else the platform
// certificate that expires last.
func (v *Verifier) EncryptionKey() (id string, key *rsa.PublicKey) { return v.encID, v.encKey }

// Verify checks the signature of a response with headers h and raw body. It
// returns nil or a *SignatureError.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	ts, nonce, sig, rawSerial := h.Get(HeaderTimestamp), h.Get(HeaderNonce), h.Get(HeaderSignature), h.Get(HeaderSerial)
	serial := printable(rawSerial, 64) // as errors show it, whatever the header holds
	switch {
	case sig == "" && ts == "" && nonce == "" && rawSerial == "":
		return &SignatureError{Reason: SignatureMissing, Detail: "the response carries no Wechatpay-* signature headers"}
	case sig == "":
		return &SignatureError{Reason: SignatureMissing, Serial: serial, Detail: "no Wechatpay-Signature header"}
	case ts == "":
		return &SignatureError{Reason: SignatureMissing, Serial: serial, Detail: "no Wechatpay-Timestamp header"}
	case nonce == "":
		return &SignatureError{Reason: SignatureMissing, Serial: serial, Detail: "no Wechatpay-Nonce header"}
	case rawSerial == "":
		return &SignatureError{Reason: SignatureMissing, Detail: "no Wechatpay-Serial header"}
	}
	if strings.HasPrefix(sig, ProbeSignaturePrefix) {
		return &SignatureError{Reason: SignatureProbe, Serial: serial, Detail: "WeChat Pay signature probe (WECHATPAY/SIGNTEST/); refused as it must be"}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return &SignatureError{Reason: SignatureMalformed, Serial: serial, Detail: "Wechatpay-Timestamp is not an integer"}
	}
	now := v.clock()
	if skew, ok := TimestampSkew(now, sec); !ok {
		return &SignatureError{Reason: SignatureExpired, Serial: serial,
			Detail: fmt.Sprintf("Wechatpay-Timestamp is centuries from local time (limit %s)", v.maxSkew)}
	} else if skew >= v.maxSkew {
		return &SignatureError{Reason: SignatureExpired, Serial: serial,
			Detail: fmt.Sprintf("Wechatpay-Timestamp is %s from local time (limit %s)", skew.Truncate(time.Second), v.maxSkew)}
	}
	k, ok := v.lookup(rawSerial)
	if !ok {
		return &SignatureError{Reason: SignatureUnknownSerial, Serial: serial,
			Detail: "no configured WeChat Pay public key or platform certificate has this serial; configured: " + strings.Join(v.idOrder, ", ")}
	}
	if !k.notAfter.IsZero() && (now.Before(k.notBefore) || now.After(k.notAfter)) {
		return &SignatureError{Reason: SignatureCertificateExpired, Serial: serial,
			Detail: fmt.Sprintf("platform certificate valid %s to %s", k.notBefore.Format(time.RFC3339), k.notAfter.Format(time.RFC3339))}
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return &SignatureError{Reason: SignatureMalformed, Serial: serial, Detail: "Wechatpay-Signature is not Base64"}
	}
	sum := sha256.Sum256(ResponseMessage(ts, nonce, body))
	if err := k.key.verifyDigest(&sum, raw); err != nil {
		return &SignatureError{Reason: SignatureMismatch, Serial: serial, Detail: "the signature does not match the response"}
	}
	return nil
}

// maxSkewSeconds is about the longest distance a Duration holds (292 years),
// less a second of margin for the fraction of now.
const maxSkewSeconds = math.MaxInt64/int64(time.Second) - 1

// TimestampSkew returns how far the Unix timestamp sec (of a signed request
// or answer) lies from now, in either direction. ok is false when it lies
// further than a Duration holds (about 292 years): the distance is not
// computed then, as it would overflow.
func TimestampSkew(now time.Time, sec int64) (skew time.Duration, ok bool) {
	if n := now.Unix(); sec < n-maxSkewSeconds || sec > n+maxSkewSeconds {
		return 0, false
	}
	skew = now.Sub(time.Unix(sec, 0))
	if skew < 0 {
		skew = -skew
	}
	return skew, true
}
