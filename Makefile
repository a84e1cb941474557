# keyclaim: one MSC4072 claim engine, native and as one WebAssembly module.
# `make help` lists the targets. Every target does its own set-up on a fresh machine.

SHELL := /bin/bash
GO ?= go
DIST := dist
WASM := $(DIST)/keyclaim.wasm
SERVER := $(DIST)/keyclaim-server
EMBED := bindings/go/internal/embedded/keyclaim.wasm
GOFILES := $(shell find . -name '*.go' -not -path './node_modules/*' -not -path '*/node_modules/*' 2>/dev/null)
WASMSRC := $(wildcard core/*.go wasm/*.go wasm/jumpthread/*.go)
# The module's build command: a wasip1 reactor (c-shared), reproducible (-trimpath), no symbol table.
WASMBUILD := GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -ldflags='-s -w'
# Then its jumps are rewritten to run faster, meaning unchanged (wasm/jumpthread; DESIGN.md).
JUMPTHREAD := $(GO) run ./wasm/jumpthread

.PHONY: help build wasm test test-go test-openapi test-node test-python test-client test-synapse bench bench-server run lint check fuzz clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: wasm $(SERVER) ## build dist/keyclaim.wasm and dist/keyclaim-server

$(SERVER): $(GOFILES) go.mod go.sum $(EMBED)
	@mkdir -p $(DIST)
	$(GO) build -trimpath -o $@ ./cmd/keyclaim-server

wasm: $(WASM) $(EMBED) ## build the WebAssembly module dist/keyclaim.wasm

$(WASM): $(WASMSRC) go.mod
	@mkdir -p $(DIST)
	$(WASMBUILD) -o $@.plain ./wasm
	$(JUMPTHREAD) $@.plain $@
	@rm -f $@.plain
	@ls -l $@ | awk '{print "built " $$9 " (" $$5 " bytes)"}'

$(EMBED): $(WASM)
	@mkdir -p $(dir $@)
	cp $(WASM) $@

test: test-go test-node test-python test-client test-synapse ## run every test: the Go suites, the vectors on Node.js and wasmtime, a real client's crypto library, a real Synapse
	@echo "make test: every test passed"

test-go: wasm ## the Go tests of every package, then the server suite through the wasm engine (starts PostgreSQL when it can)
	@source scripts/test-env.sh && $(GO) test -count=1 ./... && \
		echo "== the keys server suite again through the WebAssembly engine" && \
		KEYCLAIM_TEST_ENGINE=wasm $(GO) test -count=1 ./hostserver/
	@echo "make test-go: all Go tests passed"

test-openapi: ## the OpenAPI conformance suites alone (also part of test-go): answers checked against ../shared/matrix-spec
	$(GO) test -count=1 -run 'OpenAPI|Validator|RequestExamples' ./hostserver/ ./hostserver/internal/specconform/

test-node: wasm ## the shared vectors through the module on Node.js (V8), with bindings/node's minimal host
	cd bindings/node && node --test

PYVENV := var/python-venv

test-python: wasm ## the shared vectors through the module on wasmtime (Python), with bindings/python's minimal host
	@test -x $(PYVENV)/bin/pip || { rm -rf $(PYVENV) && python3 -m venv $(PYVENV); }
	$(PYVENV)/bin/pip install -q -r bindings/python/requirements.txt
	cd bindings/python && $(CURDIR)/$(PYVENV)/bin/python -m unittest -v test_vectors

test-client: build ## a real Matrix client's crypto library (matrix-sdk-crypto-wasm) against the server
	cd clienttest && npm ci --no-audit --no-fund
	$(GO) test -tags realclient -count=1 ./clienttest/

bench: wasm ## run the benchmarks (core, wasm host, engines, store, the module on Node.js, then the server load driver)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./core/ ./bindings/go/ ./hostserver/ ./hostserver/store/
	cd bindings/node && node bench.mjs
	$(MAKE) bench-server

bench-server: build ## load-test dist/keyclaim-server on loopback (native and wasm engines)
	$(GO) run ./bench/loaddriver --server-binary $(SERVER) --engine native,wasm

test-synapse: wasm ## proxy mode in front of a real Synapse (installs matrix-synapse in ./var/synapse-venv)
	bash scripts/test-synapse.sh

run: build ## start the keys server on its embedded default (SQLite under ./var, dev tokens)
	$(SERVER) --dev

lint: ## gofmt and go vet (native and wasip1)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./core/... ./wasm/...

check: wasm lint ## lint, import boundaries, wasip1 build of core, tidy and clean tree
	$(GO) test -count=1 -run 'Imports|ImportsHostserver' ./core/
	GOOS=wasip1 GOARCH=wasm $(GO) build ./core/...
	$(GO) mod tidy
	@if [ -n "$$(git status --porcelain go.mod go.sum)" ]; then echo "go mod tidy changed go.mod/go.sum: commit the result"; git --no-pager diff go.mod go.sum; exit 1; fi
	@if [ -n "$$(git status --porcelain)" ]; then echo "the tree is dirty:"; git status --short; exit 1; fi
	@echo "make check: clean"

FUZZTIME ?= 30s
FUZZPKGS := ./core/ ./bindings/go/ ./hostserver/ ./hostserver/federation/ ./hostserver/proxy/ ./wasm/jumpthread/

fuzz: wasm ## run every fuzz target of every package for FUZZTIME each (default 30s)
	@for p in $(FUZZPKGS); do \
		for t in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			echo "== $$p $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
		done; done

clean: ## remove build outputs (keeps ./var, the development database)
	rm -rf $(DIST) $(EMBED)
