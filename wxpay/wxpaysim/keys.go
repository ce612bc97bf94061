package wxpaysim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/wxcancel/wxcancel/wxpay"
)

// Merchant is a platform merchant's API identity, generated for the
// simulator: its mchid, the serial number of its API certificate and its
// private key.
type Merchant struct {
	MchID    string
	SerialNo string
	Key      *rsa.PrivateKey
}

// NewMerchant generates a merchant identity with a fresh RSA-2048 key and a
// random 40-hex-digit certificate serial. It fails only when the system's
// randomness does.
func NewMerchant(mchID string) (Merchant, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Merchant{}, fmt.Errorf("wxpaysim: generating a merchant key: %w", err)
	}
	serial := make([]byte, 20)
	if _, err := rand.Read(serial); err != nil {
		return Merchant{}, fmt.Errorf("wxpaysim: generating a certificate serial: %w", err)
	}
	return Merchant{MchID: mchID, SerialNo: fmt.Sprintf("%X", serial), Key: key}, nil
}

// RegisterMerchant makes the simulator accept requests signed by m.
func (s *Server) RegisterMerchant(m Merchant) { s.Register(m.MchID, m.SerialNo, &m.Key.PublicKey) }

// ClientConfig returns a client configuration that signs as m and verifies
// this simulator's answers, pointed at baseURL (the simulator's address) with
// failover disabled. Callers add retry, timeouts and clocks as they need.
func (s *Server) ClientConfig(m Merchant, baseURL string) (wxpay.Config, error) {
	signer, err := wxpay.NewSigner(m.MchID, m.SerialNo, m.Key)
	if err != nil {
		return wxpay.Config{}, err
	}
	verifier, err := wxpay.NewVerifier(wxpay.VerifierConfig{
		PublicKeyID: s.PublicKeyID(),
		PublicKey:   s.PublicKey(),
		Clock:       s.clock,
	})
	if err != nil {
		return wxpay.Config{}, err
	}
	return wxpay.Config{
		Signer:        signer,
		Verifier:      verifier,
		BaseURL:       baseURL,
		BackupBaseURL: wxpay.NoBackup,
		Clock:         s.clock,
	}, nil
}

// EncodePrivateKeyPEM encodes key as a PKCS#8 "PRIVATE KEY" PEM block, the
// form WeChat Pay's certificate tool writes (apiclient_key.pem).
func EncodePrivateKeyPEM(key *rsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("wxpaysim: encoding a private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodePublicKeyPEM encodes key as a PKIX "PUBLIC KEY" PEM block, the form
// of the WeChat Pay public key file (pub_key.pem).
func EncodePublicKeyPEM(key *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("wxpaysim: encoding a public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// KeyFiles names the files [Server.WriteKeys] writes and the values a
// `wxcancel serve` needs to talk to this simulator (WXPAY_MCHID,
// WXPAY_CERT_SERIAL_NO, WXPAY_PRIVATE_KEY_FILE, WXPAY_PUBLIC_KEY_ID,
// WXPAY_PUBLIC_KEY_FILE).
type KeyFiles struct {
	MchID          string
	CertSerialNo   string
	PrivateKeyFile string
	PublicKeyID    string
	PublicKeyFile  string
}

// Env returns f as the environment variables `wxcancel serve` reads.
func (f KeyFiles) Env() []string {
	return []string{
		"WXPAY_MCHID=" + f.MchID,
		"WXPAY_CERT_SERIAL_NO=" + f.CertSerialNo,
		"WXPAY_PRIVATE_KEY_FILE=" + f.PrivateKeyFile,
		"WXPAY_PUBLIC_KEY_ID=" + f.PublicKeyID,
		"WXPAY_PUBLIC_KEY_FILE=" + f.PublicKeyFile,
	}
}

// WriteKeys writes m's private key (apiclient_key.pem, mode 0600) and this
// simulator's public key (pub_key.pem) into dir, creating it, and returns
// what a `wxcancel serve` needs. The simulator's own private key never
// leaves it.
func (s *Server) WriteKeys(dir string, m Merchant) (KeyFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return KeyFiles{}, fmt.Errorf("wxpaysim: creating %s: %w", dir, err)
	}
	priv, err := EncodePrivateKeyPEM(m.Key)
	if err != nil {
		return KeyFiles{}, err
	}
	pub, err := EncodePublicKeyPEM(s.PublicKey())
	if err != nil {
		return KeyFiles{}, err
	}
	f := KeyFiles{
		MchID:          m.MchID,
		CertSerialNo:   m.SerialNo,
		PrivateKeyFile: filepath.Join(dir, "apiclient_key.pem"),
		PublicKeyID:    s.PublicKeyID(),
		PublicKeyFile:  filepath.Join(dir, "pub_key.pem"),
	}
	if err := errors.Join(
		writePrivate(f.PrivateKeyFile, priv),
		os.WriteFile(f.PublicKeyFile, pub, 0o644),
	); err != nil {
		return KeyFiles{}, fmt.Errorf("wxpaysim: writing keys: %w", err)
	}
	return f, nil
}

// writePrivate writes a private key file with mode 0600. os.WriteFile keeps
// the mode of a file that already exists, so an existing file is restricted
// before the key is written into it.
func writePrivate(path string, data []byte) error {
	if err := os.Chmod(path, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
