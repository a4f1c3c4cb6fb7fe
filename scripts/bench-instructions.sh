#!/usr/bin/env bash
# The engine's user-space instructions per request, counted by callgrind: for each directory
# given (holding `wasm_engine` and `containerd-shim-wasmengine-v1`, e.g. copies of
# target/release from two commits), start that engine under valgrind with a private
# containerd, deploy `authentication`, then count what the engine executes during wrk at 64
# connections on the invoke and on the 404 route, divided by the requests wrk made.
# On a VM whose speed moves between runs, an instruction count is the steady figure for a
# change to the engine's own code: it does not see the kernel, the function's process or
# waiting, which `scripts/bench-ab.sh` measures. (Under valgrind the engine is ~50x slower, so
# its batches to the function are larger than in a real run.)
# Needs valgrind (`apt-get install valgrind`); not part of `make test`.
# Usage: scripts/bench-instructions.sh DIR [DIR ...]   Env: DURATION (default 8s), KEEP=1
# keeps each run's callgrind files (for `callgrind_annotate --inclusive=yes`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
DURATION="${DURATION:-8s}"
[ $# -ge 1 ] || { echo "usage: $0 DIR [DIR ...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 2; }

cur_dir=
cur_vpid=
stop() {
  cur_vpid=
  stop_private_engine "$1" "$2" benchinstr "${KEEP:+keep}"
}
trap '[ -n "$cur_vpid" ] && stop "$cur_dir" "$cur_vpid"' EXIT

for bin in "$@"; do
  dir="$(mktemp -d /tmp/we-bench-instr-XXXX)"
  cur_dir=$dir
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  url="http://127.0.0.1:$port"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
    "$bin/wasm_engine" --embedded-containerd --data-dir "$dir" --listen "127.0.0.1:$port" \
    --namespace benchinstr >"$dir/engine.log" 2>&1 &
  vpid=$!
  cur_vpid=$vpid
  for _ in $(seq 1 600); do curl -sf "$url/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  "$bin/wasm_engine" image build build/apps/authentication.wasm -t localhost/authentication:instr \
    --data-dir "$dir/store" --import --containerd-address "$dir/containerd/containerd.sock" \
    --namespace benchinstr >/dev/null
  curl -sf -o /dev/null -XPOST "$url/function/deploy" \
    -d '{"function_name":"authentication","function_image":"localhost/authentication:instr","wasi_cap":false,"export":"authentication"}'
  cat >"$dir/auth.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"function_name":"authentication","args":{"arg_uri":"yes","arg_body":"yes","arg_secret":"12345"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
  # Warm both paths (connections, buffers, the function's instance pool) before counting.
  wrk -t2 -c64 -d3s -s "$dir/auth.lua" "$url/function/invoke" >/dev/null
  wrk -t2 -c64 -d2s "$url/nope" >/dev/null
  line="$bin"
  for what in invoke 404; do
    callgrind_control -i on "$vpid" >/dev/null 2>&1
    callgrind_control -z "$vpid" >/dev/null 2>&1
    if [ "$what" = invoke ]; then
      out=$(wrk -t2 -c64 -d"$DURATION" -s "$dir/auth.lua" "$url/function/invoke")
    else
      out=$(wrk -t2 -c64 -d"$DURATION" "$url/nope")
    fi
    callgrind_control --dump="$what" "$vpid" >/dev/null 2>&1
    callgrind_control -i off "$vpid" >/dev/null 2>&1
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    # The dump just made is the newest file; its summary line is the instruction count.
    file=$(ls -t "$dir"/callgrind.out.* | head -1)
    ir=$(awk '/^summary:/ {print $2}' "$file")
    line+=$(printf '  %s: %d instructions per request (%d requests)' "$what" $((ir / n)) "$n")
  done
  echo "$line"
  [ -n "${KEEP:-}" ] && echo "  callgrind files: $dir/callgrind.out.*"
  curl -s -o /dev/null -XPOST "$url/function/delete" -d '{"function_name":"authentication"}' || true
  stop "$dir" "$vpid"
done
