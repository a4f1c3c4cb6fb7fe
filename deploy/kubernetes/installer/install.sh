#!/bin/sh
# WasmEngine node installer: run by the DaemonSet in deploy/kubernetes/installer.yaml with the
# host's root at $HOST_ROOT. Idempotent: a second run changes nothing and restarts nothing.
#   1. copy the shim onto the host's PATH (atomically: write beside it, then rename);
#   2. register the `wasmengine` runtime in containerd's config, once (version 2 or 3 layout);
#   3. restart containerd only if its config changed (running containers keep running: their
#      shims are separate processes);
#   4. label the node so the RuntimeClass schedules pods onto it.
set -eu

HOST_ROOT=${HOST_ROOT:-/host}
SHIM_SRC=${SHIM_SRC:-/containerd-shim-wasmengine-v1}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
# How containerd is restarted on the host (PID 1's namespaces; the pod has hostPID).
RESTART_CMD=${RESTART_CMD:-nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd}
NODE_LABEL=${NODE_LABEL:-wasmengine.io/runtime=installed}

log() { echo "wasmengine-installer: $*"; }

# 1. The shim.
dest="$HOST_ROOT$BIN_DIR/containerd-shim-wasmengine-v1"
mkdir -p "$HOST_ROOT$BIN_DIR"
if [ -f "$dest" ] && cmp -s "$SHIM_SRC" "$dest"; then
  log "shim already installed at $BIN_DIR"
else
  cp "$SHIM_SRC" "$dest.new"
  chmod 0755 "$dest.new"
  mv -f "$dest.new" "$dest"
  log "installed the shim at $BIN_DIR"
fi

# 2. containerd's config.
config="$HOST_ROOT$CONTAINERD_CONFIG"
changed=no
if [ -f "$config" ] && grep -q 'runtimes\.wasmengine\]' "$config"; then
  log "$CONTAINERD_CONFIG already registers the wasmengine runtime"
else
  mkdir -p "$(dirname "$config")"
  if [ -f "$config" ]; then
    cp "$config" "$config.bak-wasmengine"
  else
    printf 'version = 2\n' >"$config"
  fi
  if grep -q '^version *= *3' "$config"; then
    section='plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasmengine'
  else
    section='plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmengine'
  fi
  printf '\n[%s]\n  runtime_type = "io.containerd.wasmengine.v1"\n' "$section" >>"$config"
  changed=yes
  log "registered the wasmengine runtime in $CONTAINERD_CONFIG"
fi

# 3. containerd, only when its config changed.
if [ "$changed" = yes ]; then
  log "restarting containerd"
  sh -c "$RESTART_CMD"
fi

# 4. The node label (skipped outside a cluster).
if [ -n "${NODE_NAME:-}" ] && [ -n "${KUBERNETES_SERVICE_HOST:-}" ]; then
  sa=/var/run/secrets/kubernetes.io/serviceaccount
  key=${NODE_LABEL%%=*}
  value=${NODE_LABEL#*=}
  curl -fsS --cacert "$sa/ca.crt" \
    -H "Authorization: Bearer $(cat "$sa/token")" \
    -H 'Content-Type: application/merge-patch+json' \
    -X PATCH "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/nodes/$NODE_NAME" \
    -d "{\"metadata\":{\"labels\":{\"$key\":\"$value\"}}}" >/dev/null
  log "labelled node $NODE_NAME $NODE_LABEL"
fi
log "done"
