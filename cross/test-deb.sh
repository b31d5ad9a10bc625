#!/usr/bin/env bash
# Builds this machine's .deb, installs it with dpkg, checks what it put in
# place, removes and purges it, and checks that it is gone. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(cross/deb.sh | awk '{print $NF}')
[ -f "$deb" ] || { echo "no package built: $deb" >&2; exit 1; }
echo "package: $deb ($(stat -c %s "$deb") bytes)"
dpkg-deb --info "$deb" | grep -E "Package|Architecture|Depends"

dpkg -i "$deb"
fail() { echo "deb test: $*" >&2; dpkg -P edgeinfer >/dev/null 2>&1 || true; exit 1; }
[ -x /usr/bin/edgeinfer ] || fail "/usr/bin/edgeinfer missing"
[ -f /etc/edgeinfer/edgeinfer.toml ] || fail "config missing"
unit=$(dpkg -L edgeinfer | grep -E 'edgeinfer\.service$' | head -n1)
[ -n "$unit" ] && [ -f "$unit" ] || fail "systemd unit missing"
grep -q '^DynamicUser=yes' "$unit" || fail "unit is not the hardened one"
/usr/bin/edgeinfer --version
/usr/bin/edgeinfer check --config /etc/edgeinfer/edgeinfer.toml | tail -n 1
/usr/bin/edgeinfer infer --model /usr/share/edgeinfer/models/demo/model.onnx \
    --input models/demo/input.npy --json >/dev/null

dpkg -r edgeinfer
[ ! -e /usr/bin/edgeinfer ] || fail "binary left after remove"
[ -f /etc/edgeinfer/edgeinfer.toml ] || fail "remove must keep the config (a conffile)"
dpkg -P edgeinfer
[ ! -e /etc/edgeinfer/edgeinfer.toml ] || fail "config left after purge"
echo "deb test: install, check, remove, purge all passed"
