//go:build openssl && cgo

package wxpay

import (
	"strings"
	"testing"
)

const opensslBuild = true

// TestSignerBackendOpenSSL: the openssl build signs with OpenSSL 3 and
// says which.
func TestSignerBackendOpenSSL(t *testing.T) {
	if b := SignerBackend(); !strings.HasPrefix(b, "OpenSSL 3.") || !strings.HasSuffix(b, "(libcrypto)") {
		t.Errorf("SignerBackend() = %q, want OpenSSL 3.x (libcrypto)", b)
	}
}
