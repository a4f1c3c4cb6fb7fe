# What a user types. `make run` sets up and starts the engine; `make test` runs every test.
CARGO   ?= cargo
PREFIX  ?= /usr/local
APPS    := build/apps
RELEASE := target/release

.PHONY: bench-cri bench-density all deps build apps images run test bench bench-shim bench-api install clean

all: build

deps:
	scripts/install-deps.sh

build:
	$(CARGO) build --release --workspace --bins

# Sample functions (experiments/), built with whatever this machine has; says what it skipped.
apps:
	experiments/build.sh $(APPS)
	test/fixtures/build.sh build/fixtures

# The samples as OCI image archives (classic and artifact layouts) for `ctr image import`.
images: apps build
	scripts/images.sh $(APPS) build/images

# Sets up this machine (apt), builds, and starts the engine with the embedded containerd,
# the samples imported as localhost/<name>:latest.
run: deps apps build
	scripts/run.sh

test: apps build
	@command -v cargo-nextest >/dev/null || $(CARGO) install cargo-nextest --locked
	$(CARGO) nextest run --release --workspace --no-fail-fast

# The original engine's table (criterion) on the execution core.
bench: apps
	$(CARGO) bench -p wasmengine-core --bench calls

# `ctr run` of a WASI hello image vs a runc container, and function-server round trips.
bench-shim: apps build
	scripts/bench-shim.sh

# wrk against /function/invoke, and deploy → first result.
bench-api: apps build
	scripts/bench-api.sh

# Many functions on one node: deploy time, processes and PSS per function, idle cost.
bench-density: apps build
	scripts/bench-density.sh

# Pods through containerd's CRI plugin: Wasm vs runc container start, memory per extra
# container, the shim's TCP function server vs the engine's REST API (wrk).
bench-cri: apps build
	$(CARGO) run --release -p wasmengine-e2e --example bench_cri

# CONTAINERD_CONFIG=/etc/containerd/config.toml also registers the CRI runtime there.
install: build
	install -D -m 0755 $(RELEASE)/containerd-shim-wasmengine-v1 $(PREFIX)/bin/containerd-shim-wasmengine-v1
	install -D -m 0755 $(RELEASE)/wasm_engine $(PREFIX)/bin/wasm_engine
	@if [ -n "$(CONTAINERD_CONFIG)" ]; then scripts/containerd-config.sh --write "$(CONTAINERD_CONFIG)"; \
	else scripts/containerd-config.sh; fi

clean:
	$(CARGO) clean
	rm -rf build
