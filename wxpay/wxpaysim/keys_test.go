package wxpaysim_test

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

func TestNewMerchant(t *testing.T) {
	t.Parallel()
	_, m := sharedKeys(t)
	if m.MchID != platformMchID || m.Key == nil || m.Key.N.BitLen() != 2048 {
		t.Errorf("merchant %q with a %d-bit key", m.MchID, m.Key.N.BitLen())
	}
	if !regexp.MustCompile(`^[0-9A-F]{40}$`).MatchString(m.SerialNo) {
		t.Errorf("serial %q is not 40 upper-case hex digits", m.SerialNo)
	}
}

// TestWriteKeys checks that the files WriteKeys writes load with the
// client's key parsers, that the private key is readable by its owner only,
// and that the environment names all five settings.
func TestWriteKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	dir := filepath.Join(t.TempDir(), "keys", "sub")
	// A leftover, world-readable key file must not keep its mode.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "apiclient_key.pem"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "apiclient_key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := e.sim.WriteKeys(dir, e.merchant)
	if err != nil {
		t.Fatalf("WriteKeys: %v", err)
	}
	fresh, err := e.sim.WriteKeys(filepath.Join(t.TempDir(), "new"), e.merchant)
	if err != nil {
		t.Fatalf("WriteKeys into a new directory: %v", err)
	}
	for _, kf := range []wxpaysim.KeyFiles{f, fresh} {
		privPEM, err := os.ReadFile(kf.PrivateKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		priv, err := wxpay.ParsePrivateKey(privPEM)
		if err != nil {
			t.Fatalf("ParsePrivateKey(%s): %v", kf.PrivateKeyFile, err)
		}
		if !priv.Equal(e.merchant.Key) {
			t.Error("the private key file holds another key")
		}
		pubPEM, err := os.ReadFile(kf.PublicKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := wxpay.ParsePublicKey(pubPEM)
		if err != nil {
			t.Fatalf("ParsePublicKey(%s): %v", kf.PublicKeyFile, err)
		}
		if !pub.Equal(e.sim.PublicKey()) {
			t.Error("the public key file holds another key")
		}
		if strings.Contains(string(pubPEM), "PRIVATE") {
			t.Error("the public key file holds a private key")
		}
		if runtime.GOOS != "windows" {
			st, err := os.Stat(kf.PrivateKeyFile)
			if err != nil {
				t.Fatal(err)
			}
			if mode := st.Mode().Perm(); mode != 0o600 {
				t.Errorf("%s has mode %o, want 600", kf.PrivateKeyFile, mode)
			}
		}
		want := []string{
			"WXPAY_MCHID=" + platformMchID,
			"WXPAY_CERT_SERIAL_NO=" + e.merchant.SerialNo,
			"WXPAY_PRIVATE_KEY_FILE=" + kf.PrivateKeyFile,
			"WXPAY_PUBLIC_KEY_ID=" + e.sim.PublicKeyID(),
			"WXPAY_PUBLIC_KEY_FILE=" + kf.PublicKeyFile,
		}
		if got := kf.Env(); !slices.Equal(got, want) {
			t.Errorf("Env() = %q, want %q", got, want)
		}
	}
	if filepath.Dir(f.PrivateKeyFile) != dir || filepath.Dir(f.PublicKeyFile) != dir {
		t.Errorf("files %s and %s are not in %s", f.PrivateKeyFile, f.PublicKeyFile, dir)
	}

	// A client built from the files talks to the simulator.
	privPEM, _ := os.ReadFile(f.PrivateKeyFile)
	pubPEM, _ := os.ReadFile(f.PublicKeyFile)
	priv, _ := wxpay.ParsePrivateKey(privPEM)
	pub, _ := wxpay.ParsePublicKey(pubPEM)
	signer, err := wxpay.NewSigner(f.MchID, f.CertSerialNo, priv)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := wxpay.NewVerifier(wxpay.VerifierConfig{PublicKeyID: f.PublicKeyID, PublicKey: pub, Clock: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	c, err := wxpay.NewClient(wxpay.Config{Signer: signer, Verifier: verifier, BaseURL: e.srv.URL, Clock: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	if _, _, err := c.ValidateCancel(t.Context(), subMchid); err != nil {
		t.Errorf("client from the written files: %v", err)
	}
}

// TestWriteKeysError checks that WriteKeys reports a directory it cannot
// create.
func TestWriteKeysError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.WriteKeys(filepath.Join(file, "keys"), e.merchant); err == nil {
		t.Error("WriteKeys under a regular file succeeded")
	}
}

// TestClientConfig checks the configuration ClientConfig produces: it
// signs as the merchant, verifies the simulator, shares its clock and never
// fails over.
func TestClientConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	cfg, err := e.sim.ClientConfig(e.merchant, e.srv.URL)
	if err != nil {
		t.Fatalf("ClientConfig: %v", err)
	}
	if cfg.BaseURL != e.srv.URL || cfg.BackupBaseURL != wxpay.NoBackup || cfg.Signer.MchID() != platformMchID ||
		cfg.Signer.SerialNo() != e.merchant.SerialNo || !slices.Equal(cfg.Verifier.KeyIDs(), []string{e.sim.PublicKeyID()}) {
		t.Errorf("config: base %q, backup %q, signer %s/%s, verifier keys %v", cfg.BaseURL, cfg.BackupBaseURL,
			cfg.Signer.MchID(), cfg.Signer.SerialNo(), cfg.Verifier.KeyIDs())
	}
	if id, key := cfg.Verifier.EncryptionKey(); id != e.sim.PublicKeyID() || !key.Equal(e.sim.PublicKey()) {
		t.Errorf("encryption key %s", id)
	}
	if !cfg.Clock().Equal(epoch) {
		t.Errorf("client clock %v, want the simulator's %v", cfg.Clock(), epoch)
	}
	c, err := wxpay.NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
	// A year on the shared clock: requests and answers still agree on the
	// time.
	e.clock.Advance(365 * 24 * time.Hour)
	if _, _, err := c.ValidateCancel(t.Context(), subMchid); err != nil {
		t.Errorf("ValidateCancel: %v", err)
	}

	if _, err := e.sim.ClientConfig(wxpaysim.Merchant{MchID: platformMchID}, e.srv.URL); err == nil {
		t.Error("ClientConfig accepted a merchant without a key")
	}
}
