//go:build !openssl

package wxpay

const opensslBuild = false
