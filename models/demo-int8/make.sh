#!/usr/bin/env bash
# Rebuilds models/demo-int8: models/demo quantized to int8 with
# `edgeinfer-host quantize`, calibrated on the same recordings the demo was
# trained on (the simulated vibration sensor, 60 s per mode, fixed seeds),
# plus the demo's reference input and this model's output for it.
#
#     bash models/demo-int8/make.sh
#
# EDGEINFER_HOST and EDGEINFER override how the two binaries are run.
set -euo pipefail
cd "$(dirname "$0")/../.."
read -r -a host <<<"${EDGEINFER_HOST:-cargo run -q --features host --bin edgeinfer-host --}"
read -r -a device <<<"${EDGEINFER:-cargo run -q --release --bin edgeinfer --}"
data=$(mktemp -d)/vibration.csv
for mode in normal fault; do
    "${host[@]}" record --config "models/demo/record-$mode.toml" \
        --label "$mode" --seconds 60 --out "$data"
done
out=models/demo-int8
"${host[@]}" quantize --model models/demo/model.onnx --calibration "$data" \
    --out "$out/model.onnx" > "$out/quantize.json"
cp models/demo/input.npy "$out/input.npy"
"${device[@]}" infer --model "$out/model.onnx" --input "$out/input.npy" --output "$out/output.npy"
rm -f "$data"
