#!/usr/bin/env bash
# `make run`: starts the engine (embedded default: a private containerd under the data
# directory unless the system one answers), then packages the sample functions and imports
# them into its containerd, so `localhost/<name>:latest` deploys at once. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=target/release/wasm_engine
data_dir="${WASMENGINE_DATA_DIR:-/var/lib/wasmengine}"
export WASMENGINE_DATA_DIR="$data_dir"
"$engine" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
listen="${WASMENGINE_LISTEN:-127.0.0.1:10000}"
for _ in $(seq 1 300); do
  curl -sf "http://$listen/healthz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { wait $pid; exit $?; }
  sleep 0.1
done
store="$(mktemp -d)"
for wasm in build/apps/*.wasm; do
  name="$(basename "$wasm" .wasm)"
  "$engine" image build "$wasm" -t "localhost/$name:latest" --data-dir "$store" --import \
    ${WASMENGINE_CONTAINERD_ADDRESS:+--containerd-address "$WASMENGINE_CONTAINERD_ADDRESS"} \
    | tail -1
done
rm -rf "$store"
echo "WasmEngine is serving on http://$listen (samples imported as localhost/<name>:latest); Ctrl-C stops it"
wait $pid
