#!/usr/bin/env bash
# Installs the Debian packages WasmEngine builds, tests and runs with. Idempotent; needs root
# (or sudo). Used by `make deps`, `make run` and CI.
set -euo pipefail

packages=(
  # containerd and the OCI runtime it falls back to for non-Wasm containers
  containerd runc
  # building the shim (containerd-shim-wasm: protobuf, seccomp)
  protobuf-compiler libseccomp-dev pkg-config
  # C sample functions and fixtures (clang-14 --target=wasm32-wasi finds wasi-libc itself)
  clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 wabt
  # a local OCI registry for tests, and image tools
  docker-registry skopeo
  # benchmarks
  wrk hyperfine busybox-static
  curl jq bc
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The packaged registry and containerd services are not what the tests use: each test run
# starts its own, privately. Keep the system ones from holding ports and sockets.
for svc in docker-registry containerd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $sudo systemctl stop "$svc" || true
  fi
done
