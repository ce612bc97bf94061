// Package wxpay is a client for the WeChat Pay APIv3 endpoints that an
// e-commerce platform (平台收付通) uses to off-board its sub-merchants.
//
// It signs every request (WECHATPAY2-SHA256-RSA2048) with the merchant API
// private key, verifies every response against the WeChat Pay public key or
// platform certificate, retries transient failures with exponential backoff,
// fails over to the backup host when the primary cannot be reached, and
// reports failures as typed errors (see [APIError], [TransportError] and
// [SignatureError]). It knows nothing of NATS.
//
// The simulator in the wxpaysim sub-package speaks the same protocol, for
// tests, demos and benchmarks.
package wxpay
