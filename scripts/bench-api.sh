#!/usr/bin/env bash
# `make bench-api`: the engine with a private containerd; wrk against /function/invoke for a
# string-ABI function with a one-page memory (authentication), the same built with rustc's
# layout (authentication-rl) and a WASI one (authentication-wasi): 1 connection (latency
# p50/p99) and 64 connections (req/s, and the CPU time per invoke of the engine and of the
# function's processes), DURATION each, beside the engine's own 404 route in the
# same run (the HTTP stack with no work), printed as ratios; a function calling another
# (`chain` → `echo-string`) beside the callee called directly; then deploy → first result for an
# image containerd already holds (median of 9); then the same into a running group
# (`--group-size`), and from a loopback registry (Debian's docker-registry), each a
# container of its own and into a group; then with `--group-size 1 --spare-group` (a process
# per function, its group's task started ahead of the deploy).
# Env: DURATION (default 10s), BIN_DIR (where `wasm_engine` and the shim are; default
# target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
DURATION="${DURATION:-10s}"
release="${BIN_DIR:-$PWD/target/release}"
dir="$(mktemp -d /tmp/we-bench-api-XXXX)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
RUST_LOG="${RUST_LOG:-wasm_engine=debug}" "$release/wasm_engine" --embedded-containerd --data-dir "$dir" --listen "127.0.0.1:$port" \
  --namespace bench >"$dir/engine.log" 2>&1 &
epid=$!
rpid=
cleanup() {
  [ -n "$rpid" ] && kill "$rpid" 2>/dev/null || true
  for f in $(curl -s -H 'accept: application/json' "$url/function/list" | jq -r '.functions[]?.func_name'); do
    curl -s -XPOST "$url/function/delete" -d "{\"function_name\":\"$f\"}" >/dev/null || true
  done
  # What no function holds (the spare group) is stopped through containerd itself, before
  # the engine takes its private containerd down.
  remove_containers "$dir/containerd/containerd.sock" bench
  kill -TERM "$epid" 2>/dev/null || true
  wait "$epid" 2>/dev/null || true
  # The private containerd's state dir, as its config names it (it is on /run).
  local state
  state=$(sed -n 's/^state = "\(.*\)"$/\1/p' "$dir/containerd/config.toml" 2>/dev/null || true)
  rm -rf /run/containerd/wasmengine/bench-* "$dir"
  if [ -n "$state" ]; then rm -rf "$state"; fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do curl -sf "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
for name in authentication authentication-rl authentication-wasi; do
  "$release/wasm_engine" image build "build/apps/$name.wasm" -t "localhost/$name:bench" \
    --data-dir "$dir/store" --import --containerd-address "$dir/containerd/containerd.sock" \
    --namespace bench >/dev/null
done
curl -sf -XPOST "$url/function/deploy" \
  -d '{"function_name":"authentication","function_image":"localhost/authentication:bench","wasi_cap":false}' >/dev/null
curl -sf -XPOST "$url/function/deploy" \
  -d '{"function_name":"authentication-rl","function_image":"localhost/authentication-rl:bench","wasi_cap":false,"export":"authentication"}' >/dev/null
curl -sf -XPOST "$url/function/deploy" \
  -d '{"function_name":"authentication-wasi","function_image":"localhost/authentication-wasi:bench","wasi_cap":true}' >/dev/null

rps() { awk '/Requests\/sec/ {print $2}'; }
echo "== 404 route (no work): 64 connections, $DURATION"
out404=$(wrk -t2 -c64 -d"$DURATION" --latency "$url/nope")
echo "$out404" | grep -E "^\s+(50|99)%|Requests/sec"
base=$(echo "$out404" | rps)
echo "== 404 route: 1 connection, $DURATION"
wrk -t1 -c1 -d"$DURATION" --latency "$url/nope" | grep -E "^\s+(50|99)%|Requests/sec"

ratios=()
for fn in authentication authentication-rl authentication-wasi; do
  cat >"$dir/$fn.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"function_name":"$fn","args":{"arg_uri":"yes","arg_body":"yes","arg_secret":"12345"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
  curl -sf -XPOST "$url/function/invoke" --data @<(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$dir/$fn.lua") | head -c 120; echo
  echo "== $fn: 1 connection, $DURATION"
  wrk -t1 -c1 -d"$DURATION" --latency -s "$dir/$fn.lua" "$url/function/invoke" \
    | grep -E "^\s+(50|99)%|Requests/sec|Non-2xx"
  echo "== $fn: 64 connections, $DURATION"
  fpids=$(pgrep -f "containerd-shim-wasmengine-v1 -namespace bench -id $fn " || true)
  e0=$(cpu_ticks "$epid"); f0=$(cpu_ticks $fpids)
  out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$dir/$fn.lua" "$url/function/invoke")
  e1=$(cpu_ticks "$epid"); f1=$(cpu_ticks $fpids)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$out" | grep -E "^\s+(50|99)%|Requests/sec|Non-2xx"
  cpu=$(echo "$((e1 - e0)) $(getconf CLK_TCK) $n $((f1 - f0))" | awk '{printf "CPU per invoke: engine %.1f us, function %.1f us", $1 * 1e6 / $2 / $3, $4 * 1e6 / $2 / $3}')
  ratios+=("$(echo "$out" | rps | awk -v b="$base" -v f="$fn" -v cpu="$cpu" '{printf "%s at 64 connections: %.0f req/s = %.2f x the 404 route (%.0f req/s); %s", f, $1, $1 / b, b, cpu}')")
done
printf '%s\n' "${ratios[@]}"

# One chained call beside a direct one: `chain` (WAT) calls `echo-string` through the engine
# (wasmengine.call); `echo-string` called directly does the same work minus the hop.
for name in echo-string chain; do
  "$release/wasm_engine" image build "build/apps/$name.wasm" -t "localhost/$name:bench" \
    --data-dir "$dir/store" --import --containerd-address "$dir/containerd/containerd.sock" \
    --namespace bench >/dev/null
done
curl -sf -XPOST "$url/function/deploy" \
  -d '{"function_name":"echo-string","function_image":"localhost/echo-string:bench","wasi_cap":false}' >/dev/null
curl -sf -XPOST "$url/function/deploy" \
  -d '{"function_name":"chain","function_image":"localhost/chain:bench","wasi_cap":false,"calls":["echo-string"]}' >/dev/null
chained=()
for fn in echo-string chain; do
  cat >"$dir/$fn.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"function_name":"$fn","args":{"user":"alice","n":42}}'
wrk.headers["Content-Type"] = "application/json"
LUA
  curl -sf -XPOST "$url/function/invoke" -d "{\"function_name\":\"$fn\",\"args\":{\"user\":\"alice\",\"n\":42}}"; echo
  echo "== $fn: 1 connection, $DURATION"
  one=$(wrk -t1 -c1 -d"$DURATION" --latency -s "$dir/$fn.lua" "$url/function/invoke")
  echo "$one" | grep -E "^\s+(50|99)%|Requests/sec|Non-2xx"
  echo "== $fn: 64 connections, $DURATION"
  many=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$dir/$fn.lua" "$url/function/invoke")
  echo "$many" | grep -E "^\s+(50|99)%|Requests/sec|Non-2xx"
  chained+=("$fn: p50 at 1 connection $(echo "$one" | awk '$1 == "50%" {print $2}'), $(echo "$many" | rps) req/s at 64")
done
echo "direct vs one chained call:"
printf '  %s\n' "${chained[@]}"

# deploy -> first result for functions PREFIX1..PREFIX9 of IMAGE (IMAGE1..IMAGE9 with
# PER=1): one curl for both requests (one connection, no process start between them), the
# time a client waits from sending deploy to holding the first result; median of the nine.
deploy_first() {
  local prefix=$1 image=$2 per=${3:-0} gap=${4:-0} i ref
  for i in 1 2 3 4 5 6 7 8 9; do
    sleep "$gap"
    ref=$image; [ "$per" = 1 ] && ref="${image/@/$i}"
    curl -sf -o /dev/null -w "%{time_total}\n" -XPOST "$url/function/deploy" \
        -d "{\"function_name\":\"$prefix$i\",\"function_image\":\"$ref\",\"wasi_cap\":false,\"export\":\"authentication\"}" \
      --next -sf -o /dev/null -w "%{time_total}\n" -XPOST "$url/function/invoke" \
        -d "{\"function_name\":\"$prefix$i\",\"args\":{\"arg_uri\":\"a\",\"arg_body\":\"b\",\"arg_secret\":\"c\"}}" \
      | awk '{s+=$1} END {printf "%d\n", s*1000000}'
  done | sort -n | awk '{a[NR]=$1} END {printf "median %.1f ms (min %.1f, max %.1f)\n", a[5]/1000, a[1]/1000, a[9]/1000}'
}

echo "== deploy -> first result (image already in containerd), 9 runs"
sleep 2 # let the load above settle
result=$(deploy_first cold localhost/authentication:bench)
grep -oE "(deployed cold|deploy cold).*" "$dir/engine.log" | sed 's/^/  engine: /'
echo "deploy -> first result: $result"

echo "== from a loopback registry (docker-registry), container per function, 9 runs"
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$dir/registry"
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$dir/registry" "$rport" >"$dir/registry.yml"
docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
rpid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$rport/v2/" >/dev/null && break; sleep 0.1; done
# One image per deploy: each deploy pulls (nothing of it is in containerd yet).
for i in 1 2 3 4 5 6 7 8 9; do
  for kind in own grp; do
    "$release/wasm_engine" image build build/apps/authentication.wasm -t "127.0.0.1:$rport/$kind$i:bench" \
      --data-dir "$dir/store" >/dev/null
    "$release/wasm_engine" image push "127.0.0.1:$rport/$kind$i:bench" --data-dir "$dir/store" >/dev/null
  done
done
echo "deploy -> first result from the registry: $(deploy_first reg "127.0.0.1:$rport/own@:bench" 1)"

echo "== the engine again with --group-size 50: deploys into a running group"
kill -TERM "$epid"; wait "$epid" 2>/dev/null || true
RUST_LOG="${RUST_LOG:-wasm_engine=debug}" "$release/wasm_engine" --embedded-containerd --data-dir "$dir" --listen "127.0.0.1:$port" \
  --namespace bench --group-size 50 >>"$dir/engine.log" 2>&1 &
epid=$!
for _ in $(seq 1 300); do curl -sf "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# The first deploy starts the group (a task, as above); the ones measured join it.
first=$(curl -sf -o /dev/null -w "%{time_total}" -XPOST "$url/function/deploy" \
  -d '{"function_name":"grp0","function_image":"localhost/authentication:bench","wasi_cap":false,"export":"authentication"}')
echo "first deploy (starts the group): $(echo "$first * 1000" | bc) ms"
echo "deploy -> first result into a running group (image in containerd): $(deploy_first grpc localhost/authentication:bench)"
grep -oE "deploy grpc[0-9]: .*" "$dir/engine.log" | sed 's/^/  engine: /' | head -3
echo "deploy -> first result from the registry into a running group: $(deploy_first greg "127.0.0.1:$rport/grp@:bench" 1)"
grep -oE "deploy greg[0-9]: .*" "$dir/engine.log" | sed 's/^/  engine: /' | head -3

echo "== the engine again with --group-size 1 --spare-group: a process per function, its task started ahead"
kill -TERM "$epid"; wait "$epid" 2>/dev/null || true
RUST_LOG="${RUST_LOG:-wasm_engine=debug}" "$release/wasm_engine" --embedded-containerd --data-dir "$dir" --listen "127.0.0.1:$port" \
  --namespace bench --group-size 1 --spare-group >>"$dir/engine.log" 2>&1 &
epid=$!
for _ in $(seq 1 300); do curl -sf "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# Deploys 0.5 s apart: the spare a deploy used is replaced before the next one comes.
echo "deploy -> first result, a group of one started ahead (image in containerd), 0.5 s apart: $(deploy_first spare localhost/authentication:bench 0 0.5)"
grep -oE "deploy spare[0-9]: .*" "$dir/engine.log" | sed 's/^/  engine: /' | head -3
echo "the same back to back (the next spare may still be starting): $(deploy_first spareb localhost/authentication:bench 0 0)"
