#!/usr/bin/env bash
# `make bench-density`: many functions on one node. The engine with a private containerd;
# N functions (default 1000, `N=…`) of one small image deployed, PARALLEL at a time, each
# invoked once; then processes and PSS per running function, the engine's RSS, wake-ups and
# CPU of the functions' processes while none is called, invoke p50 of
# a random function against one function (wrk, one connection), and, after the engine is
# started again with a 2 s idle period, PSS per idle function and the cold start of an idle
# one. Functions share group containers GROUP_SIZE at a time (default 250; 0: a container
# each). BIN_DIR: where `wasm_engine` and the shim are (default target/release). Cleans up
# after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000}"
PARALLEL="${PARALLEL:-8}"
DURATION="${DURATION:-5s}"
GROUP_SIZE="${GROUP_SIZE:-250}"
release="${BIN_DIR:-$PWD/target/release}"
dir="$(mktemp -d /tmp/we-bench-density-XXXX)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
ns=density
epid=
start_engine() {
  "$release/wasm_engine" --embedded-containerd --data-dir "$dir" --listen "127.0.0.1:$port" \
    --namespace "$ns" --group-size "$GROUP_SIZE" "$@" >>"$dir/engine.log" 2>&1 &
  epid=$!
  for _ in $(seq 1 300); do curl -sf "$url/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "engine did not start" >&2; exit 1
}
cleanup() {
  curl -s -H 'accept: application/json' "$url/function/list" | jq -r '.functions[]?.func_name' \
    | xargs -r -P "$PARALLEL" -I{} curl -s -o /dev/null -XPOST "$url/function/delete" -d '{"function_name":"{}"}' || true
  [ -n "$epid" ] && kill -TERM "$epid" 2>/dev/null && wait "$epid" 2>/dev/null || true
  # The private containerd's state dir, as its config names it (it is on /run).
  local state
  state=$(sed -n 's/^state = "\(.*\)"$/\1/p' "$dir/containerd/config.toml" 2>/dev/null || true)
  rm -rf /run/containerd/wasmengine/"$ns"-* "$dir"
  if [ -n "$state" ]; then rm -rf "$state"; fi
}
trap cleanup EXIT
# PSS in KiB of the given pids, summed.
pss() { for p in "$@"; do awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null; done | awk '{s+=$1} END {print s+0}'; }
shims() { pgrep -f "containerd-shim-wasmengine-v1 -namespace $ns " || true; }
ctd_pid() { pgrep -f "containerd --config $dir/containerd/config.toml" | head -1; }

start_engine
"$release/wasm_engine" image build build/apps/gcd.wasm -t localhost/gcd:density \
  --data-dir "$dir/store" --import --containerd-address "$dir/containerd/containerd.sock" \
  --namespace "$ns" >/dev/null
ctd_before=$(pss "$(ctd_pid)")

echo "== deploying $N functions, $PARALLEL at a time, groups of $GROUP_SIZE"
t0=$(date +%s.%N)
seq 0 $((N - 1)) | xargs -P "$PARALLEL" -I{} curl -s -o /dev/null -w '%{http_code}\n' -XPOST \
  "$url/function/deploy" -d '{"function_name":"f{}","function_image":"localhost/gcd:density","wasi_cap":false,"export":"gcd"}' \
  > "$dir/deploys.txt"
t1=$(date +%s.%N)
ok=$(grep -c '^200$' "$dir/deploys.txt" || true)
echo "deployed $ok of $N in $(echo "$t1 - $t0" | bc) s"
seq 0 $((N - 1)) | xargs -P "$PARALLEL" -I{} curl -s -o /dev/null -w '%{http_code}\n' -XPOST \
  "$url/function/invoke" -d '{"function_name":"f{}","args":[12,18]}' > "$dir/invokes.txt"
echo "answering (200): $(grep -c '^200$' "$dir/invokes.txt" || true) of $N"
grep -v '^200$' "$dir/invokes.txt" | sort | uniq -c | head -5 || true

pids=$(shims)
nproc=$(echo "$pids" | grep -c . || true)
shim_pss=$(pss $pids)
ctd_after=$(pss "$(ctd_pid)")
echo "processes of the functions: $nproc ($(echo "scale=2; $nproc / $N" | bc) per function)"
echo "PSS per running function: $(echo "scale=2; ($shim_pss + $ctd_after - $ctd_before) / $N / 1024" | bc) MiB (shims $((shim_pss / 1024)) MiB, containerd grew $(((ctd_after - ctd_before) / 1024)) MiB)"
echo "engine RSS: $(($(awk '/^VmRSS:/ {print $2}' /proc/$epid/status) / 1024)) MiB"
# Wake-ups (context switches of every thread) and CPU time of the functions' processes while
# nobody calls them, over 3 s after a 2 s pause.
activity() {
  local switches=0 ticks=0 p t
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      switches=$((switches + $(awk '/ctxt_switches/ {s+=$2} END {print s+0}' "$t/status" 2>/dev/null || echo 0)))
    done
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$switches $ticks"
}
sleep 2
read -r sw0 tk0 < <(activity $pids)
sleep 3
read -r sw1 tk1 < <(activity $pids)
echo "idle, all $N functions: $(echo "scale=1; ($sw1 - $sw0) / 3" | bc) wake-ups/s ($(echo "scale=3; ($sw1 - $sw0) / 3 / $N" | bc | sed "s/^\./0./") per function), CPU $(echo "scale=2; ($tk1 - $tk0) * 100 / $(getconf CLK_TCK) / 3" | bc)% of a core"

cat >"$dir/random.lua" <<LUA
math.randomseed(os.time())
request = function()
  local i = math.random(0, $N - 1)
  return wrk.format("POST", "/function/invoke", {["Content-Type"] = "application/json"},
    '{"function_name":"f' .. i .. '","args":[12,18]}')
end
LUA
cat >"$dir/one.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"function_name":"f0","args":[12,18]}'
wrk.headers["Content-Type"] = "application/json"
LUA
p50() { awk '/^ +50%/ {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else {sub(/us/,"",v)}; print v}'; }
one=$(wrk -t1 -c1 -d"$DURATION" --latency -s "$dir/one.lua" "$url/function/invoke" | p50)
rnd=$(wrk -t1 -c1 -d"$DURATION" --latency -s "$dir/random.lua" "$url/function/invoke" | p50)
echo "invoke p50, one connection: one function $one us, a random one of $N $rnd us ($(echo "scale=2; $rnd / $one" | bc)x)"

echo "== the engine again, with a 2 s idle period"
kill -TERM "$epid"; wait "$epid" 2>/dev/null || true
start_engine --idle-timeout-secs 2
for _ in $(seq 1 120); do [ -z "$(shims)" ] && break; sleep 1; done
left=$(shims | grep -c . || true)
ctd_idle=$(pss "$(ctd_pid)")
echo "processes left once idle: $left; PSS per idle function: $(echo "scale=3; ($(pss $(shims)) + $ctd_idle - $ctd_before) / $N / 1024" | bc) MiB (containerd's growth included)"
times=()
for i in 1 2 3 4 5 6 7 8 9; do
  t=$(curl -s -o /dev/null -w "%{time_total}" -XPOST "$url/function/invoke" -d "{\"function_name\":\"f$i\",\"args\":[12,18]}")
  times+=("$(echo "$t * 1000" | bc)")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "cold start of an idle function (invoke -> result): median %.1f ms (min %.1f, max %.1f)\n", a[5], a[1], a[9]}'
