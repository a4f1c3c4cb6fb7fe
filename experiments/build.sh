#!/usr/bin/env bash
# Builds the sample functions into OUTDIR: the C versions with clang (wasi-libc for the WASI
# commands, no libc for the string-ABI and numeric ones), and the Rust crates when rustup has
# their wasm targets. Prints `built <name>` or `skipped <name> (<reason>)` for each.
#
# usage: experiments/build.sh OUTDIR
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
COMMON="$HERE/common/c"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# name|kind|sources (relative to experiments/), kind: wasi, abi (string ABI) or num (numeric)
SAMPLES=(
    "hello|wasi|hello/c/hello.c"
    "fibonacci|wasi|fibonacci/c/fibonacci.c common/c/json.c"
    "authentication|abi|authentication/c/authentication.c common/c/auth.c common/c/json.c common/c/md5.c"
    "authentication-wasi|wasi|authentication-wasi/c/main.c common/c/auth.c common/c/json.c common/c/md5.c"
    "add_one|num|add_one/c/add_one.c"
    "echo-string|abi|echo-string/c/echo_string.c"
    "echo-string-wasi|wasi|echo-string-wasi/c/main.c"
    "gcd|num|gcd/c/gcd.c"
    "gcd-wasi|wasi|gcd-wasi/c/main.c common/c/json.c"
    # Functions calling functions (the wasmengine.call import): relay → chain → echo-string.
    "relay|wasi|chain/c/relay.c"
    # The same sources laid out as rustc lays out wasm32 modules: the stack first, 1 MiB of
    # it, data and heap above, 17 pages of initial memory. What real functions cost per call.
    "authentication-rl|abi-rl|authentication/c/authentication.c common/c/auth.c common/c/json.c common/c/md5.c"
    "authentication-wasi-rl|wasi-rl|authentication-wasi/c/main.c common/c/auth.c common/c/json.c common/c/md5.c"
    "echo-string-rl|abi-rl|echo-string/c/echo_string.c"
    "echo-string-wasi-rl|wasi-rl|echo-string-wasi/c/main.c"
)

# rustc's wasm32 layout (see above).
RUSTC_LAYOUT=(-Wl,--stack-first -Wl,-z,stack-size=1048576 -Wl,--initial-memory=1114112)

# WAT samples: name|source. The memoryless gcd: nothing in an instance to reset.
WAT=(
    "gcd-nomem|gcd/wat/gcd.wat"
    "chain|chain/wat/chain.wat"
)

# Rust crates: name|crate dir|target
RUST=(
    "hello|hello/rust|wasm32-wasip1"
    "fibonacci|fibonacci/rust|wasm32-wasip1"
    "authentication|authentication/rust|wasm32-unknown-unknown"
    "authentication-wasi|authentication-wasi/rust|wasm32-wasip1"
    "add_one|add_one/rust|wasm32-unknown-unknown"
    "echo-string|echo-string/rust|wasm32-unknown-unknown"
    "echo-string-wasi|echo-string-wasi/rust|wasm32-wasip1"
    "gcd|gcd/rust|wasm32-unknown-unknown"
    "gcd-wasi|gcd-wasi/rust|wasm32-wasip1"
)

CFLAGS=(-O2 -Wall -Wextra -I"$COMMON")
# No libc: multi-value returns for (ptr, len), no entry point, exports named in the sources
# (export_name) plus __heap_base, where the engine writes the input (wasm-ld exports `memory`
# by default).
BARE=(--target=wasm32 -nostdlib -ffreestanding -mmultivalue -Xclang -target-abi -Xclang experimental-mv
      -Wl,--no-entry -Wl,--export=__heap_base -Wl,--strip-all)

# Multi-value is on by default in recent wabt, and older ones need --enable-multi-value.
VALIDATE=()
if command -v wasm-validate >/dev/null 2>&1; then
    if wasm-validate --help 2>&1 | grep -q -- --enable-multi-value; then
        VALIDATE=(wasm-validate --enable-multi-value)
    else
        VALIDATE=(wasm-validate)
    fi
fi

validate() {
    if [ ${#VALIDATE[@]} -gt 0 ] && ! "${VALIDATE[@]}" "$1"; then
        echo "invalid module: $1" >&2
        return 1
    fi
}

CC="${CC:-clang-14}"
if ! command -v "$CC" >/dev/null 2>&1; then
    for s in "${SAMPLES[@]}"; do
        echo "skipped ${s%%|*} ($CC not found; install clang-14, lld-14, wasi-libc and libclang-rt-14-dev-wasm32)"
    done
else
    # clang looks for `wasm-ld`; Debian ships it as wasm-ld-14 (and in llvm-14/bin).
    if ! command -v wasm-ld >/dev/null 2>&1 && ! [ -x "$(dirname "$(readlink -f "$(command -v "$CC")")")/wasm-ld" ]; then
        if command -v wasm-ld-14 >/dev/null 2>&1; then
            mkdir -p "$TMP/bin"
            ln -s "$(command -v wasm-ld-14)" "$TMP/bin/wasm-ld"
            PATH="$TMP/bin:$PATH"
        fi
    fi
    NOLIBC="$TMP/nolibc.o"
    "$CC" --target=wasm32 -ffreestanding -fno-builtin -O2 -c "$COMMON/nolibc.c" -o "$NOLIBC"
    for s in "${SAMPLES[@]}"; do
        IFS='|' read -r name kind srcs <<<"$s"
        src=()
        for f in $srcs; do src+=("$HERE/$f"); done
        case "$kind" in
            wasi) cmd=("$CC" --target=wasm32-wasi "${CFLAGS[@]}" "${src[@]}" -Wl,--strip-all) ;;
            # Numeric functions need no 64 KiB stack: one page of memory in all keeps each
            # fresh instance cheap to reset.
            num) cmd=("$CC" "${BARE[@]}" "${CFLAGS[@]}" "${src[@]}" "$NOLIBC"
                      -Wl,-z,stack-size=8192 -Wl,--initial-memory=65536) ;;
            wasi-rl) cmd=("$CC" --target=wasm32-wasi "${CFLAGS[@]}" "${src[@]}" -Wl,--strip-all
                          "${RUSTC_LAYOUT[@]}") ;;
            abi-rl) cmd=("$CC" "${BARE[@]}" "${CFLAGS[@]}" "${src[@]}" "$NOLIBC" "${RUSTC_LAYOUT[@]}") ;;
            *) cmd=("$CC" "${BARE[@]}" "${CFLAGS[@]}" "${src[@]}" "$NOLIBC") ;;
        esac
        if log=$("${cmd[@]}" -o "$OUT/$name.wasm" 2>&1) && validate "$OUT/$name.wasm"; then
            [ -z "$log" ] || echo "$log" >&2 # warnings
            echo "built $name"
        else
            echo "$log" >&2
            echo "skipped $name (compile failed, see above)"
            FAILED=1
        fi
    done
fi

for w in "${WAT[@]}"; do
    IFS='|' read -r name src <<<"$w"
    if ! command -v wat2wasm >/dev/null 2>&1; then
        echo "skipped $name (wat2wasm not found; install wabt)"
    elif wat2wasm "$HERE/$src" -o "$OUT/$name.wasm"; then
        echo "built $name"
    else
        echo "skipped $name (wat2wasm failed, see above)"
        FAILED=1
    fi
done

# Rust: only when rustup has the target (it needs `rustup target add`, i.e. network).
installed=""
if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup target list --installed 2>/dev/null || true)"
fi
for r in "${RUST[@]}"; do
    IFS='|' read -r name dir target <<<"$r"
    if ! command -v cargo >/dev/null 2>&1; then
        echo "skipped $name rust (cargo not found)"
    elif ! grep -qx "$target" <<<"$installed"; then
        echo "skipped $name rust ($target target not installed; rustup target add $target)"
    else
        mkdir -p "$OUT/rust"
        if cargo build --quiet --release --target "$target" --manifest-path "$HERE/$dir/Cargo.toml" \
            --target-dir "$OUT/rust/target"; then
            # The artifact is named after the crate, with - turned into _.
            crate="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$HERE/$dir/Cargo.toml" | head -1 | tr - _)"
            artifact="$OUT/rust/target/$target/release/$crate.wasm"
            cp "$artifact" "$OUT/rust/$name.wasm"
            validate "$OUT/rust/$name.wasm"
            echo "built $name rust"
        else
            echo "skipped $name rust (cargo build failed, see above)"
            FAILED=1
        fi
    fi
done

exit "${FAILED:-0}"
