# Two commands: `make run` and `make test`. Each installs what is missing first,
# and skips what is already there.

SHELL := /bin/bash
# cargo-installed tools (wasm-bindgen) live in $CARGO_HOME/bin.
CARGO_BIN := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
export PATH := $(CARGO_BIN):$(PATH)

# Mission Control is built with cargo and the wasm-bindgen CLI directly, the
# steps cargo-leptos runs: a fresh machine then skips compiling cargo-leptos
# (15-22 minutes). `make watch` installs it for live reload while developing.
CARGO_LEPTOS_VERSION := 0.3.10
# The wasm-bindgen CLI must be exactly the version in Cargo.lock.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
SITE := target/site
# The browser bundle is always the optimised one (opt-level z, LTO): it is what
# users get, and what the browser tests and the transfer-size test measure.
WASM := target/front/wasm32-unknown-unknown/wasm-release/herald.wasm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-rust test-e2e test-e2e-release test-faults bench bench-peers build build-release site watch deps deps-test clean

## make run: serve the release build at http://127.0.0.1:3000 on the embedded database.
run: build-release
	LEPTOS_SITE_ROOT=$(SITE) ./target/release/herald

## make test: every test, against a throw-away PostgreSQL and a real Chromium,
## the fault-injection suite included.
test: deps-test
	scripts/with-postgres.sh cargo test --features ssr
	scripts/with-postgres.sh cargo test --features ssr --test faults -- --ignored --nocapture
	@# The server binary `cargo test` built for the integration tests serves the
	@# browser tests: `cargo build` would compile it again without the
	@# dev-dependencies' features (about 2 minutes on a fresh machine).
	$(MAKE) --no-print-directory site
	./target/debug/herald site $(SITE)
	scripts/with-postgres.sh scripts/e2e.sh

## make bench: throughput and latency figures (release build). BENCH_ARGS=--quick for a short run.
bench: build-release
	./target/release/herald bench $(BENCH_ARGS)

## make bench-peers: graphile-worker and Herald's throughput runs alternated on the same
## PostgreSQL cluster, three rounds; prints each ratio with its spread. BENCH_ARGS=--events 20000 for a short run.
PEER_BENCH ?= ../shared/peers/graphile-bench.mjs
GRAPHILE_WORKER_VERSION := 0.17.3
bench-peers: build-release
	@[ -f "$(PEER_BENCH)" ] || { echo "no peer bench at $(PEER_BENCH): set PEER_BENCH=path/to/graphile-bench.mjs"; exit 1; }
	@command -v node >/dev/null || { echo "the peer needs Node.js: apt-get install nodejs npm"; exit 1; }
	@mkdir -p target/peers && cp "$(PEER_BENCH)" target/peers/graphile-bench.mjs
	@[ -d target/peers/node_modules/graphile-worker ] || (cd target/peers && echo '{"private":true,"type":"module"}' > package.json \
		&& npm install --no-audit --no-fund graphile-worker@$(GRAPHILE_WORKER_VERSION))
	./target/release/herald bench --scenarios peers --peer-graphile target/peers/graphile-bench.mjs $(BENCH_ARGS)

## make test-faults: the fault-injection suite alone (Herald killed and restarted under load).
test-faults:
	scripts/with-postgres.sh cargo test --features ssr --test faults -- --ignored --nocapture

test-rust:
	scripts/with-postgres.sh cargo test --features ssr

## make test-e2e: the browser tests against the debug server.
test-e2e: deps-test build
	scripts/with-postgres.sh scripts/e2e.sh

## make test-e2e-release: the browser tests against the release build, as `make run` serves it.
test-e2e-release: deps-test build-release
	HERALD_BIN=target/release/herald scripts/with-postgres.sh scripts/e2e.sh

## make build: the debug server and the site.
build: site
	cargo build --features ssr --bin herald
	./target/debug/herald site $(SITE)

build-release: site
	cargo build --release --features ssr --bin herald
	./target/release/herald site $(SITE)

# The browser bundle: the wasm library, its JS glue, the stylesheet and public/.
# `herald site` (run by build and build-release) then fingerprints and compresses it.
site: deps
	cargo build --lib --target wasm32-unknown-unknown --target-dir target/front \
		--no-default-features --features hydrate --profile wasm-release
	@mkdir -p $(SITE)/pkg
	wasm-bindgen $(WASM) --target web --no-typescript --out-name herald --out-dir $(SITE)/pkg
	cp style/main.css $(SITE)/pkg/herald.css
	cp -R public/. $(SITE)/

## make watch: rebuild and reload on every change (installs cargo-leptos once, about 15 minutes).
watch: deps
	@cargo leptos --version 2>/dev/null | grep -q " $(CARGO_LEPTOS_VERSION)" \
		|| cargo install cargo-leptos --version $(CARGO_LEPTOS_VERSION) --locked
	PATH=$(CURDIR)/scripts/bin:$$PATH cargo leptos watch

deps:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@wasm-bindgen --version 2>/dev/null | grep -q " $(WASM_BINDGEN_VERSION)$$" \
		|| { echo "Installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (a few minutes, once)"; \
		     cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --force; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| { echo "PostgreSQL server binaries are missing: apt-get install postgresql"; exit 1; }

deps-test: deps
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y chromium \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	@[ -d end2end/node_modules/@playwright/test ] && [ -d end2end/node_modules/@axe-core/playwright ] \
		|| (cd end2end && npm ci --no-audit --no-fund)

clean:
	cargo clean
	rm -rf end2end/node_modules end2end/test-results
