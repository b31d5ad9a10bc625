#!/usr/bin/env bash
# Rebuilds models/demo: records 60 s of the simulated vibration sensor in
# each mode with the device's own source code, trains a 1-D CNN on 64-sample
# windows and exports it here (model.onnx, weights.safetensors, input.npy,
# output.npy, report.md, curve.svg, confusion.svg, edgeinfer.toml).
#
#     bash models/demo/make.sh
#
# EDGEINFER_HOST overrides how edgeinfer-host is run.
set -euo pipefail
cd "$(dirname "$0")/../.."
read -r -a host <<<"${EDGEINFER_HOST:-cargo run -q --features host --bin edgeinfer-host --}"
data=$(mktemp -d)/vibration.csv
for mode in normal fault; do
    "${host[@]}" record --config "models/demo/record-$mode.toml" \
        --label "$mode" --seconds 60 --out "$data"
done
"${host[@]}" train --data "$data" --target label --task classify --labels normal,fault \
    --window 64 --hop 32 --channels x,y,z \
    --arch cnn1d:8,16 --kernel 5 --init he --optimizer adam --lr 0.005 \
    --epochs 60 --batch 16 --patience 15 --seed 7 --out models/demo
rm -f "$data"
