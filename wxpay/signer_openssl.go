//go:build openssl && cgo

package wxpay

// The OpenSSL signer: a minimal binding to libcrypto (OpenSSL 3), which
// signs RSA-2048 about three times faster than crypto/rsa on x86-64, and
// verifies twice as fast. Build
// with -tags openssl and cgo; libcrypto's headers come with Debian's
// libssl-dev. The key is handed over once, as PKCS#1 DER (wiped
// afterwards), and freed with the Signer. OpenSSL reads no configuration
// file (OPENSSL_INIT_NO_LOAD_CONFIG): the signer does not change with the
// host's openssl.cnf.

/*
#cgo LDFLAGS: -lcrypto
#include <stdio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

static int wx_init(void) {
	return OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
}

// wx_error describes the oldest error queued on this thread and empties
// the queue. OpenSSL's error strings name the library, function and
// reason, never key material.
static void wx_error(char *buf, size_t n) {
	unsigned long e = ERR_get_error();
	if (e == 0) {
		snprintf(buf, n, "no error reported");
	} else {
		ERR_error_string_n(e, buf, n);
	}
	ERR_clear_error();
}

// wx_load reads an RSA key from PKCS#1 DER: a private key when private is
// set, else a public one.
static EVP_PKEY *wx_load(int private, const unsigned char *der, long n, char *err, size_t errn) {
	const unsigned char *p = der;
	EVP_PKEY *k = private ? d2i_PrivateKey(EVP_PKEY_RSA, NULL, &p, n) : d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, n);
	if (k == NULL) {
		wx_error(err, errn);
	}
	return k;
}

// wx_ctx makes a context that signs (sign set) or verifies with k,
// PKCS#1 v1.5 over SHA-256 digests. EVP_PKEY_sign and EVP_PKEY_verify may
// be called on it again and again with the same parameters (OpenSSL's
// EVP_PKEY_sign(3)), by one thread at a time. NULL on failure, described
// in err.
static EVP_PKEY_CTX *wx_ctx(EVP_PKEY *k, int sign, char *err, size_t errn) {
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
	int ok = ctx != NULL
		&& (sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) > 0
		&& EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0
		&& EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0;
	if (!ok) {
		wx_error(err, errn);
		EVP_PKEY_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int wx_sign(EVP_PKEY_CTX *ctx, const unsigned char *digest, unsigned char *sig, size_t *siglen, char *err, size_t errn) {
	int ok = EVP_PKEY_sign(ctx, sig, siglen, digest, 32) > 0;
	if (!ok) {
		wx_error(err, errn);
	}
	return ok;
}

// wx_verify returns 1 when sig is the signature of digest; a mismatch, or
// a signature of the wrong length, is 0, its queued errors dropped.
static int wx_verify(EVP_PKEY_CTX *ctx, const unsigned char *digest, const unsigned char *sig, size_t siglen) {
	int ok = EVP_PKEY_verify(ctx, sig, siglen, digest, 32) == 1;
	ERR_clear_error();
	return ok;
}
*/
import "C"

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// SignerBackend names the RSA implementation a [Signer] uses in this
// build: OpenSSL's libcrypto, with its version; crypto/rsa in a build
// without the openssl tag.
func SignerBackend() string {
	if err := initLibcrypto(); err != nil {
		return "OpenSSL (failed to initialise: " + err.Error() + ")"
	}
	return C.GoString(C.OpenSSL_version(C.OPENSSL_VERSION)) + " (libcrypto)"
}

// OpenSSLSigner reports whether this build signs and verifies with
// OpenSSL's libcrypto (the openssl build tag) rather than crypto/rsa.
const OpenSSLSigner = true

var initLibcrypto = sync.OnceValue(func() error {
	if C.wx_init() != 1 {
		return errors.New("wxpay: OpenSSL failed to initialise")
	}
	return nil
})

// libcryptoKey is an RSA private key held by libcrypto.
type libcryptoKey struct {
	size int      // signature length in bytes
	ctxs *ctxPool // holds the key, and frees it
}

// ctxPool keeps contexts of one key made for one operation, so that a
// signature or verification does not make and set one up each time (about
// 5 µs of a signature's 270, 7 µs of a verification's 22). A context is
// used by one goroutine at a time; the pool keeps at most its capacity,
// freeing the rest, and is freed with its key.
type ctxPool struct {
	pkey *C.EVP_PKEY
	sign C.int
	idle chan *C.EVP_PKEY_CTX
}

func newCtxPool(pkey *C.EVP_PKEY, sign bool) *ctxPool {
	p := &ctxPool{pkey: pkey, idle: make(chan *C.EVP_PKEY_CTX, 2*runtime.NumCPU())}
	if sign {
		p.sign = 1
	}
	return p
}

// get returns an idle context, or a new one.
func (p *ctxPool) get() (*C.EVP_PKEY_CTX, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	var msg [errBufLen]C.char
	c := C.wx_ctx(p.pkey, p.sign, &msg[0], errBufLen)
	if c == nil {
		return nil, errors.New("OpenSSL: " + C.GoString(&msg[0]))
	}
	return c, nil
}

// put gives c back, or frees it when the pool is full.
func (p *ctxPool) put(c *C.EVP_PKEY_CTX) {
	select {
	case p.idle <- c:
	default:
		C.EVP_PKEY_CTX_free(c)
	}
}

// free frees the idle contexts and the key (which the contexts held a
// reference to): the key's cleanup, once no signature can be in progress.
func (p *ctxPool) free() {
	for {
		select {
		case c := <-p.idle:
			C.EVP_PKEY_CTX_free(c)
		default:
			C.EVP_PKEY_free(p.pkey)
			return
		}
	}
}

// errBufLen bounds an OpenSSL error description.
const errBufLen = 256

func newDigestSigner(key *rsa.PrivateKey) (digestSigner, error) {
	if err := initLibcrypto(); err != nil {
		return nil, err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	defer clear(der)
	var msg [errBufLen]C.char
	p := C.wx_load(1, (*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)), &msg[0], errBufLen)
	if p == nil {
		return nil, fmt.Errorf("wxpay: OpenSSL cannot load the private key: %s", C.GoString(&msg[0]))
	}
	k := &libcryptoKey{size: int(C.EVP_PKEY_get_size(p)), ctxs: newCtxPool(p, true)}
	runtime.AddCleanup(k, (*ctxPool).free, k.ctxs)
	// A self-check: the key libcrypto holds is the key given.
	var digest [sha256.Size]byte
	sig, err := k.signDigest(&digest)
	if err == nil {
		err = rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig)
	}
	if err != nil {
		return nil, fmt.Errorf("wxpay: the OpenSSL signer fails its self-check: %w", err)
	}
	return k, nil
}

func (k *libcryptoKey) signDigest(digest *[sha256.Size]byte) ([]byte, error) {
	ctx, err := k.ctxs.get()
	if err != nil {
		return nil, err
	}
	sig := make([]byte, k.size)
	n := C.size_t(len(sig))
	var msg [errBufLen]C.char
	ok := C.wx_sign(ctx, (*C.uchar)(unsafe.Pointer(&digest[0])), (*C.uchar)(unsafe.Pointer(&sig[0])), &n, &msg[0], errBufLen)
	k.ctxs.put(ctx)
	runtime.KeepAlive(k) // the key is not freed while libcrypto uses it
	if ok != 1 {
		return nil, errors.New("OpenSSL: " + C.GoString(&msg[0]))
	}
	return sig[:n], nil
}

// libcryptoPublicKey is an RSA public key held by libcrypto.
type libcryptoPublicKey struct{ ctxs *ctxPool }

func newDigestVerifier(key *rsa.PublicKey) (digestVerifier, error) {
	if err := initLibcrypto(); err != nil {
		return nil, err
	}
	der := x509.MarshalPKCS1PublicKey(key)
	var msg [errBufLen]C.char
	p := C.wx_load(0, (*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)), &msg[0], errBufLen)
	if p == nil {
		return nil, fmt.Errorf("OpenSSL cannot load the public key: %s", C.GoString(&msg[0]))
	}
	k := &libcryptoPublicKey{ctxs: newCtxPool(p, false)}
	runtime.AddCleanup(k, (*ctxPool).free, k.ctxs)
	return k, nil
}

func (k *libcryptoPublicKey) verifyDigest(digest *[sha256.Size]byte, sig []byte) error {
	if len(sig) == 0 {
		return rsa.ErrVerification
	}
	ctx, err := k.ctxs.get()
	if err != nil {
		return err
	}
	ok := C.wx_verify(ctx, (*C.uchar)(unsafe.Pointer(&digest[0])), (*C.uchar)(unsafe.Pointer(&sig[0])), C.size_t(len(sig)))
	k.ctxs.put(ctx)
	runtime.KeepAlive(k)
	if ok != 1 {
		return rsa.ErrVerification
	}
	return nil
}
