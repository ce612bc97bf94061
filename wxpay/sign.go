package wxpay

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// AuthScheme is the scheme of the Authorization header of APIv3 requests.
const AuthScheme = "WECHATPAY2-SHA256-RSA2048"

// ProbeSignaturePrefix starts the Wechatpay-Signature of the probe responses
// that WeChat Pay sends to check that merchants really verify signatures. Such
// a response must fail verification.
const ProbeSignaturePrefix = "WECHATPAY/SIGNTEST/"

// RequestMessage builds the string a request signature covers:
// METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n, where URI is the escaped path and
// query exactly as sent and BODY the exact bytes sent (empty for none).
func RequestMessage(method, uri string, timestamp int64, nonce string, body []byte) []byte {
	ts := strconv.FormatInt(timestamp, 10)
	b := make([]byte, 0, len(method)+len(uri)+len(ts)+len(nonce)+len(body)+5)
	b = append(b, method...)
	b = append(b, '\n')
	b = append(b, uri...)
	b = append(b, '\n')
	b = append(b, ts...)
	b = append(b, '\n')
	b = append(b, nonce...)
	b = append(b, '\n')
	b = append(b, body...)
	b = append(b, '\n')
	return b
}

// ResponseMessage builds the string a response (or notification) signature
// covers: TIMESTAMP\nNONCE\nBODY\n, BODY being the raw bytes received (empty
// for 204).
func ResponseMessage(timestamp, nonce string, body []byte) []byte {
	b := make([]byte, 0, len(timestamp)+len(nonce)+len(body)+3)
	b = append(b, timestamp...)
	b = append(b, '\n')
	b = append(b, nonce...)
	b = append(b, '\n')
	b = append(b, body...)
	b = append(b, '\n')
	return b
}

// Signer signs with an RSA private key (SHA256withRSA, PKCS#1 v1.5) and
// builds APIv3 Authorization headers for one merchant. It is safe for
// concurrent use. The RSA implementation is the build's (see
// [SignerBackend]); PKCS#1 v1.5 is deterministic, so every implementation
// makes the same bytes.
type Signer struct {
	mchID    string
	serialNo string
	key      digestSigner
}

// digestSigner makes the PKCS#1 v1.5 signature of a SHA-256 digest with one
// RSA private key; safe for concurrent use.
type digestSigner interface {
	signDigest(digest *[sha256.Size]byte) ([]byte, error)
}

// goKey signs with crypto/rsa.
type goKey struct{ key *rsa.PrivateKey }

func (k goKey) signDigest(digest *[sha256.Size]byte) ([]byte, error) {
	return rsa.SignPKCS1v15(nil, k.key, crypto.SHA256, digest[:])
}

// NewSigner returns a Signer for merchant mchID whose API certificate has
// serial number serialNo. None of the arguments may be empty or nil; with
// the OpenSSL signer, a key that libcrypto cannot load is refused too.
func NewSigner(mchID, serialNo string, key *rsa.PrivateKey) (*Signer, error) {
	var errs []error
	if mchID == "" {
		errs = append(errs, errors.New("wxpay: signer needs the merchant id"))
	}
	if serialNo == "" {
		errs = append(errs, errors.New("wxpay: signer needs the certificate serial number"))
	}
	if key == nil {
		errs = append(errs, errors.New("wxpay: signer needs a private key"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	ds, err := newDigestSigner(key)
	if err != nil {
		return nil, err
	}
	return &Signer{mchID: mchID, serialNo: serialNo, key: ds}, nil
}

// MchID returns the merchant id the Signer signs for.
func (s *Signer) MchID() string { return s.mchID }

// SerialNo returns the serial number of the merchant API certificate.
func (s *Signer) SerialNo() string { return s.serialNo }

// Sign returns the standard-Base64 SHA256withRSA signature of message.
func (s *Signer) Sign(message []byte) (string, error) {
	sum := sha256.Sum256(message)
	sig, err := s.key.signDigest(&sum)
	if err != nil {
		return "", fmt.Errorf("wxpay: signing: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// Authorization signs one request and returns the value of its Authorization
// header. uri is the escaped path and query as sent; body the exact bytes
// sent. Every attempt of a request needs its own timestamp and nonce.
func (s *Signer) Authorization(method, uri string, body []byte, timestamp int64, nonce string) (string, error) {
	sig, err := s.Sign(RequestMessage(method, uri, timestamp, nonce, body))
	if err != nil {
		return "", err
	}
	return Authorization{
		MchID:     s.mchID,
		Nonce:     nonce,
		Timestamp: strconv.FormatInt(timestamp, 10),
		SerialNo:  s.serialNo,
		Signature: sig,
	}.header(), nil
}

// Authorization is the content of a parsed APIv3 Authorization header. Its
// String method never prints the signature.
type Authorization struct {
	MchID     string
	Nonce     string
	Timestamp string
	SerialNo  string
	Signature string
}

func (a Authorization) header() string {
	var b strings.Builder
	b.Grow(len(AuthScheme) + len(a.MchID) + len(a.Nonce) + len(a.Timestamp) + len(a.SerialNo) + len(a.Signature) + 70)
	b.WriteString(AuthScheme)
	b.WriteString(` mchid="`)
	b.WriteString(a.MchID)
	b.WriteString(`",nonce_str="`)
	b.WriteString(a.Nonce)
	b.WriteString(`",timestamp="`)
	b.WriteString(a.Timestamp)
	b.WriteString(`",serial_no="`)
	b.WriteString(a.SerialNo)
	b.WriteString(`",signature="`)
	b.WriteString(a.Signature)
	b.WriteString(`"`)
	return b.String()
}

// String describes the header without its signature.
func (a Authorization) String() string {
	return fmt.Sprintf("%s mchid=%q nonce_str=%q timestamp=%q serial_no=%q signature=[redacted]",
		AuthScheme, a.MchID, a.Nonce, a.Timestamp, a.SerialNo)
}

// ErrAuthorization is matched by every error [ParseAuthorization] returns.
var ErrAuthorization = errors.New("wxpay: malformed Authorization header")

type authError struct{ reason string }

func (e *authError) Error() string        { return "wxpay: malformed Authorization header: " + e.reason }
func (e *authError) Is(target error) bool { return target == ErrAuthorization }

// maxAuthorizationLen bounds the header ParseAuthorization accepts; a real one
// is about 600 bytes.
const maxAuthorizationLen = 4096

// ParseAuthorization parses an APIv3 Authorization header: the scheme, one
// space, then mchid, nonce_str, timestamp, serial_no and signature as
// comma-separated key="value" pairs in any order. Each key must appear exactly
// once; unknown keys, empty values and a non-numeric timestamp are refused.
// Error messages never repeat the signature.
func ParseAuthorization(header string) (Authorization, error) {
	var a Authorization
	if len(header) > maxAuthorizationLen {
		return a, &authError{"too long"}
	}
	rest, ok := strings.CutPrefix(header, AuthScheme+" ")
	if !ok {
		return a, &authError{"scheme is not " + AuthScheme}
	}
	seen := map[string]bool{}
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return a, &authError{"expected key=\"value\""}
		}
		key := strings.TrimSpace(rest[:eq])
		rest = rest[eq+1:]
		if len(rest) == 0 || rest[0] != '"' {
			return a, &authError{fmt.Sprintf("value of %s is not quoted", printableKey(key))}
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return a, &authError{fmt.Sprintf("value of %s has no closing quote", printableKey(key))}
		}
		val := rest[1 : 1+end]
		rest = rest[end+2:]
		if rest != "" {
			if rest[0] != ',' {
				return a, &authError{"expected a comma between pairs"}
			}
			rest = rest[1:]
			if rest == "" {
				return a, &authError{"trailing comma"}
			}
		}
		if seen[key] {
			return a, &authError{fmt.Sprintf("%s appears twice", printableKey(key))}
		}
		seen[key] = true
		if val == "" {
			return a, &authError{fmt.Sprintf("%s is empty", printableKey(key))}
		}
		switch key {
		case "mchid":
			a.MchID = val
		case "nonce_str":
			a.Nonce = val
		case "timestamp":
			if _, err := strconv.ParseInt(val, 10, 64); err != nil {
				return a, &authError{"timestamp is not an integer"}
			}
			a.Timestamp = val
		case "serial_no":
			a.SerialNo = val
		case "signature":
			a.Signature = val
		default:
			return a, &authError{fmt.Sprintf("unknown key %s", printableKey(key))}
		}
	}
	for _, k := range [...]string{"mchid", "nonce_str", "timestamp", "serial_no", "signature"} {
		if !seen[k] {
			return a, &authError{k + " is missing"}
		}
	}
	return a, nil
}

func printableKey(k string) string {
	if len(k) > 20 {
		k = k[:20]
	}
	return strconv.Quote(k)
}

// NonceFunc returns a fresh nonce for each request attempt.
type NonceFunc func() (string, error)

const nonceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// RandomNonce returns a NonceFunc drawing 32 alphanumeric characters from r
// (crypto/rand.Reader when r is nil).
func RandomNonce(r io.Reader) NonceFunc {
	if r == nil {
		r = rand.Reader
	}
	return func() (string, error) {
		var buf [32]byte
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", fmt.Errorf("wxpay: nonce: %w", err)
		}
		for i, c := range buf {
			// 256 is not a multiple of 62; the slight bias does not matter for
			// a replay-protection nonce that only has to be unique.
			buf[i] = nonceAlphabet[int(c)%len(nonceAlphabet)]
		}
		return string(buf[:]), nil
	}
}
