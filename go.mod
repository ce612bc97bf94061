module github.com/wxcancel/wxcancel

go 1.26.0

require (
	github.com/cenkalti/backoff/v4 v4.3.0
	github.com/wechatpay-apiv3/wechatpay-go v0.2.21
)

require github.com/stretchr/testify v1.12.1 // indirect
