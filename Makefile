# wxcancel — build, test and run targets. `make help` lists them.

GO        ?= go
PKGS      := ./...
BIN       := bin/wxcancel
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: help build test lint demo bench chaos fuzz clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build bin/wxcancel
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wxcancel

lint: ## go vet and a gofmt check
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: lint ## lint, then every test (race detector on) with the fuzz seed corpora
	$(GO) test -race -count=1 -timeout 9m $(PKGS)

demo: ## run everything in one process: embedded JetStream, simulator, consumer, one command of each type
	$(GO) run ./cmd/wxcancel demo

bench: ## measure the service against the machine's own limit (see README)
	$(GO) run ./cmd/wxcancel-bench

chaos: ## kill instances and nats-server under load, check the delivery guarantees (CHAOSFLAGS, e.g. -seed 7)
	$(GO) run ./cmd/wxcancel-chaos $(CHAOSFLAGS)

fuzz: ## run each fuzz target for FUZZTIME (default 20s)
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} $$pkg || exit 1; \
	  done; \
	done

clean: ## remove build output and the demo's data
	rm -rf bin data
