#!/usr/bin/env bash
# Builds the device binary in release for a Raspberry Pi-class board.
#
#   cross/build.sh aarch64            # Pi 3/4/5, Zero 2 W, 64-bit OS
#   cross/build.sh armv7              # 32-bit Raspberry Pi OS
#   cross/build.sh aarch64 --minimal  # no embedded broker, no TLS
#   cross/build.sh aarch64 --smallest # --minimal, all optimized for size
#                                     # (smallest binary, slower CNNs)
#
# Installs what is missing (the rustup target, Debian's cross gcc). Linker
# settings are in .cargo/config.toml. Respects CARGO_TARGET_DIR. Prints the
# binary's path and size.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    aarch64 | aarch64-unknown-linux-gnu) target=aarch64-unknown-linux-gnu; gcc=gcc-aarch64-linux-gnu ;;
    armv7 | armv7-unknown-linux-gnueabihf) target=armv7-unknown-linux-gnueabihf; gcc=gcc-arm-linux-gnueabihf ;;
    *) echo "usage: cross/build.sh aarch64|armv7 [--minimal|--smallest]" >&2; exit 2 ;;
esac
features=()
profile=release
case "${2:-}" in
    "") ;;
    --minimal) features=(--no-default-features) ;;
    --smallest) features=(--no-default-features); profile=smallest ;;
    *) echo "usage: cross/build.sh aarch64|armv7 [--minimal|--smallest]" >&2; exit 2 ;;
esac

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
if ! command -v "${gcc#gcc-}-gcc" >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$gcc" >/dev/null
fi

cargo build --profile "$profile" --locked --target "$target" --bin edgeinfer "${features[@]}"

out="${CARGO_TARGET_DIR:-target}/$target/$profile/edgeinfer"
echo "$out $(stat -c %s "$out") bytes"
