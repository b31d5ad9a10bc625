#!/usr/bin/env python3
"""Times the same ONNX files single-threaded in ONNX Runtime and in
`edgeinfer profile`, checks that both give the same outputs, and prints
the ratio per model.

    pip install onnxruntime numpy onnx
    cargo build --release
    cargo run --release --example make_models -- --zoo /tmp/zoo
    python3 benches/compare_onnxruntime.py [MODEL.onnx ...]
    python3 benches/compare_onnxruntime.py --layers /tmp/zoo/mobilenet_v2_224.onnx

Optional and outside the test suite. Default models: the 2-D CNN
benchmark set (MobileNetV2-1.0, ResNet-18, SqueezeNet 1.1 at 224x224 and a
keyword-spotting DS-CNN on 49x10, from src/export/cnn2d.rs), then the other
networks `make_models --zoo` writes and every models/*/model.onnx.

Medians of --runs forward passes, microseconds, batch of one. Each model
is timed in --rounds (10) alternating rounds of --runs/--rounds passes,
ONNX Runtime and edgeinfer back to back, the first of the two switching
every round. A shared machine's speed drifts by a third for seconds at a
time; rounds a second apart see the same speed, so the ratio printed is
the median of the rounds' ratios, with its lowest and highest ("spread").
The p50 columns are the medians of the rounds' p50s; "of minima" is the
ratio of the two runtimes' fastest passes over all rounds, what each does
in the machine's quietest moment. ONNX Runtime is called
from Python: its per-call overhead (a one-element Identity model's p50) is
measured in the same run and printed, with the ratio against ORT's time
minus that overhead ("vs ORT compute"), which is what a C caller of ORT
would see ("-" where ORT's p50 is under twice that overhead, too close
to it to subtract).

--layers puts the two runtimes side by side per ONNX node instead: the
--top (12) slowest of the nodes `edgeinfer profile --ops --nodes all`
lists (tract's pack steps added to the node they pack for) next to ORT's
own profiler's median time for the node of the same name (ORT's fused
`_nchwc` nodes keep the name).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

BENCHMARK_SET = [
    "mobilenet_v2_224.onnx",
    "resnet18_224.onnx",
    "squeezenet1_1_224.onnx",
    "kws_dscnn.onnx",
]


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def feeds_for(sess):
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    return feeds


def p50_us(sess, feeds, runs, warmup=20):
    return times_us(sess, feeds, runs, warmup)[0]


def times_us(sess, feeds, runs, warmup=20):
    """(p50, minimum) of runs calls, in µs."""
    for _ in range(min(warmup, runs)):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times), min(times)


def ort_overhead_us(runs, tmp):
    """p50 of a model that does nothing: ORT's Python per-call cost."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = os.path.join(tmp, "identity.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    sess = session(path)
    return p50_us(sess, feeds_for(sess), max(runs, 2000))


def edgeinfer_us(binary, path, runs):
    """(p50, minimum) of `edgeinfer profile` over runs passes, in µs."""
    out = json.loads(subprocess.run(
        [binary, "profile", "--model", path, "--runs", str(runs), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout)
    return out["latency_p50_us"], out["latency_min_us"]


def rounds(binary, path, sess, feeds, runs, n):
    """(ORT (p50, min)s, edgeinfer (p50, min)s), one of each per round, over
    n alternating rounds of runs/n passes each."""
    per = max(1, runs // n)
    p50_us(sess, feeds, 20)
    ort, ours = [], []
    for r in range(n):
        if r % 2:
            e = edgeinfer_us(binary, path, per)
            o = times_us(sess, feeds, per, warmup=1)
        else:
            o = times_us(sess, feeds, per, warmup=1)
            e = edgeinfer_us(binary, path, per)
        ort.append(o)
        ours.append(e)
    return ort, ours


def base_name(node):
    """The ONNX node a runtime's node came from: tract suffixes `.matmatmul`,
    `.einsum.pack_a`, ...; ORT suffixes `_nchwc`."""
    node = node.split(".")[0]
    return node[: -len("_nchwc")] if node.endswith("_nchwc") else node


def ort_node_us(path, runs, tmp):
    """Median kernel time of each ONNX node in ORT's profiler, by base name."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tmp, "ort")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = feeds_for(sess)
    for _ in range(runs):
        sess.run(None, feeds)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    times = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times.setdefault(e["name"][: -len("_kernel_time")], []).append(e["dur"])
    per_node = {}
    for node, ts in times.items():
        per_node[base_name(node)] = per_node.get(base_name(node), 0.0) + statistics.median(ts)
    return per_node


def fused_names(path):
    """Conv/Gemm node -> the Relu/Clip it alone feeds: ORT names a fused
    node after the activation, tract after either."""
    import onnx

    graph = onnx.load(path).graph
    consumers = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    alias = {}
    for node in graph.node:
        users = consumers.get(node.output[0], [])
        if node.op_type in ("Conv", "Gemm") and len(users) == 1 \
                and users[0].op_type in ("Relu", "Clip"):
            alias[node.name] = users[0].name
    return alias


def layers(binary, path, runs, tmp, top):
    ours = json.loads(subprocess.run(
        [binary, "profile", "--model", path, "--runs", str(runs), "--ops", "--nodes", "all",
         "--json"],
        check=True, capture_output=True, text=True,
    ).stdout)
    alias = fused_names(path)
    theirs = {}
    for node, us in ort_node_us(path, runs, tmp).items():
        theirs[alias.get(node, node)] = theirs.get(alias.get(node, node), 0.0) + us
    total_ort = sum(theirs.values())
    print(f"{os.path.basename(path)}: edgeinfer p50 {ours['latency_p50_us']:.0f} µs, "
          f"ORT sum of node medians {total_ort:.0f} µs")
    grouped, kinds = {}, {}
    for n in ours["slowest_nodes"]:
        base = base_name(n["name"])
        base = alias.get(base, base)
        grouped[base] = grouped.get(base, 0.0) + n["us_per_inference"]
        if n["op"] != "OptMatMulPack" or base not in kinds:
            kinds[base] = n["op"] + " " + n["detail"].split(";")[0][:60] if n["op"] == "DepthWiseConv" \
                else n["op"] + " " + (n["detail"].split("Mult: ")[-1].split(" with")[0][:40])
    print(f"  {'ONNX node':<14} {'edgeinfer µs':>12} {'ORT µs':>8} {'ratio':>6}  tract op")
    for base, us in sorted(grouped.items(), key=lambda kv: -kv[1])[:top]:
        o = theirs.get(base)
        ort_us, ratio = (f"{o:8.0f}", f"{us / o:6.1f}") if o else ("       -", "     -")
        print(f"  {base:<14} {us:>12.0f} {ort_us} {ratio}  {kinds[base]}")


def max_rel_diff(binary, path, sess, feeds, tmp):
    """Largest |edgeinfer - ORT| / max(1, |ORT|) over the first output."""
    name, x = next(iter(feeds.items()))
    xin, yout = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
    np.save(xin, x)
    subprocess.run([binary, "infer", "--model", path, "--input", xin, "--output", yout],
                   check=True, capture_output=True)
    ours = np.load(yout)
    theirs = sess.run(None, {name: x})[0]
    return float((np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10,
                    help="alternating rounds the runs are split into")
    ap.add_argument("--zoo", default="/tmp/zoo")
    ap.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "edgeinfer"))
    ap.add_argument("--layers", action="store_true",
                    help="per-node times side by side instead of whole-model p50s")
    ap.add_argument("--top", type=int, default=12,
                    help="with --layers: how many of the slowest nodes to print")
    args = ap.parse_args()
    models = args.models or (
        [os.path.join(args.zoo, m) for m in BENCHMARK_SET]
        + sorted(set(glob.glob(os.path.join(args.zoo, "*.onnx")))
                 - {os.path.join(args.zoo, m) for m in BENCHMARK_SET})
        + sorted(glob.glob("models/*/model.onnx")))
    if args.layers:
        with tempfile.TemporaryDirectory() as tmp:
            for m in (args.models or [os.path.join(args.zoo, m) for m in BENCHMARK_SET]):
                layers(args.binary, m, min(args.runs, 50), tmp, args.top)
        return
    with tempfile.TemporaryDirectory() as tmp:
        overhead = ort_overhead_us(args.runs, tmp)
        print(f"onnxruntime {ort.__version__}, one thread, {args.runs} runs in "
              f"{args.rounds} alternating rounds; "
              f"ORT Python per-call overhead {overhead:.1f} µs (Identity model p50)")
        print(f"{'model':<28} {'ORT µs':>10} {'edgeinfer µs':>13} {'edgeinfer/ORT':>14} "
              f"{'spread':>11} {'vs ORT compute':>15} {'of minima':>10} {'max rel diff':>13}")
        for m in models:
            sess = session(m)
            feeds = feeds_for(sess)
            o_times, e_times = rounds(args.binary, m, sess, feeds, args.runs, args.rounds)
            os_, es = [t[0] for t in o_times], [t[0] for t in e_times]
            ratios = [e / o for o, e in zip(os_, es)]
            # Not defined where ORT's p50 is within its own call overhead.
            compute = [e / (o - overhead) for o, e in zip(os_, es) if o > 2 * overhead]
            compute = f"{statistics.median(compute):.2f}" if compute else "-"
            minima = min(t[1] for t in e_times) / min(t[1] for t in o_times)
            diff = max_rel_diff(args.binary, m, sess, feeds, tmp)
            name = os.path.basename(m) if "models/" not in m else m
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            print(f"{name:<28} {statistics.median(os_):>10.1f} {statistics.median(es):>13.1f} "
                  f"{statistics.median(ratios):>14.2f} {spread:>11} "
                  f"{compute:>15} {minima:>10.2f} {diff:>13.1e}")


if __name__ == "__main__":
    sys.exit(main())
