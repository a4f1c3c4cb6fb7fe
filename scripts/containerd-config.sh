#!/usr/bin/env bash
# Prints the containerd config.toml stanza that registers our runtime with containerd's CRI
# plugin (for Kubernetes / crictl); with `--write FILE`, appends it to FILE unless present.
# `ctr run --runtime io.containerd.wasmengine.v1` needs no config: containerd finds
# containerd-shim-wasmengine-v1 on its PATH.
set -euo pipefail
stanza='
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmengine]
  runtime_type = "io.containerd.wasmengine.v1"'
if [ "${1:-}" = "--write" ] && [ -n "${2:-}" ]; then
  if grep -q 'runtimes.wasmengine\]' "$2" 2>/dev/null; then
    echo "$2 already registers the wasmengine runtime"
  else
    printf '%s\n' "$stanza" >>"$2"
    echo "added the wasmengine runtime to $2 (restart containerd to load it)"
  fi
else
  echo "# containerd config.toml (version = 2): the CRI runtime 'wasmengine'$stanza"
fi
