package main

import (
	"math"
	"testing"
)

func TestParseSpeed(t *testing.T) {
	// OpenSSL 3.0's output, its progress lines included.
	out := "+DTP:2048:private:rsa:2\n+R1:8142:2048:2.00\n+DTP:2048:public:rsa:2\n+R2:136446:2048:2.00\n+F2:2:2048:4071.000000:68223.000000\n"
	sign, verify, err := parseSpeed(out)
	if err != nil || math.Abs(sign-1000.0/4071) > 1e-9 || math.Abs(verify-1000.0/68223) > 1e-9 {
		t.Errorf("parseSpeed = %v, %v, %v", sign, verify, err)
	}
	for _, bad := range []string{"", "+F2:2:4096:1:1\n", "+F2:2:2048:x:1\n", "+F2:2:2048:0:1\n"} {
		if _, _, err := parseSpeed(bad); err == nil {
			t.Errorf("parseSpeed(%q) accepted", bad)
		}
	}
}
