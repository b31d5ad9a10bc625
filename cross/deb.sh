#!/usr/bin/env bash
# Builds the Debian package for a target with cargo-deb: the binary, the
# systemd unit (examples/systemd/edgeinfer.service), /etc/edgeinfer/
# edgeinfer.toml and the demo model.
#
#   cross/deb.sh            # this machine's architecture
#   cross/deb.sh aarch64    # arm64 .deb for a 64-bit Raspberry Pi OS
#   cross/deb.sh armv7      # armhf .deb for 32-bit Raspberry Pi OS
#
# Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    cargo install --locked cargo-deb@^3
fi
case "${1:-host}" in
    host) target_args=() ;;
    aarch64 | aarch64-unknown-linux-gnu) cross/build.sh aarch64 >/dev/null; target_args=(--target aarch64-unknown-linux-gnu) ;;
    armv7 | armv7-unknown-linux-gnueabihf) cross/build.sh armv7 >/dev/null; target_args=(--target armv7-unknown-linux-gnueabihf) ;;
    *) echo "usage: cross/deb.sh [aarch64|armv7]" >&2; exit 2 ;;
esac
# The release profile strips already; cargo-deb's own strip would need the
# target's binutils.
cargo deb --locked --no-strip "${target_args[@]}" | tail -n 1
