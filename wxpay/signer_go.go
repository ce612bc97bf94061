//go:build !openssl

package wxpay

import (
	"crypto/rsa"
	"time"
)

// SignerBackend names the RSA implementation a [Signer] and a [Verifier]
// use in this build: Go's crypto/rsa, or OpenSSL's libcrypto in a build
// with the openssl tag (cgo).
func SignerBackend() string { return "crypto/rsa" }

// OpenSSLSigner reports whether this build signs and verifies with
// OpenSSL's libcrypto (the openssl build tag) rather than crypto/rsa.
const OpenSSLSigner = false

// SigningCPU returns the CPU time the OpenSSL signer's threads have spent
// making signatures, and true, in a build with the openssl tag; in this
// build, where a signature is Go code in the goroutine that asks, it
// returns 0 and false.
func SigningCPU() (time.Duration, bool) { return 0, false }

func newDigestSigner(key *rsa.PrivateKey) (digestSigner, error) {
	key.Precompute()
	return goKey{key}, nil
}

func newDigestVerifier(key *rsa.PublicKey) (digestVerifier, error) { return goPublicKey{key}, nil }
