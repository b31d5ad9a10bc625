#!/usr/bin/env python3
"""Times the same ONNX files single-threaded in ONNX Runtime and in
`edgeinfer profile`, and prints the ratio per model.

    pip install onnxruntime numpy
    cargo build --release
    python3 benches/compare_onnxruntime.py [MODEL.onnx ...]

Optional and outside the test suite. Default models: every models/*/model.onnx
plus the MobileNet- and ResNet-style CNNs the test suite writes
(`cargo run --release --example make_models -- --zoo /tmp/zoo` writes them).
Medians of --runs forward passes, microseconds, batch of one.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


def ort_p50_us(path, runs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    for _ in range(20):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def edgeinfer_p50_us(binary, path, runs):
    out = subprocess.run(
        [binary, "profile", "--model", path, "--runs", str(runs), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["latency_p50_us"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "edgeinfer"))
    args = ap.parse_args()
    models = args.models or sorted(glob.glob("models/*/model.onnx") + glob.glob("/tmp/zoo/*.onnx"))
    print(f"onnxruntime {ort.__version__}, one thread, {args.runs} runs")
    print(f"{'model':<40} {'ORT p50 µs':>12} {'edgeinfer p50 µs':>18} {'edgeinfer/ORT':>14}")
    for m in models:
        o = ort_p50_us(m, args.runs)
        e = edgeinfer_p50_us(args.binary, m, args.runs)
        print(f"{m:<40} {o:>12.2f} {e:>18.2f} {e / o:>14.2f}")


if __name__ == "__main__":
    sys.exit(main())
