package consumer

import (
	"errors"
	"fmt"
	"os"

	"github.com/wxcancel/wxcancel/wxpay"
)

// ClientConfig reads the key files named by c and returns the WeChat Pay
// client configuration, or every problem found in one error. Errors name the
// setting and the file, never the file's content.
func (c Config) ClientConfig() (wxpay.Config, error) {
	var errs []error
	read := func(env, path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: cannot read %s", env, path))
			return nil
		}
		return b
	}
	var signer *wxpay.Signer
	if c.PrivateKeyFile != "" {
		if b := read("WXPAY_PRIVATE_KEY_FILE", c.PrivateKeyFile); b != nil {
			key, err := wxpay.ParsePrivateKey(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("WXPAY_PRIVATE_KEY_FILE %s: %w", c.PrivateKeyFile, err))
			} else if signer, err = wxpay.NewSigner(c.MchID, c.CertSerialNo, key); err != nil {
				errs = append(errs, err)
			}
		}
	}
	vc := wxpay.VerifierConfig{PublicKeyID: c.PublicKeyID}
	if c.PublicKeyFile != "" {
		if b := read("WXPAY_PUBLIC_KEY_FILE", c.PublicKeyFile); b != nil {
			key, err := wxpay.ParsePublicKey(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("WXPAY_PUBLIC_KEY_FILE %s: %w", c.PublicKeyFile, err))
			}
			vc.PublicKey = key
		}
	}
	if c.PlatformCertFile != "" {
		if b := read("WXPAY_PLATFORM_CERT_FILE", c.PlatformCertFile); b != nil {
			certs, err := wxpay.ParseCertificates(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("WXPAY_PLATFORM_CERT_FILE %s: %w", c.PlatformCertFile, err))
			}
			vc.Certificates = certs
		}
	}
	var verifier *wxpay.Verifier
	if len(errs) == 0 {
		var err error
		if verifier, err = wxpay.NewVerifier(vc); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return wxpay.Config{}, err
	}
	return wxpay.Config{
		Signer:        signer,
		Verifier:      verifier,
		BaseURL:       c.BaseURL,
		BackupBaseURL: c.BackupBaseURL,
		Retry: wxpay.RetryPolicy{
			InitialInterval: c.RetryInitialInterval,
			MaxInterval:     c.RetryMaxInterval,
			MaxElapsed:      c.RetryMaxElapsed,
		},
		MaxConcurrency: c.Concurrency,
	}, nil
}
