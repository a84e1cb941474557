# keyclaim: one MSC4072 claim engine, native and as one WebAssembly module.
# `make help` lists the targets. Every target does its own set-up on a fresh machine.

SHELL := /bin/bash
GO ?= go
DIST := dist
WASM := $(DIST)/keyclaim.wasm
SERVER := $(DIST)/keyclaim-server
EMBED := bindings/go/internal/embedded/keyclaim.wasm
# The browser playground (web/): built into web/dist, then copied into the keys server's embed
# directory, so that dist/keyclaim-server serves it (--dev, --playground) without any file.
WEBSITE := web/dist/index.html
WEBEMBED := hostserver/playground/site
WEBSRC := $(wildcard web/src/*.ts web/index.html web/style.css web/sw.js web/build.mjs web/tsconfig.json)
WEBDEPS := web/node_modules/.package-lock.json
# The page reaches the engine through the TypeScript package's browser build (bindings/ts).
TSPKG := bindings/ts/dist/browser.js
PLAYGROUND := $(DIST)/keyclaim-playground
PLAYGROUND_ADDR ?= 127.0.0.1:8090
GOFILES := $(shell find . -name '*.go' -not -path './node_modules/*' -not -path '*/node_modules/*' 2>/dev/null)
WASMSRC := $(wildcard core/*.go wasm/*.go wasm/jumpthread/*.go)
# The module's build command: a wasip1 reactor (c-shared), reproducible (-trimpath), no symbol table.
WASMBUILD := GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -ldflags='-s -w'
# Then its jumps are rewritten to run faster, meaning unchanged (wasm/jumpthread; DESIGN.md).
JUMPTHREAD := $(GO) run ./wasm/jumpthread

.PHONY: help build wasm test test-go test-openapi test-ts test-python bench-python test-rust bench-rust package-rust test-client test-compat test-synapse test-web bench bench-ts bench-server bench-synapse bench-web run lint check fuzz clean web playground

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: wasm $(SERVER) ## build dist/keyclaim.wasm and dist/keyclaim-server

$(SERVER): $(GOFILES) go.mod go.sum $(EMBED) $(WEBEMBED)/index.html
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

test: test-go test-ts test-python test-rust test-client test-compat test-web test-synapse ## run every test: the Go suites, the TypeScript package (Node.js and Chromium), the Python package and the Rust crate (wasmtime), a real client's crypto library, the client compatibility matrix, the playground in Chromium, a real Synapse
	@echo "make test: every test passed"

test-go: wasm ## the Go tests of every package, then the server suite through the wasm engine (starts PostgreSQL when it can)
	@source scripts/test-env.sh && $(GO) test -count=1 ./... && \
		echo "== the keys server suite again through the WebAssembly engine" && \
		KEYCLAIM_TEST_ENGINE=wasm $(GO) test -count=1 ./hostserver/
	@echo "make test-go: all Go tests passed"

test-openapi: ## the OpenAPI conformance suites alone (also part of test-go): answers checked against ../shared/matrix-spec
	$(GO) test -count=1 -run 'OpenAPI|Validator|RequestExamples' ./hostserver/ ./hostserver/internal/specconform/

test-ts: wasm ## the npm package keyclaim (bindings/ts): build, npm pack, install into var/ts-test, every vector on Node.js and in Chromium (apt-get installs chromium if absent)
	bash bindings/ts/scripts/test.sh

PYVENV := var/python-venv
PYTOOLS := var/python-tools
PYDIST := var/python-dist
PYRUN := var/python-run
PYSRC := $(shell find bindings/python/src 2>/dev/null) bindings/python/pyproject.toml bindings/python/hatch_build.py bindings/python/README.md
PYWHEEL := $(PYDIST)/keyclaim-0.1.0-py3-none-any.whl

# The build tools (build, hatchling) in their own venv, installed once.
$(PYTOOLS)/.done:
	@python3 -c 'import ensurepip, venv' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	rm -rf $(PYTOOLS) && python3 -m venv $(PYTOOLS)
	$(PYTOOLS)/bin/pip install -q build 'hatchling>=1.21'
	@touch $@

# The wheel, as a user builds it, with dist/keyclaim.wasm copied in (bindings/python/hatch_build.py).
$(PYWHEEL): $(PYTOOLS)/.done $(WASM) $(PYSRC)
	@rm -rf $(PYDIST)
	$(PYTOOLS)/bin/python -m build --wheel --no-isolation --outdir $(PYDIST) bindings/python
	@test -f $@

# A fresh virtual environment for every new wheel, with the wheel installed as a user would.
$(PYVENV)/.installed: $(PYWHEEL)
	rm -rf $(PYVENV) && python3 -m venv $(PYVENV)
	$(PYVENV)/bin/pip install -q '$(PYWHEEL)[test]'
	@touch $@

test-python: wasm $(PYVENV)/.installed ## the Python package: wheel built and installed into a fresh venv, mypy --strict, pytest (every vector, threads, traps) from outside the source tree
	@mkdir -p $(PYRUN)
	cd $(PYRUN) && $(CURDIR)/$(PYVENV)/bin/mypy --strict --python-version 3.10 --cache-dir .mypy_cache -p keyclaim
	cd $(PYRUN) && $(CURDIR)/$(PYVENV)/bin/mypy --strict --python-version 3.10 --cache-dir .mypy_cache \
		$(CURDIR)/bindings/python/examples/*.py $(CURDIR)/bindings/python/bench.py $(CURDIR)/bindings/python/tests/*.py
	cd $(PYRUN) && $(CURDIR)/$(PYVENV)/bin/python -m pytest -q -p no:cacheprovider $(CURDIR)/bindings/python/tests

bench-python: wasm $(PYVENV)/.installed ## complete_client through the Python package: typed API vs raw invoke
	$(PYVENV)/bin/python bindings/python/bench.py

# Rust: the crate bindings/rust on wasmtime 48 (needs rustc/cargo 1.95+, e.g. from rustup). The
# cargo build is cached outside the clone, so a rerun on the same machine only rebuilds the crate.
CARGO_TARGET_DIR ?= /var/cache/keyclaim/cargo-target
RUSTENV := CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) KEYCLAIM_WASM=$(CURDIR)/$(WASM)
RUST_CRATE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' bindings/rust/Cargo.toml | head -1)

test-rust: wasm ## the Rust crate (bindings/rust): every shared vector typed and raw, threads, traps, README examples, clippy
	@command -v cargo >/dev/null || { echo "make test-rust needs cargo and rustc 1.95 or later (rustup)"; exit 1; }
	@mkdir -p $(CARGO_TARGET_DIR)
	@if cargo fmt --version >/dev/null 2>&1; then cd bindings/rust && cargo fmt --check; fi
	cd bindings/rust && $(RUSTENV) cargo test --release --locked
	@if cargo clippy --version >/dev/null 2>&1; then \
		cd bindings/rust && $(RUSTENV) cargo clippy --release --locked --all-targets -- -D warnings; \
	else echo "cargo clippy is not installed: lint skipped"; fi
	@echo "== the packaged crate as a user gets it: module/keyclaim.wasm inside, no KEYCLAIM_WASM"
	$(MAKE) package-rust
	rm -rf $(CARGO_TARGET_DIR)/unpacked && mkdir -p $(CARGO_TARGET_DIR)/unpacked
	tar xzf $(CARGO_TARGET_DIR)/package/keyclaim-$(RUST_CRATE_VERSION).crate -C $(CARGO_TARGET_DIR)/unpacked
	cd $(CARGO_TARGET_DIR)/unpacked/keyclaim-$(RUST_CRATE_VERSION) && \
		env -u KEYCLAIM_WASM CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) cargo test --release --locked --test engine
	@echo "make test-rust: passed"

bench-rust: wasm ## complete_client at 1, 100, 1,000 devices through the Rust crate: typed API vs raw invoke
	cd bindings/rust && $(RUSTENV) cargo bench --locked --bench complete_client

package-rust: wasm ## the .crate of bindings/rust, with keyclaim.wasm inside (bindings/rust/module/, never committed)
	@mkdir -p bindings/rust/module && cp $(WASM) bindings/rust/module/keyclaim.wasm
	cd bindings/rust && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) cargo package --locked --allow-dirty --no-verify
	@cd bindings/rust && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) cargo package --locked --allow-dirty --list | grep -qx module/keyclaim.wasm && \
		echo "packaged: $(CARGO_TARGET_DIR)/package/keyclaim-$(RUST_CRATE_VERSION).crate (contains module/keyclaim.wasm)"

test-client: build ## a real Matrix client's crypto library (matrix-sdk-crypto-wasm) against the server
	cd clienttest && npm ci --no-audit --no-fund
	$(GO) test -tags realclient -count=1 ./clienttest/

test-compat: build ## the client compatibility matrix: matrix-nio, mautrix-python, mautrix-go, matrix-sdk-crypto against the server in each answer mode (clienttest/compat; writes var/compat/matrix.md)
	bash clienttest/compat/install.sh
	$(GO) test -tags compat -count=1 ./clienttest/compat/

bench: wasm ## run the benchmarks (core, wasm host, engines, store, the TypeScript package on Node.js and Chromium, the Python and Rust packages, then the server load driver)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./core/ ./bindings/go/ ./hostserver/ ./hostserver/store/
	$(MAKE) bench-ts
	$(MAKE) bench-python
	$(MAKE) bench-rust
	$(MAKE) bench-server

bench-ts: wasm ## complete_client through the TypeScript package, typed vs raw invoke, on Node.js and in Chromium
	bash bindings/ts/scripts/test.sh bench

bench-server: build ## load-test dist/keyclaim-server on loopback (native and wasm engines)
	$(GO) run ./bench/loaddriver --server-binary $(SERVER) --engine native,wasm

test-synapse: wasm ## proxy mode in front of a real Synapse and the differential test against it (installs matrix-synapse in ./var/synapse-venv)
	bash scripts/test-synapse.sh

bench-synapse: wasm ## the load driver against a real Synapse and keyclaim, same workload, side by side
	bash scripts/bench-synapse.sh

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
FUZZPKGS := ./core/ ./bindings/go/ ./hostserver/ ./hostserver/federation/ ./hostserver/proxy/ ./wasm/jumpthread/ ./hostserver/playground/

fuzz: wasm ## run every fuzz target of every package for FUZZTIME each (default 30s)
	@for p in $(FUZZPKGS); do \
		for t in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			echo "== $$p $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
		done; done

clean: ## remove build outputs (keeps ./var, the development database)
	rm -rf $(DIST) $(EMBED)
	rm -rf web/dist && find $(WEBEMBED) -mindepth 1 -not -name .gitkeep -delete

web: $(WEBSITE) $(WEBEMBED)/index.html ## build the browser playground into web/dist (and embed it into the keys server)

$(WEBDEPS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund

$(TSPKG): $(WASM) $(wildcard bindings/ts/src/*.ts) bindings/ts/package.json bindings/ts/package-lock.json
	cd bindings/ts && npm ci --no-audit --no-fund && npm run build

$(WEBSITE): $(WASM) $(TSPKG) $(WEBSRC) $(WEBDEPS)
	cd web && npx tsc --noEmit -p . && node build.mjs

$(WEBEMBED)/index.html: $(WEBSITE)
	find $(WEBEMBED) -mindepth 1 -not -name .gitkeep -delete
	cp web/dist/* $(WEBEMBED)/

$(PLAYGROUND): $(GOFILES) go.mod go.sum $(WEBSITE)
	@mkdir -p $(DIST)
	$(GO) build -trimpath -o $@ ./cmd/keyclaim-playground

playground: $(PLAYGROUND) ## build the playground and serve it on PLAYGROUND_ADDR (default 127.0.0.1:8090)
	$(PLAYGROUND) -dir web/dist -addr $(PLAYGROUND_ADDR)

# Debian's chromium, installed once (apt-get update only when it is missing).
CHROMIUM ?= /usr/bin/chromium

test-web: $(PLAYGROUND) $(SERVER) ## the playground end to end in headless Chromium: parity with the native core, errors, live mode, axe-core, screenshots in var/
	@test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core; }
	cd web && CHROMIUM=$(CHROMIUM) node --test --test-concurrency=1 test/e2e.test.mjs

bench-web: $(PLAYGROUND) ## time to interactive and a 1,000-device completion in headless Chromium
	@test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core; }
	cd web && CHROMIUM=$(CHROMIUM) node bench.mjs
