# Two commands: `make run` and `make test`. Each installs what is missing first,
# and skips what is already there.

SHELL := /bin/bash
# scripts/bin holds a pass-through wasm-opt: Debian's binaryen breaks today's
# wasm-bindgen output (see the script).
export PATH := $(CURDIR)/scripts/bin:$(HOME)/.cargo/bin:$(PATH)

CARGO_LEPTOS_VERSION := 0.3.10
# cargo-leptos needs a wasm-bindgen CLI of exactly the version in Cargo.lock.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-rust test-e2e test-faults bench build build-release deps deps-test clean

## make run: serve the release build at http://127.0.0.1:3000 on the embedded database.
run: build-release
	LEPTOS_SITE_ROOT=target/site ./target/release/herald

## make test: every test, against a throw-away PostgreSQL and a real Chromium,
## the fault-injection suite included.
test: deps-test
	scripts/with-postgres.sh cargo test --features ssr
	scripts/with-postgres.sh cargo test --features ssr --test faults -- --ignored --nocapture
	cargo leptos build
	scripts/with-postgres.sh scripts/e2e.sh

## make bench: throughput and latency figures (release build). BENCH_ARGS=--quick for a short run.
bench: build-release
	./target/release/herald bench $(BENCH_ARGS)

## make test-faults: the fault-injection suite alone (Herald killed and restarted under load).
test-faults:
	scripts/with-postgres.sh cargo test --features ssr --test faults -- --ignored --nocapture

test-rust:
	scripts/with-postgres.sh cargo test --features ssr

test-e2e: deps-test
	cargo leptos build
	scripts/with-postgres.sh scripts/e2e.sh

build-release: deps
	cargo leptos build --release

build: deps
	cargo leptos build

deps:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@cargo leptos --version 2>/dev/null | grep -q " $(CARGO_LEPTOS_VERSION)" \
		|| { echo "Installing cargo-leptos $(CARGO_LEPTOS_VERSION) (about 15 minutes, once)"; \
		     cargo install cargo-leptos --version $(CARGO_LEPTOS_VERSION) --locked; }
	@wasm-bindgen --version 2>/dev/null | grep -q " $(WASM_BINDGEN_VERSION)$$" \
		|| { echo "Installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (a few minutes, once)"; \
		     cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --force; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| { echo "PostgreSQL server binaries are missing: apt-get install postgresql"; exit 1; }

deps-test: deps
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y chromium \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	@[ -d end2end/node_modules/@playwright/test ] || (cd end2end && npm ci --no-audit --no-fund)

clean:
	cargo clean
	rm -rf end2end/node_modules end2end/test-results
