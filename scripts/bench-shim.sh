#!/usr/bin/env bash
# `make bench-shim`: on a private containerd,
#  1. `ctr run --rm` of the WASI hello image with our runtime, beside `ctr run --rm` of a runc
#     container (busybox `true` from a rootfs directory): the floor (hyperfine, median);
#  2. function-server round trips: a serving gcd container, N calls over its socket;
#  3. SIGTERM of a spinning module: from `ctr task kill` to the task's exit (5 runs).
# Env: RUNS (default 20), CALLS (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-20}"
CALLS="${CALLS:-20000}"
release="$PWD/target/release"
dir="$(mktemp -d /tmp/we-bench-shim-XXXX)"
sock="$dir/c.sock"
ns=bench
ctr=(ctr --address "$sock" --namespace "$ns")
cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
TOML
PATH="$release:$PATH" containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
cpid=$!
cleanup() {
  for t in $("${ctr[@]}" task ls -q 2>/dev/null); do
    "${ctr[@]}" task kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    sleep 0.2
    "${ctr[@]}" task delete "$t" >/dev/null 2>&1 || true
  done
  for c in $("${ctr[@]}" container ls -q 2>/dev/null); do "${ctr[@]}" container delete "$c" >/dev/null 2>&1 || true; done
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  rm -rf "/run/containerd/wasmengine/$ns" "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done

"$release/wasm_engine" image build build/apps/hello.wasm -t localhost/hello:latest \
  --data-dir "$dir/store" -o "$dir/hello.tar" >/dev/null
"$release/wasm_engine" image build build/apps/gcd.wasm -t localhost/gcd:latest \
  --data-dir "$dir/store" -o "$dir/gcd.tar" >/dev/null
"${ctr[@]}" image import "$dir/hello.tar" >/dev/null
"${ctr[@]}" image import "$dir/gcd.tar" >/dev/null
"$release/wasm_engine" image build build/fixtures/probe.wasm -t localhost/probe:latest \
  --data-dir "$dir/store" -o "$dir/probe.tar" >/dev/null
"${ctr[@]}" image import "$dir/probe.tar" >/dev/null
mkdir -p "$dir/busybox/bin"
cp /bin/busybox "$dir/busybox/bin/busybox"

fifo="--fifo-dir $dir/fifo"
echo "== ctr run --rm: WASI hello (io.containerd.wasmengine.v1) vs runc busybox true, $RUNS runs each"
# One warm-up run each (the shim's first run compiles and caches the module).
"${ctr[@]}" run $fifo --rm --runtime io.containerd.wasmengine.v1 localhost/hello:latest warm >/dev/null
hyperfine --style basic --runs "$RUNS" --export-json "$dir/ctr.json" \
  -n wasmengine "${ctr[*]} run $fifo --rm --runtime io.containerd.wasmengine.v1 localhost/hello:latest h\$(date +%s%N)" \
  -n runc-floor "${ctr[*]} run $fifo --rm --rootfs $dir/busybox b\$(date +%s%N) /bin/busybox true"
python3 - "$dir/ctr.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
w, f = r["wasmengine"]["median"], r["runc-floor"]["median"]
print(f"median: wasmengine {w*1000:.1f} ms, runc floor {f*1000:.1f} ms, ratio {w/f:.2f}x")
PY

echo "== function-server round trips ($CALLS calls, one connection)"
mkdir -p "$dir/fn"
"${ctr[@]}" run $fifo -d --runtime io.containerd.wasmengine.v1 \
  --mount "type=bind,src=$dir/fn,dst=/run/wasmengine,options=rbind:rw" \
  --env WASMENGINE_MODE=serve --env WASMENGINE_FUNCTION=gcd \
  --env WASMENGINE_SOCKET=/run/wasmengine/fn.sock \
  localhost/gcd:latest gcd-serve >/dev/null
for _ in $(seq 1 200); do [ -S "$dir/fn/fn.sock" ] && break; sleep 0.05; done
"$release/socket-bench" "$dir/fn/fn.sock" "$CALLS" '[12,18]'

echo "== SIGTERM of a spinning module: ctr task kill → task exit, 5 runs"
for i in 1 2 3 4 5; do
  "${ctr[@]}" run $fifo --rm --runtime io.containerd.wasmengine.v1 localhost/probe:latest \
    "spin$i" /probe.wasm spin </dev/null >/dev/null 2>&1 &
  runner=$!
  for _ in $(seq 1 200); do
    "${ctr[@]}" task ls 2>/dev/null | grep -q "^spin$i .*RUNNING" && break
    sleep 0.05
  done
  start=$(date +%s%N)
  "${ctr[@]}" task kill "spin$i"
  status=0
  wait "$runner" || status=$?
  echo "run $i: exit $status after $(( ($(date +%s%N) - start) / 1000000 )) ms"
done
