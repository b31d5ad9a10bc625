#!/usr/bin/env python3
"""Times each model with the loader's own kernels and with tract's, side by
side: `edgeinfer profile` alternately without and with an environment
variable that keeps tract's ops (EDGEINFER_TRACT_CONV for the dense
convolutions and constant-matrix products, EDGEINFER_TRACT_WINDOWS for the
depthwise convolutions and max pools, or both).

    cargo build --release --bin edgeinfer
    cargo run --release --example make_models -- --zoo /tmp/zoo
    python3 benches/direct_ab.py --keep EDGEINFER_TRACT_CONV [MODEL.onnx ...]

Prints the p50 of every run and, per model, ours / tract's as the median
of the pairs' ratios. Default models: the 2-D benchmark set, the other zoo
networks and every models/*/model.onnx (the 1-D models and MLPs, which
must not get slower).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess

DEFAULT_ZOO = [
    "mobilenet_v2_224.onnx",
    "resnet18_224.onnx",
    "squeezenet1_1_224.onnx",
    "kws_dscnn.onnx",
    "mobilenet_v1_100_224.onnx",
    "mobilenet_style.onnx",
    "resnet_style.onnx",
    "mobilenet_1d.onnx",
    "cnn1d_mixed.onnx",
]


def p50_us(binary, path, runs, env):
    out = subprocess.run(
        [binary, "profile", "--model", path, "--runs", str(runs), "--json"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out)["latency_p50_us"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--zoo", default="/tmp/zoo")
    ap.add_argument("--binary", default="target/release/edgeinfer")
    ap.add_argument("--keep", action="append", default=[],
                    help="variable that keeps tract's ops (repeatable)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--runs", type=int, default=0,
                    help="forward passes per timing (0: by model size)")
    args = ap.parse_args()
    keep = args.keep or ["EDGEINFER_TRACT_CONV"]
    models = args.models or (
        [os.path.join(args.zoo, m) for m in DEFAULT_ZOO]
        + sorted(glob.glob("models/*/model.onnx"))
    )
    ours_env = {k: v for k, v in os.environ.items() if k not in keep}
    tract_env = dict(ours_env, **{k: "1" for k in keep})
    print(f"ours / tract's ({', '.join(keep)}=1), p50 µs, {args.pairs} alternating pairs")
    print(f"{'model':32} {'ours':>28} {'tract':>28} {'ratio':>6}")
    for path in models:
        if not os.path.exists(path):
            print(f"{path}: missing (make_models --zoo)")
            continue
        runs = args.runs or (
            30 if os.path.getsize(path) > 1_000_000 else 300)
        ours, tract = [], []
        for _ in range(args.pairs):
            ours.append(p50_us(args.binary, path, runs, ours_env))
            tract.append(p50_us(args.binary, path, runs, tract_env))
        ratio = statistics.median(o / t for o, t in zip(ours, tract))
        fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs)
        print(f"{os.path.basename(os.path.dirname(path)) if path.endswith('model.onnx') else os.path.basename(path):32} "
              f"{fmt(ours):>28} {fmt(tract):>28} {ratio:6.2f}")


if __name__ == "__main__":
    main()
