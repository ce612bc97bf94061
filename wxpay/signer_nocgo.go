//go:build openssl && !cgo

package wxpay

// The OpenSSL signer is a cgo binding to libcrypto: a build with the
// openssl tag and cgo off must not fall back to crypto/rsa unnoticed.
const _ int = "wxpay: the openssl build tag needs cgo (CGO_ENABLED=1 and a C compiler)"
