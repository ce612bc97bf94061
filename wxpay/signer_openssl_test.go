//go:build openssl && cgo

package wxpay

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestSignThreadsMoreCallersThanSlots: with more goroutines signing at once
// than a key has job slots, every signature still comes back to the
// goroutine that asked for it, identical to crypto/rsa's.
func TestSignThreadsMoreCallersThanSlots(t *testing.T) {
	key := keys(t).merchant
	s, err := NewSigner(testMchID, testMchSerial, key)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 2*signSlots + 3 {
		wg.Go(func() {
			for i := range 2 {
				m := []byte("message " + strconv.Itoa(g) + "/" + strconv.Itoa(i))
				got, err := s.Sign(m)
				sum := sha256.Sum256(m)
				want, werr := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
				if err != nil || werr != nil || got != base64.StdEncoding.EncodeToString(want) {
					t.Errorf("%q: got another signature than crypto/rsa's (%v, %v)", m, err, werr)
				}
			}
		})
	}
	wg.Wait()
}

// TestSignThreadsEndWithTheKey: a signer's threads, and the goroutine that
// hands their signatures back, end once the signer is collected.
func TestSignThreadsEndWithTheKey(t *testing.T) {
	var threads *signThreads
	func() {
		s, err := NewSigner(testMchID, testMchSerial, keys(t).merchant)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sign([]byte("once")); err != nil {
			t.Fatal(err)
		}
		threads = s.key.(*libcryptoKey).signers
	}()
	deadline := time.After(30 * time.Second)
	for {
		runtime.GC()
		select {
		case <-threads.stopped:
			return
		case <-deadline:
			t.Fatal("the collected signer's threads still run after 30 s")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestSigningCPUCountsSignatures: the signing threads' CPU grows with the
// signatures they make (the benchmark prices a signature by it).
func TestSigningCPUCountsSignatures(t *testing.T) {
	s, err := NewSigner(testMchID, testMchSerial, keys(t).merchant)
	if err != nil {
		t.Fatal(err)
	}
	before, ok := SigningCPU()
	if !ok {
		t.Fatal("SigningCPU() is not measured in the OpenSSL build")
	}
	for i := range 20 {
		if _, err := s.Sign([]byte("message " + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := SigningCPU(); after <= before {
		t.Errorf("SigningCPU() went from %v to %v over 20 signatures", before, after)
	}
}
