//go:build !openssl

package wxpay

import "crypto/rsa"

// SignerBackend names the RSA implementation a [Signer] and a [Verifier]
// use in this build: Go's crypto/rsa, or OpenSSL's libcrypto in a build
// with the openssl tag (cgo).
func SignerBackend() string { return "crypto/rsa" }

// OpenSSLSigner reports whether this build signs and verifies with
// OpenSSL's libcrypto (the openssl build tag) rather than crypto/rsa.
const OpenSSLSigner = false

func newDigestSigner(key *rsa.PrivateKey) (digestSigner, error) {
	key.Precompute()
	return goKey{key}, nil
}

func newDigestVerifier(key *rsa.PublicKey) (digestVerifier, error) { return goPublicKey{key}, nil }
