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
//
// Signatures are made on threads of the key's own (see signThreads), not
// in a cgo call of the goroutine that asks: a call as long as a signature
// (about 0.27 ms) makes the Go runtime hand the goroutine's P to another
// thread and take one back afterwards, and keeps its sysmon thread waking
// every few tens of microseconds to do so.

/*
#cgo LDFLAGS: -lcrypto -lpthread
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
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

// WX_MAX_SIG bounds a signature: an RSA key of up to 8192 bits.
#define WX_MAX_SIG 1024

// wx_job is one signature to make: the digest in, the signature or the
// error out. Jobs live in C memory: the signing threads use them after the
// cgo call that queued them has returned.
typedef struct wx_job {
	unsigned char digest[32];
	unsigned char sig[WX_MAX_SIG];
	size_t siglen;
	int ok;
	int slot; // index in its pool's jobs
	char err[256];
	struct wx_job *next;
} wx_job;

struct wx_pool;

// wx_thread is one signing thread and its own context.
typedef struct wx_thread {
	struct wx_pool *p;
	EVP_PKEY_CTX *ctx; // NULL until made
	pthread_t t;
} wx_thread;

// wx_pool is a key's signing threads and the jobs they take from a queue.
// A thread puts a signed job on the done list, and when that list was
// empty writes to efd, which the Go side reads through its poller.
typedef struct wx_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	wx_job *head, *tail; // queued, oldest first
	wx_job *done;        // signed, not yet taken
	int idle;            // threads waiting on cv
	int quit;
	int efd;
	EVP_PKEY *pkey;
	wx_thread *threads;
	int nthreads; // length of threads
	int running;  // threads started, the first of them
	wx_job *jobs;
} wx_pool;

// wx_sign_ns is the CPU time the signing threads of every key have spent
// in EVP_PKEY_sign, in nanoseconds.
static uint64_t wx_sign_ns;

static uint64_t wx_thread_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t wx_signing_ns(void) { return __atomic_load_n(&wx_sign_ns, __ATOMIC_RELAXED); }

static void *wx_worker(void *arg) {
	wx_pool *p = ((wx_thread *)arg)->p;
	EVP_PKEY_CTX *ctx = ((wx_thread *)arg)->ctx;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (p->head == NULL && !p->quit) {
			p->idle++;
			pthread_cond_wait(&p->cv, &p->mu);
			p->idle--;
		}
		if (p->head == NULL) { // quit, and nothing left
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		wx_job *j = p->head;
		p->head = j->next;
		if (p->head == NULL) {
			p->tail = NULL;
		}
		pthread_mutex_unlock(&p->mu);

		j->siglen = sizeof j->sig;
		uint64_t t0 = wx_thread_ns();
		j->ok = EVP_PKEY_sign(ctx, j->sig, &j->siglen, j->digest, 32) > 0;
		__atomic_add_fetch(&wx_sign_ns, wx_thread_ns() - t0, __ATOMIC_RELAXED);
		if (!j->ok) {
			wx_error(j->err, sizeof j->err);
		}

		pthread_mutex_lock(&p->mu);
		int first = p->done == NULL;
		j->next = p->done;
		p->done = j;
		pthread_mutex_unlock(&p->mu);
		if (first) {
			uint64_t one = 1;
			// Cannot fail short of a bad descriptor: the counter is far
			// from its maximum, since every read resets it.
			(void)!write(p->efd, &one, sizeof one);
		}
	}
}

// wx_pool_stop makes the threads finish the queued jobs and end, and
// waits for them.
static void wx_pool_stop(wx_pool *p) {
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->running; i++) {
		pthread_join(p->threads[i].t, NULL);
	}
	p->running = 0;
}

// wx_pool_free frees a stopped pool: its contexts, jobs, descriptor and
// the key.
static void wx_pool_free(wx_pool *p) {
	for (int i = 0; i < p->nthreads && p->threads != NULL; i++) {
		EVP_PKEY_CTX_free(p->threads[i].ctx);
	}
	if (p->efd >= 0) { // still ours: not yet handed to Go
		close(p->efd);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	EVP_PKEY_free(p->pkey);
	free(p->threads);
	free(p->jobs);
	free(p);
}

// wx_pool_new starts n threads signing with pkey (which the pool owns from
// then on, and frees) and makes slots jobs. NULL on failure, described in
// err, with nothing left running and pkey freed.
static wx_pool *wx_pool_new(EVP_PKEY *pkey, int n, int slots, char *err, size_t errn) {
	wx_pool *p = calloc(1, sizeof *p);
	if (p == NULL) {
		EVP_PKEY_free(pkey);
		snprintf(err, errn, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->pkey = pkey;
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	p->threads = calloc(n, sizeof *p->threads);
	p->nthreads = n;
	p->jobs = calloc(slots, sizeof *p->jobs);
	if (p->efd < 0 || p->threads == NULL || p->jobs == NULL) {
		snprintf(err, errn, p->efd < 0 ? "eventfd failed" : "out of memory");
		wx_pool_free(p);
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		wx_thread *t = &p->threads[i];
		t->p = p;
		t->ctx = wx_ctx(pkey, 1, err, errn);
		int started = t->ctx != NULL && pthread_create(&t->t, NULL, wx_worker, t) == 0;
		if (!started) {
			if (t->ctx != NULL) {
				snprintf(err, errn, "cannot start a signing thread");
			}
			wx_pool_stop(p);
			wx_pool_free(p);
			return NULL;
		}
		p->running = i + 1;
	}
	for (int i = 0; i < slots; i++) {
		p->jobs[i].slot = i;
	}
	return p;
}

static wx_job *wx_pool_job(wx_pool *p, int slot) { return &p->jobs[slot]; }

// wx_pool_submit queues j, waking a thread if one is waiting.
static void wx_pool_submit(wx_pool *p, wx_job *j) {
	j->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail != NULL) {
		p->tail->next = j;
	} else {
		p->head = j;
	}
	p->tail = j;
	int wake = p->idle > 0;
	pthread_mutex_unlock(&p->mu);
	if (wake) {
		pthread_cond_signal(&p->cv);
	}
}

// wx_pool_take returns the signed jobs, linked by next, and empties the
// done list.
static wx_job *wx_pool_take(wx_pool *p) {
	pthread_mutex_lock(&p->mu);
	wx_job *d = p->done;
	p->done = NULL;
	pthread_mutex_unlock(&p->mu);
	return d;
}

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
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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

// libcryptoKey is an RSA private key held by libcrypto, and the threads
// that sign with it.
type libcryptoKey struct {
	size    int // signature length in bytes
	signers *signThreads
}

// signThreadCount is how many threads a key signs on: GOMAXPROCS as the
// program starts (the CPUs it may use, its cgroup's CPU limit, or
// $GOMAXPROCS), read before anything changes it.
var signThreadCount = runtime.GOMAXPROCS(0)

// signSlots bounds the signatures queued on one key's threads at once; a
// signature asked for beyond it waits for a slot.
const signSlots = 128

// signThreads signs with one key on threads of its own, outside the Go
// scheduler. A goroutine takes a job slot, queues the digest and waits for
// its slot's signal; the threads make the signatures, and a goroutine of
// the key's (deliver) reads their wake-up through the runtime's poller and
// signals the slots. Everything is stopped and freed by the key's cleanup,
// once no signature can be in progress.
type signThreads struct {
	pool    *C.wx_pool
	free    chan int        // slots not in use
	done    []chan struct{} // done[i] is signalled once slot i's job is signed
	wake    *os.File        // the pool's eventfd
	closing atomic.Bool     // set by stop before its last wake-up
	stopped chan struct{}   // closed once deliver has freed the pool
}

// SigningCPU returns the CPU time the OpenSSL signer's threads have spent
// making signatures, for every key, since the program started, and true;
// in a build without the openssl tag, where a signature is Go code in the
// goroutine that asks, it returns 0 and false. It counts the RSA work
// alone, not the hand-off of the digest and the signature.
func SigningCPU() (time.Duration, bool) {
	return time.Duration(C.wx_signing_ns()), true
}

// startSignThreads starts n threads signing with pkey, which they own from
// then on (freed with them, or now if they cannot start).
func startSignThreads(pkey *C.EVP_PKEY, n int) (*signThreads, error) {
	var msg [errBufLen]C.char
	pool := C.wx_pool_new(pkey, C.int(n), signSlots, &msg[0], errBufLen)
	if pool == nil {
		return nil, fmt.Errorf("wxpay: cannot start the OpenSSL signing threads: %s", C.GoString(&msg[0]))
	}
	t := &signThreads{
		pool: pool, free: make(chan int, signSlots), done: make([]chan struct{}, signSlots),
		// A non-blocking descriptor: os.NewFile gives it to the poller.
		wake: os.NewFile(uintptr(pool.efd), "wxpay-signing"), stopped: make(chan struct{}),
	}
	for i := range signSlots {
		t.done[i] = make(chan struct{}, 1)
		t.free <- i
	}
	go t.deliver()
	return t, nil
}

// sign makes the PKCS#1 v1.5 signature of a SHA-256 digest with the key,
// waiting first for a free slot when signSlots signatures are queued.
func (t *signThreads) sign(digest *[sha256.Size]byte) ([]byte, error) {
	slot := <-t.free
	defer func() { t.free <- slot }()
	j := C.wx_pool_job(t.pool, C.int(slot))
	j.digest = *(*[sha256.Size]C.uchar)(unsafe.Pointer(digest))
	C.wx_pool_submit(t.pool, j)
	<-t.done[slot]
	if j.ok != 1 {
		return nil, errors.New("OpenSSL: " + C.GoString(&j.err[0]))
	}
	return C.GoBytes(unsafe.Pointer(&j.sig[0]), C.int(j.siglen)), nil
}

// deliver signals the slots of the jobs the threads have signed, each time
// they write to the eventfd, until stop; then it frees the pool.
func (t *signThreads) deliver() {
	defer close(t.stopped)
	var buf [8]byte
	for {
		_, err := t.wake.Read(buf[:])
		if t.closing.Load() {
			break
		}
		if err != nil {
			// Not expected of an eventfd; the jobs are taken all the same,
			// and the read is tried again.
			time.Sleep(time.Millisecond)
		}
		for j := C.wx_pool_take(t.pool); j != nil; {
			next := j.next // the slot may be reused as soon as it is signalled
			t.done[int(j.slot)] <- struct{}{}
			j = next
		}
	}
	_ = t.wake.Close() // the eventfd is t.wake's to close, not wx_pool_free's
	t.pool.efd = -1
	C.wx_pool_free(t.pool)
}

// stop ends the threads and deliver; the key's cleanup, which runs once.
func (t *signThreads) stop() {
	C.wx_pool_stop(t.pool)
	t.closing.Store(true)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = t.wake.Write(one[:])
}

// ctxPool keeps verification contexts of one public key, so that a
// verification does not make and set one up each time (about 7 µs of its
// 22). A context is used by one goroutine at a time; the pool keeps at
// most its capacity, freeing the rest, and is freed with its key.
type ctxPool struct {
	pkey *C.EVP_PKEY
	idle chan *C.EVP_PKEY_CTX
}

func newCtxPool(pkey *C.EVP_PKEY) *ctxPool {
	return &ctxPool{pkey: pkey, idle: make(chan *C.EVP_PKEY_CTX, 2*runtime.NumCPU())}
}

// get returns an idle context, or a new one.
func (p *ctxPool) get() (*C.EVP_PKEY_CTX, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	var msg [errBufLen]C.char
	c := C.wx_ctx(p.pkey, 0, &msg[0], errBufLen)
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
// reference to): the key's cleanup, once no verification can be in
// progress.
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
	size := int(C.EVP_PKEY_get_size(p))
	if size > C.WX_MAX_SIG {
		C.EVP_PKEY_free(p)
		return nil, fmt.Errorf("wxpay: the OpenSSL signer takes RSA keys of up to %d bits, not %d", C.WX_MAX_SIG*8, key.N.BitLen())
	}
	signers, err := startSignThreads(p, signThreadCount)
	if err != nil {
		return nil, err
	}
	k := &libcryptoKey{size: size, signers: signers}
	runtime.AddCleanup(k, (*signThreads).stop, signers)
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
	sig, err := k.signers.sign(digest)
	runtime.KeepAlive(k) // the threads are not stopped while they sign for k
	return sig, err
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
	k := &libcryptoPublicKey{ctxs: newCtxPool(p)}
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
