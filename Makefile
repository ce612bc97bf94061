# wxcancel — build, test and run targets. `make help` lists them.

GO        ?= go
PKGS      := ./...
BIN       := bin/wxcancel
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# SIGNER is the RSA implementation requests are signed with: openssl (a cgo
# binding to libcrypto, about three times faster; the default where
# libcrypto's headers are installed: apt-get install libssl-dev) or go
# (crypto/rsa, CGO_ENABLED=0). Both builds are static.
SIGNER    ?= $(shell printf '\043include <openssl/evp.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo openssl || echo go)

.PHONY: help build test lint demo bench chaos fuzz clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

# The OpenSSL build links glibc statically: the linker warns that
# libcrypto's dlopen and host name lookups would need glibc at run time;
# the signer never calls them (no engines, no configuration file, no BIO
# sockets), and netgo and osusergo keep Go's own lookups in Go.
build: ## build bin/wxcancel, static, with the OpenSSL signer where libcrypto is installed (SIGNER=go: crypto/rsa)
ifeq ($(SIGNER),openssl)
	CGO_ENABLED=1 $(GO) build -trimpath -tags openssl,netgo,osusergo \
	  -ldflags '$(LDFLAGS) -linkmode external -extldflags "-static"' -o $(BIN) ./cmd/wxcancel
else
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wxcancel
endif
	@$(BIN) version

lint: ## go vet (both signers) and a gofmt check
	$(GO) vet $(PKGS)
ifeq ($(SIGNER),openssl)
	$(GO) vet -tags openssl ./wxpay/...
endif
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: lint ## lint, then every test (race detector on) with the fuzz seed corpora, and the OpenSSL signer's
	$(GO) test -race -count=1 -timeout 9m $(PKGS)
ifeq ($(SIGNER),openssl)
	$(GO) test -race -count=1 -tags openssl ./wxpay/... ./cmd/wxcancel
else
	@echo "the OpenSSL signer was not tested: libcrypto's headers are missing (apt-get install libssl-dev)"
endif

demo: ## run everything in one process: embedded JetStream, simulator, consumer, one command of each type
	$(GO) run ./cmd/wxcancel demo

bench: ## measure the service against the machine's own limit (see README), with SIGNER's signer
ifeq ($(SIGNER),openssl)
	$(GO) run -tags openssl ./cmd/wxcancel-bench $(BENCHFLAGS)
else
	$(GO) run ./cmd/wxcancel-bench $(BENCHFLAGS)
endif

chaos: ## kill instances and nats-server under load, check the delivery guarantees (CHAOSFLAGS, e.g. -seed 7), with SIGNER's signer
ifeq ($(SIGNER),openssl)
	$(GO) run -tags openssl ./cmd/wxcancel-chaos $(CHAOSFLAGS)
else
	$(GO) run ./cmd/wxcancel-chaos $(CHAOSFLAGS)
endif

fuzz: ## run each fuzz target for FUZZTIME (default 20s)
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} $$pkg || exit 1; \
	  done; \
	done

clean: ## remove build output and the demo's data
	rm -rf bin data
