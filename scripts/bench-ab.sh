#!/usr/bin/env bash
# A/B of two builds of the engine and shim in one run, alternating: for each directory given
# (each holding `wasm_engine` and `containerd-shim-wasmengine-v1`, e.g. copies of
# target/release from two commits), start that engine with a private containerd, deploy
# `authentication`, and measure the 404 route and the invoke at 64 connections (with the CPU
# time per invoke of the engine and of the function's processes) and the invoke's p50 at one
# connection; ROUNDS times over (default 2). With MODE=deploy, instead: deploy ->
# first result of 9 functions of that image (each a container of its own), median, and the
# median of their "task create" stage from the engine's log. With MODE=hostile, the invoke
# measurements run while SPINNERS callers (default: one per core) keep a function spinning.
# With MODE=large: `echo-string` called with about 200 KiB of JSON args at 8 connections.
# The default mode ends with each build's mean and range over the rounds: on a noisy VM, run
# enough rounds (ROUNDS=6 or more) before calling a few percent a difference.
# PERF=DIR records the whole machine (`perf record -a`, PERF_ARGS added) during each 64-connection
# invoke run into DIR/perf-*.data (the CPU figures of that run then include perf's own cost).
# Usage: scripts/bench-ab.sh DIR_A DIR_B [DIR_C ...]   Env: DURATION (default 8s), ROUNDS, MODE, PERF.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
DURATION="${DURATION:-8s}"
ROUNDS="${ROUNDS:-2}"
MODE="${MODE:-invoke}"
[ $# -ge 1 ] || { echo "usage: $0 DIR_A DIR_B ..." >&2; exit 2; }

# The engine running now, stopped on any exit (a failed request ends the script under set -e).
cur_dir=
cur_epid=
# Each invoke round's figures, for the summary over the rounds at the end.
results="$(mktemp /tmp/we-bench-ab-results-XXXX)"
trap 'rm -f "$results"; [ -n "$cur_epid" ] && stop_engine "$cur_dir" "$cur_epid"' EXIT

one() {
  local bin=$1 dir port url epid
  dir="$(mktemp -d /tmp/we-bench-ab-XXXX)"
  cur_dir=$dir
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  url="http://127.0.0.1:$port"
  RUST_LOG=wasm_engine=debug "$bin/wasm_engine" --embedded-containerd --data-dir "$dir" --listen "127.0.0.1:$port" \
    --namespace benchab ${ENGINE_ARGS:-} >"$dir/engine.log" 2>&1 &
  epid=$!
  cur_epid=$epid
  for _ in $(seq 1 300); do curl -sf "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin/wasm_engine" image build build/apps/authentication.wasm -t localhost/authentication:ab \
    --data-dir "$dir/store" --import --containerd-address "$dir/containerd/containerd.sock" \
    --namespace benchab >/dev/null
  if [ "$MODE" = deploy ]; then
    local times=() i t
    for i in 1 2 3 4 5 6 7 8 9; do
      t=$(curl -sf -o /dev/null -w "%{time_total}" -XPOST "$url/function/deploy" \
        -d "{\"function_name\":\"d$i\",\"function_image\":\"localhost/authentication:ab\",\"wasi_cap\":false,\"export\":\"authentication\"}")
      curl -sf -o /dev/null -XPOST "$url/function/invoke" \
        -d "{\"function_name\":\"d$i\",\"args\":{\"arg_uri\":\"yes\",\"arg_body\":\"yes\",\"arg_secret\":\"12345\"}}"
      times+=("$(echo "$t * 1000" | bc)")
    done
    local create
    create=$(grep -oE "deploy d[0-9]: .*task create [0-9.]+" "$dir/engine.log" | awk '{print $NF}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-40s deploy -> first result, median of 9: %s ms  task create median %s ms\n' \
      "$bin" "$(printf '%s\n' "${times[@]}" | sort -n | sed -n 5p)" "$create"
    for i in 1 2 3 4 5 6 7 8 9; do
      curl -s -XPOST "$url/function/delete" -d "{\"function_name\":\"d$i\"}" >/dev/null || true
    done
    stop_engine "$dir" "$epid"
    return
  fi
  if [ "$MODE" = large ]; then
    # `echo-string` (string ABI) called with about 200 KiB of JSON args, which it returns.
    "$bin/wasm_engine" image build build/apps/echo-string.wasm -t localhost/echo:ab --data-dir "$dir/store" \
      --import --containerd-address "$dir/containerd/containerd.sock" --namespace benchab >/dev/null
    curl -sf -XPOST "$url/function/deploy" -d '{"function_name":"echo","function_image":"localhost/echo:ab",
      "wasi_cap":false,"export":"echo-string","max_output_bytes":1048576}' >/dev/null
    python3 -c '
import json
items = [{"id": i, "name": "item-%d" % i, "price": i * 1.25, "tags": ["a", "b\u00e9"]} for i in range(3000)]
body = json.dumps({"function_name": "echo", "args": {"items": items}})
print("-- body bytes %d" % len(body))
print("wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = " + json.dumps(body))
' >"$dir/large.lua"
    local shims e0 s0 e1 s1 out n
    shims=$(pgrep -f "containerd-shim-wasmengine-v1 -namespace benchab " || true)
    e0=$(cpu_ticks "$epid"); s0=$(cpu_ticks $shims)
    out=$(wrk -t2 -c8 -d"$DURATION" -s "$dir/large.lua" "$url/function/invoke")
    e1=$(cpu_ticks "$epid"); s1=$(cpu_ticks $shims)
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    printf '%-30s %s KiB request: %7.0f req/s at 8 connections  CPU per invoke: engine %6.1f us, function %6.1f us  non-2xx: %s\n' \
      "$bin" "$(( $(awk '/^-- body bytes/ {print $4}' "$dir/large.lua") / 1024 ))" "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
      "$(echo "($e1 - $e0) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l)" \
      "$(echo "($s1 - $s0) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l)" \
      "$(echo "$out" | awk '/Non-2xx/ {print $NF}')"
    curl -s -XPOST "$url/function/delete" -d '{"function_name":"echo"}' >/dev/null || true
    stop_engine "$dir" "$epid"
    return
  fi
  curl -sf -XPOST "$url/function/deploy" \
    -d '{"function_name":"authentication","function_image":"localhost/authentication:ab","wasi_cap":false}' >/dev/null
  cat >"$dir/auth.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"function_name":"authentication","args":{"arg_uri":"yes","arg_body":"yes","arg_secret":"12345"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
  local a b c out shims e0 s0 e1 s1 n
  local e404 n404 spinners=()
  if [ "$MODE" = hostile ]; then
    # A function whose every call spins until its 200 ms timeout, called by SPINNERS loops
    # (default: one per core) while everything below is measured.
    printf '(module (func (export "spin") (result i32) (loop (br 0)) (i32.const 0)))' >"$dir/spin.wat"
    wat2wasm "$dir/spin.wat" -o "$dir/spin.wasm"
    "$bin/wasm_engine" image build "$dir/spin.wasm" -t localhost/spin:ab --data-dir "$dir/store" \
      --import --containerd-address "$dir/containerd/containerd.sock" --namespace benchab >/dev/null
    curl -sf -XPOST "$url/function/deploy" -d '{"function_name":"spin","function_image":"localhost/spin:ab",
      "wasi_cap":false,"export":"spin","timeout_ms":200}' >/dev/null
    for _ in $(seq 1 "${SPINNERS:-$(nproc)}"); do
      (while :; do curl -s -o /dev/null -XPOST "$url/function/invoke" -d '{"function_name":"spin","args":[]}'; done) &
      spinners+=($!)
    done
    sleep 1
  fi
  e0=$(cpu_ticks "$epid")
  out=$(wrk -t2 -c64 -d"$DURATION" "$url/nope")
  e1=$(cpu_ticks "$epid")
  a=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n404=$(echo "$out" | awk '/requests in/ {print $1}')
  e404=$(echo "($e1 - $e0) * 1000000 / $(getconf CLK_TCK) / $n404" | bc -l)
  shims=$(pgrep -f "containerd-shim-wasmengine-v1 -namespace benchab " || true)
  e0=$(cpu_ticks "$epid"); s0=$(cpu_ticks $shims)
  local perf_pid=
  if [ -n "${PERF:-}" ]; then
    perf record -a -F 1999 ${PERF_ARGS:-} -o "$PERF/perf-$(basename "$bin")-$$-$RANDOM.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  out=$(wrk -t2 -c64 -d"$DURATION" -s "$dir/auth.lua" "$url/function/invoke")
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  e1=$(cpu_ticks "$epid"); s1=$(cpu_ticks $shims)
  b=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  c=$(wrk -t1 -c1 -d"$DURATION" --latency -s "$dir/auth.lua" "$url/function/invoke" | awk '$1 == "50%" {print $2}')
  local ecpu fcpu
  ecpu=$(echo "($e1 - $e0) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l)
  fcpu=$(echo "($s1 - $s0) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l)
  printf '%-30s 404 %7.0f req/s  invoke %7.0f req/s  ratio %.2f  engine CPU per 404 %4.1f us; per invoke: engine %5.1f us, function %5.1f us  p50 at 1 connection %s\n' \
    "$bin" "$a" "$b" "$(echo "$b / $a" | bc -l)" "$e404" "$ecpu" "$fcpu" "$c"
  echo "$bin $a $b $ecpu $fcpu" >>"$results"
  if [ ${#spinners[@]} -gt 0 ]; then kill "${spinners[@]}" 2>/dev/null || true; wait "${spinners[@]}" 2>/dev/null || true; fi
  curl -s -XPOST "$url/function/delete" -d '{"function_name":"authentication"}' >/dev/null || true
  stop_engine "$dir" "$epid"
}

stop_engine() {
  cur_epid=
  stop_private_engine "$1" "$2" benchab
}

for _ in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do one "$bin"; done
done
if [ -s "$results" ]; then
  # Per build: mean (min-max) over the rounds; with the VM's noise, few rounds say little.
  awk '{ n[$1]++; for (i = 2; i <= 5; i++) { s[$1, i] += $i; if (!((($1, i) in lo)) || $i < lo[$1, i]) lo[$1, i] = $i; if ($i > hi[$1, i]) hi[$1, i] = $i }
         r = $3 / $2; s[$1, 6] += r; if (!((($1, 6) in lo)) || r < lo[$1, 6]) lo[$1, 6] = r; if (r > hi[$1, 6]) hi[$1, 6] = r }
       END { for (b in n) printf "%-30s %d rounds: invoke %.0f (%.0f-%.0f) req/s  ratio %.3f (%.2f-%.2f)  CPU per invoke: engine %.1f (%.1f-%.1f) us, function %.1f (%.1f-%.1f) us\n",
               b, n[b], s[b, 3] / n[b], lo[b, 3], hi[b, 3], s[b, 6] / n[b], lo[b, 6], hi[b, 6],
               s[b, 4] / n[b], lo[b, 4], hi[b, 4], s[b, 5] / n[b], lo[b, 5], hi[b, 5] }' "$results"
fi
