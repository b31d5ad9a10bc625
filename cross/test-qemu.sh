#!/usr/bin/env bash
# Proves the ARM build computes what the host build computes: runs the ARM
# binary under qemu-user on every model in models/ (reference input) and on
# the demo stream (cross/parity.toml), for each tract kernel family the
# board may pick, and compares with the reference outputs and with the host
# binary (tolerance 1e-4). Timing under qemu means nothing; results do.
#
#   cross/test-qemu.sh aarch64
#   cross/test-qemu.sh armv7
#   cross/test-qemu.sh aarch64 --smallest   # any cross/build.sh option
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    aarch64 | aarch64-unknown-linux-gnu)
        target=aarch64-unknown-linux-gnu; qemu=qemu-aarch64; sysroot=/usr/aarch64-linux-gnu
        # tract picks kernels from the CPU part: Pi 3 / Zero 2 W (A53),
        # Pi 4 (A72), Pi 5 (A76: the generic path).
        variants=("TRACT_CPU_AARCH64_KIND=a53" "TRACT_CPU_AARCH64_KIND=a72" "TRACT_CPU_AARCH64_KIND=generic") ;;
    armv7 | armv7-unknown-linux-gnueabihf)
        target=armv7-unknown-linux-gnueabihf; qemu=qemu-arm; sysroot=/usr/arm-linux-gnueabihf
        variants=("TRACT_CPU_ARM32_NEON=true" "TRACT_CPU_ARM32_NEON=false") ;;
    *) echo "usage: cross/test-qemu.sh aarch64|armv7 [--minimal|--smallest]" >&2; exit 2 ;;
esac

if ! command -v "$qemu" >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq qemu-user >/dev/null
fi

build_option="${2:-}"
cross/build.sh "$target" ${build_option:+"$build_option"}
profile=release
if [ "$build_option" = "--smallest" ]; then profile=smallest; fi
tdir="${CARGO_TARGET_DIR:-target}"
arm="$tdir/$target/$profile/edgeinfer"
cargo build --release --locked --bin edgeinfer
host="$tdir/release/edgeinfer"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$host" run --config cross/parity.toml --count 30 > "$work/host.jsonl" 2>/dev/null

failed=0
for v in "${variants[@]}"; do
    echo "== $target, $v"
    for dir in models/*/; do
        name=$(basename "$dir")
        env "$v" "$qemu" -L "$sysroot" "$arm" infer --model "$dir/model.onnx" \
            --input "$dir/input.npy" --output "$work/$name.npy"
        "$host" infer --model "$dir/model.onnx" --input "$dir/input.npy" --output "$work/$name.host.npy"
        python3 cross/compare.py npy "$work/$name.npy" "$dir/output.npy" || failed=1
        python3 cross/compare.py npy "$work/$name.npy" "$work/$name.host.npy" || failed=1
    done
    env "$v" "$qemu" -L "$sysroot" "$arm" run --config cross/parity.toml --count 30 \
        > "$work/arm.jsonl" 2>/dev/null
    python3 cross/compare.py jsonl "$work/arm.jsonl" "$work/host.jsonl" || failed=1
done
if [ "$failed" = 0 ]; then
    echo "qemu parity: all passed for $target"
else
    echo "qemu parity: FAILED for $target" >&2
    exit 1
fi
