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
stop() { kill -TERM $pid 2>/dev/null; wait $pid; }
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
listen="${WASMENGINE_LISTEN:-127.0.0.1:10000}"
for _ in $(seq 1 300); do
  curl -sf "http://$listen/healthz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { wait $pid; exit $?; }
  sleep 0.1
done
# Built images are kept under the data directory; --import finds the engine's containerd
# (WASMENGINE_CONTAINERD_ADDRESS, the system one, or the private one under the data dir).
for wasm in build/apps/*.wasm; do
  name="$(basename "$wasm" .wasm)"
  "$engine" image build "$wasm" -t "localhost/$name:latest" --import | tail -1
done
echo "WasmEngine is serving on http://$listen (samples imported as localhost/<name>:latest); Ctrl-C stops it"
wait $pid
