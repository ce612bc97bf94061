package wxpay

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // #nosec G505 -- RSAES-OAEP with SHA-1 is what WeChat Pay APIv3 prescribes for sensitive fields.
	"encoding/base64"
	"fmt"
	"io"
)

// EncryptSensitive encrypts one sensitive request field (a bank account name
// or number, a person's name or id number) for WeChat Pay: RSAES-OAEP with
// SHA-1 and MGF1-SHA-1 under pub, the WeChat Pay public key or platform
// certificate key, returned in standard padded Base64. The request carrying
// it must name the same key in its Wechatpay-Serial header.
//
// r supplies the OAEP seed; crypto/rand.Reader when nil. Encrypting the same
// plaintext twice gives different ciphertexts, so encrypt once per call and
// resend the same bytes on retries. The plaintext never appears in an
// error; an error matches [ErrInvalidArgument] when pub is nil or the
// plaintext is empty or too long for the key (214 bytes for a 2048-bit key).
func EncryptSensitive(pub *rsa.PublicKey, plaintext string, r io.Reader) (string, error) {
	if pub == nil || pub.N == nil || pub.N.Sign() <= 0 {
		return "", invalidArgument("no public key to encrypt with")
	}
	if plaintext == "" {
		return "", invalidArgument("refusing to encrypt an empty value")
	}
	if max := pub.Size() - 2*sha1.Size - 2; len(plaintext) > max {
		return "", invalidArgument("a sensitive value of %d bytes is longer than the %d bytes the key can encrypt", len(plaintext), max)
	}
	if r == nil {
		r = rand.Reader
	}
	ct, err := rsa.EncryptOAEP(sha1.New(), r, pub, []byte(plaintext), nil)
	if err != nil {
		// The standard library's errors name no plaintext.
		return "", fmt.Errorf("wxpay: encrypting a sensitive field: %w", err)
	}
	return base64.StdEncoding.EncodeToString(ct), nil
}
