package wxpay

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
)

// ErrKey is matched (with errors.Is) by every error that key and certificate
// loading returns. The error text says what is wrong with the input but never
// repeats any of its content.
var ErrKey = errors.New("wxpay: unusable key material")

// MinRSABits is the smallest RSA modulus accepted for any key. WeChat Pay issues
// 2048-bit keys.
const MinRSABits = 2048

type keyError struct{ reason string }

func (e *keyError) Error() string        { return "wxpay: " + e.reason }
func (e *keyError) Is(target error) bool { return target == ErrKey }

func keyErr(format string, args ...any) error {
	return &keyError{reason: fmt.Sprintf(format, args...)}
}

// ParsePrivateKey reads the merchant API private key (apiclient_key.pem) from
// PEM, PKCS#8 ("PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"). It refuses, with a
// specific message, an encrypted key, a certificate or public key passed by
// mistake, a non-RSA key and a key shorter than [MinRSABits].
func ParsePrivateKey(pemData []byte) (*rsa.PrivateKey, error) {
	block, err := firstBlock(pemData)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "ENCRYPTED PRIVATE KEY":
		return nil, keyErr("the private key is encrypted; provide it unencrypted (PKCS#8 or PKCS#1)")
	case "CERTIFICATE":
		return nil, keyErr("found a certificate where the private key was expected (apiclient_cert.pem instead of apiclient_key.pem?)")
	case "PUBLIC KEY", "RSA PUBLIC KEY":
		return nil, keyErr("found a public key where the private key was expected")
	}
	if _, ok := block.Headers["Proc-Type"]; ok {
		return nil, keyErr("the private key is encrypted (Proc-Type header); provide it unencrypted")
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, keyErr("the PKCS#8 private key cannot be parsed")
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, keyErr("the private key is %s, not RSA", keyKind(k))
		}
		key = rk
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, keyErr("the PKCS#1 private key cannot be parsed")
		}
		key = k
	default:
		return nil, keyErr("found %s where the private key was expected; want a PEM block PRIVATE KEY or RSA PRIVATE KEY", blockKind(block.Type))
	}
	if n := key.N.BitLen(); n < MinRSABits {
		return nil, keyErr("the private key has %d bits; at least %d are required", n, MinRSABits)
	}
	return key, nil
}

// ParsePublicKey reads the WeChat Pay public key (pub_key.pem) from PEM, PKIX
// ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY"). A certificate is refused: load
// it with [ParseCertificates].
func ParsePublicKey(pemData []byte) (*rsa.PublicKey, error) {
	block, err := firstBlock(pemData)
	if err != nil {
		return nil, err
	}
	var key *rsa.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, keyErr("the public key cannot be parsed")
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, keyErr("the public key is %s, not RSA", keyKind(k))
		}
		key = rk
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, keyErr("the PKCS#1 public key cannot be parsed")
		}
		key = k
	case "CERTIFICATE":
		return nil, keyErr("found a certificate where a public key was expected; configure it as a platform certificate")
	case "PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, keyErr("found a private key where a public key was expected")
	default:
		return nil, keyErr("found %s where a public key was expected; want a PEM block PUBLIC KEY", blockKind(block.Type))
	}
	if n := key.N.BitLen(); n < MinRSABits {
		return nil, keyErr("the public key has %d bits; at least %d are required", n, MinRSABits)
	}
	return key, nil
}

// ParseCertificates reads one or more WeChat Pay platform certificates from
// PEM. Every block must be a certificate with an RSA key of at least
// [MinRSABits]; there must be at least one.
func ParseCertificates(pemData []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemData
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, keyErr("found %s among the platform certificates", blockKind(block.Type))
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, keyErr("platform certificate %d cannot be parsed", len(certs)+1)
		}
		pk, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, keyErr("platform certificate %s does not hold an RSA key", CertificateSerial(c))
		}
		if n := pk.N.BitLen(); n < MinRSABits {
			return nil, keyErr("platform certificate %s has a %d-bit key; at least %d are required", CertificateSerial(c), n, MinRSABits)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, keyErr("no PEM certificate found")
	}
	return certs, nil
}

// CertificateSerial returns a certificate's serial number as WeChat Pay writes
// it: upper-case hexadecimal of the serial's bytes, without separators (so
// always an even number of digits: a serial 0x0ABC is "0ABC").
func CertificateSerial(c *x509.Certificate) string {
	return serialHex(c.SerialNumber)
}

func serialHex(n *big.Int) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf("%X", n.Bytes())
}

func firstBlock(pemData []byte) (*pem.Block, error) {
	if len(pemData) == 0 {
		return nil, keyErr("the key file is empty")
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, keyErr("no PEM block found (is the file PEM-encoded?)")
	}
	return block, nil
}

// blockKind names a PEM block type for an error message without repeating
// input: well-known types are described, anything else is "a PEM block of
// another type".
func blockKind(t string) string {
	switch t {
	case "EC PRIVATE KEY":
		return "an EC private key"
	case "DSA PRIVATE KEY":
		return "a DSA private key"
	case "OPENSSH PRIVATE KEY":
		return "an OpenSSH private key"
	case "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST":
		return "a certificate request"
	case "X509 CRL":
		return "a certificate revocation list"
	case "PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return "a private key"
	case "PUBLIC KEY", "RSA PUBLIC KEY":
		return "a public key"
	case "CERTIFICATE":
		return "a certificate"
	}
	return "a PEM block of another type"
}

// keyKind names the algorithm of a parsed non-RSA key.
func keyKind(k any) string {
	switch k.(type) {
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519"
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return "X25519"
	}
	return "of an unsupported algorithm"
}
