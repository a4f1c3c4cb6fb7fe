#!/usr/bin/env bash
# Packages the sample functions (build/apps/*.wasm) as OCI image archives for
# `ctr image import`: build/images/<name>.tar (classic layout) and
# build/images/<name>-artifact.tar (Wasm OCI artifact), named localhost/<name>:latest.
#
# usage: scripts/images.sh [APPS_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
apps="${1:-build/apps}"
out="${2:-build/images}"
engine="${WASM_ENGINE:-target/release/wasm_engine}"
mkdir -p "$out"
store="$(mktemp -d)"
trap 'rm -rf "$store"' EXIT
for wasm in "$apps"/*.wasm; do
  name="$(basename "$wasm" .wasm)"
  "$engine" image build "$wasm" -t "localhost/$name:latest" --data-dir "$store" \
    -o "$out/$name.tar" >/dev/null
  "$engine" image build "$wasm" -t "localhost/$name:artifact" --artifact --data-dir "$store" \
    -o "$out/$name-artifact.tar" >/dev/null
  echo "image localhost/$name:latest -> $out/$name.tar, localhost/$name:artifact -> $out/$name-artifact.tar"
done
