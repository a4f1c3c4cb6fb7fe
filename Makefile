# What a user types. `make run` sets up and starts the engine; `make test` runs every test.
CARGO   ?= cargo
PREFIX  ?= /usr/local
APPS    := build/apps
RELEASE := target/release

.PHONY: all deps build apps test bench install clean

all: build

deps:
	scripts/install-deps.sh

build:
	$(CARGO) build --release --workspace --bins

# Sample functions (experiments/), built with whatever this machine has; says what it skipped.
apps:
	experiments/build.sh $(APPS)
	test/fixtures/build.sh build/fixtures

test: apps build
	$(CARGO) nextest run --release --workspace --no-fail-fast

# The original engine's table (criterion) on the execution core.
bench: apps
	$(CARGO) bench -p wasmengine-core --bench calls

install: build
	install -D -m 0755 $(RELEASE)/containerd-shim-wasmengine-v1 $(PREFIX)/bin/containerd-shim-wasmengine-v1
	install -D -m 0755 $(RELEASE)/wasm_engine $(PREFIX)/bin/wasm_engine

clean:
	$(CARGO) clean
	rm -rf build
