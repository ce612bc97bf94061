// Package wxpaysim is a WeChat Pay APIv3 simulator for the merchant
// cancellation endpoints (平台收付通 二级商户注销). It is a real HTTP handler:
// it verifies every request signature as WeChat Pay does (401 SIGN_ERROR for
// a wrong signature, an unknown merchant or serial, a timestamp 5 minutes or
// more off, or a reused nonce), signs every response with its own WeChat Pay
// public key ("PUB_KEY_ID_…"), keeps a stateful model of sub-merchants,
// cancel-withdraw applications, old-flow cancel applications and
// apply4subject applyments, answers with the documented business errors, and
// injects faults per endpoint or per id (see [Fault] and [ParseFaults]).
//
// It serves tests, the demo and the benchmarks. It is not WeChat Pay: where
// the public documentation is silent (the answer to a duplicate
// out_request_no, say) it answers as described on the method that handles
// the request.
package wxpaysim
