# Helpers the benchmark scripts source.

# User and system CPU ticks (of `getconf CLK_TCK` a second) of the given pids, summed.
cpu_ticks() {
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}

# Stops and removes every container of namespace $2 in the containerd at socket $1 (what no
# function holds any more, such as a spare group), before the engine takes containerd down.
remove_containers() {
  local ctr_=(ctr --address "$1" -n "$2") c
  for c in $("${ctr_[@]}" containers ls -q 2>/dev/null); do
    "${ctr_[@]}" task kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do "${ctr_[@]}" task rm "$c" >/dev/null 2>&1 && break; sleep 0.1; done
    "${ctr_[@]}" containers rm "$c" >/dev/null 2>&1 || true
  done
}

# Stops an engine started with a private containerd (`--embedded-containerd --data-dir $1`,
# pid $2, namespace $3): its containers first, then the engine (which stops its containerd),
# then the shims' and containerd's state; the data dir too unless $4 is "keep".
stop_private_engine() {
  local dir=$1 pid=$2 ns=$3 state
  # What a function held is removed with it; whatever is left is stopped through containerd.
  remove_containers "$dir/containerd/containerd.sock" "$ns"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  state=$(sed -n 's/^state = "\(.*\)"$/\1/p' "$dir/containerd/config.toml" 2>/dev/null || true)
  rm -rf "/run/containerd/wasmengine/$ns-"*
  if [ -n "$state" ]; then rm -rf "$state"; fi
  if [ "${4:-}" != keep ]; then rm -rf "$dir"; fi
}
