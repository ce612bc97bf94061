package wxpay

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// TestSignerMatchesCryptoRSA: whatever RSA implementation the build uses
// (SignerBackend), a Signer makes exactly the signature crypto/rsa makes
// (PKCS#1 v1.5 is deterministic), for messages of every length, with
// merchant keys of 2048 and 3072 bits, from many goroutines at once.
func TestSignerMatchesCryptoRSA(t *testing.T) {
	t.Logf("signer: %s", SignerBackend())
	k3072, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]*rsa.PrivateKey{"2048": keys(t).merchant, "3072": k3072} {
		t.Run(name, func(t *testing.T) {
			s, err := NewSigner(testMchID, testMchSerial, key)
			if err != nil {
				t.Fatal(err)
			}
			rng := mrand.New(mrand.NewPCG(1, uint64(key.N.BitLen())))
			var wg sync.WaitGroup
			for g := range 4 {
				msgs := make([][]byte, 25)
				for i := range msgs {
					msgs[i] = make([]byte, rng.IntN(2048)+g)
					for j := range msgs[i] {
						msgs[i][j] = byte(rng.Uint32())
					}
				}
				wg.Go(func() {
					for _, m := range msgs {
						got, err := s.Sign(m)
						sum := sha256.Sum256(m)
						want, werr := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
						if err != nil || werr != nil || got != base64.StdEncoding.EncodeToString(want) {
							t.Errorf("a %d-byte message: signature differs from crypto/rsa's (%v, %v)", len(m), err, werr)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestSignerBackend: the build names its signer: crypto/rsa, or OpenSSL 3
// with the openssl tag.
func TestSignerBackend(t *testing.T) {
	b := SignerBackend()
	if OpenSSLSigner && !(strings.HasPrefix(b, "OpenSSL 3.") && strings.HasSuffix(b, "(libcrypto)")) {
		t.Errorf("SignerBackend() = %q, want OpenSSL 3.x (libcrypto)", b)
	}
	if !OpenSSLSigner && b != "crypto/rsa" {
		t.Errorf("SignerBackend() = %q in a build without the openssl tag", b)
	}
}

// TestVerifierMatchesCryptoRSA: the build's verification accepts exactly
// the signatures crypto/rsa accepts: a valid one, and not one with a bit
// flipped, cut short, made longer, empty, or made with another key.
func TestVerifierMatchesCryptoRSA(t *testing.T) {
	key, other := keys(t).wechat, keys(t).other
	dv, err := newDigestVerifier(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(`1700000000\nnonce\n{"sub_mchid":"1900000109"}\n`))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.verifyDigest(&sum, sig); err != nil {
		t.Fatalf("a valid signature is refused: %v", err)
	}
	flipped := append([]byte(nil), sig...)
	flipped[100] ^= 1
	byOther, _ := rsa.SignPKCS1v15(nil, other, crypto.SHA256, sum[:])
	otherDigest := sum
	otherDigest[0] ^= 1
	for name, bad := range map[string][]byte{"a bit flipped": flipped, "cut short": sig[:len(sig)-1],
		"longer": append(append([]byte(nil), sig...), 0), "empty": nil, "another key's": byOther} {
		if err := dv.verifyDigest(&sum, bad); err == nil {
			t.Errorf("a signature %s is accepted", name)
		}
	}
	if err := dv.verifyDigest(&otherDigest, sig); err == nil {
		t.Error("the signature of another digest is accepted")
	}
	// The refusals leave the verifier (its reused contexts) as it was.
	if err := dv.verifyDigest(&sum, sig); err != nil {
		t.Errorf("after the refusals, the valid signature is refused: %v", err)
	}
}

// TestVerifierConcurrently: goroutines verifying at once (the OpenSSL
// build shares contexts between them, one at a time), good signatures
// among refused ones, each get crypto/rsa's verdict.
func TestVerifierConcurrently(t *testing.T) {
	key := keys(t).wechat
	dv, err := newDigestVerifier(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		sums := make([][sha256.Size]byte, each)
		sigs := make([][]byte, each)
		for i := range sums {
			sums[i] = sha256.Sum256([]byte{byte(g), byte(i)})
			sigs[i], err = rsa.SignPKCS1v15(nil, key, crypto.SHA256, sums[i][:])
			if err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 {
				sigs[i][i] ^= 1 // refused
			}
		}
		wg.Go(func() {
			for i := range sums {
				want := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sums[i][:], sigs[i]) == nil
				if got := dv.verifyDigest(&sums[i], sigs[i]) == nil; got != want {
					t.Errorf("signature %d/%d: accepted %v, crypto/rsa %v", g, i, got, want)
				}
			}
		})
	}
	wg.Wait()
}
