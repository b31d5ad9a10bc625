#!/usr/bin/env python3
"""Deploying models over MQTT: how long `edgeinfer-host deploy` takes until
the device answers `applied`, for the demo model (4.8 kB) and a 3.5 MB model,
and the longest time between two results reaching a subscriber while the
device swaps models, against the longest gap with no deploy.

What it runs is what a user runs: the release `edgeinfer` and
`edgeinfer-host` binaries, a Mosquitto broker, one device on the simulated
sensor (200 Hz, one result per 32 samples) with `[remote]`, and
`mosquitto_sub` timing each result's arrival. The 3.5 MB model is trained by
`edgeinfer-host train` (an MLP with 4500 hidden units on the demo's
recordings), so it takes the demo's input and its self-test is real.

    cargo build --release --features host,broker --bin edgeinfer --bin edgeinfer-host
    python3 benches/fleet.py [--rounds 5]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
DEVICE = os.path.join(TARGET, "release", "edgeinfer")
HOST = os.path.join(TARGET, "release", "edgeinfer-host")

# The broker as the collect benchmark starts it (this directory is on the path).
from collect import Mosquitto  # noqa: E402


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def big_model(work):
    """The demo pipeline's input, a 192 -> 4500 -> 2 MLP: 3.5 MB of weights."""
    data = os.path.join(work, "vibration.csv")
    for mode in ("normal", "fault"):
        run(HOST, "record", "--config", os.path.join(ROOT, f"models/demo/record-{mode}.toml"),
            "--label", mode, "--seconds", "20", "--out", data)
    out = os.path.join(work, "big")
    run(HOST, "train", "--data", data, "--target", "label", "--task", "classify",
        "--labels", "normal,fault", "--window", "64", "--hop", "32", "--channels", "x,y,z",
        "--arch", "mlp:4500", "--epochs", "2", "--batch", "16", "--seed", "7", "--out", out)
    return os.path.join(out, "model.onnx")


def arrivals(path):
    """Unix times at which results reached the subscriber."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(float(line.split()[0]))
            except (ValueError, IndexError):
                pass
    return out


def longest_gap(times, start, end):
    inside = [t for t in times if start <= t <= end]
    return max((b - a for a, b in zip(inside, inside[1:])), default=0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    for b in (DEVICE, HOST):
        if not os.path.exists(b):
            sys.exit(f"{b} missing: cargo build --release --features host,broker "
                     "--bin edgeinfer --bin edgeinfer-host")
    work = tempfile.mkdtemp(prefix="edgeinfer-fleet-")
    procs = []
    broker = None
    try:
        broker = Mosquitto(inflight=20)
        procs.append(broker.proc)
        port, url = broker.port, broker.url
        big = big_model(work)
        demo = os.path.join(work, "demo", "model.onnx")
        os.makedirs(os.path.dirname(demo))
        for name in ("model.onnx", "input.npy", "output.npy"):
            shutil.copy(os.path.join(ROOT, "models/demo", name), os.path.dirname(demo))
        dev = os.path.join(work, "device")
        os.makedirs(os.path.join(dev, "model"))
        shutil.copy(demo, os.path.join(dev, "model"))
        run(HOST, "keygen", "--out", os.path.join(work, "keys"))
        shutil.copy(os.path.join(work, "keys", "edgeinfer.pub"), dev)
        cfg = os.path.join(dev, "device.toml")
        with open(cfg, "w") as f:
            f.write(f"""device_id = "bench"
[model]
path = "model/model.onnx"
[source]
kind = "simulated"
rate_hz = 200.0
channels = 3
[[sink]]
kind = "mqtt"
[mqtt]
broker = "{url}"
[outbox]
dir = "outbox"
[remote]
public_key = "edgeinfer.pub"
state_dir = "state"
""")
        times_file = os.path.join(work, "arrivals.txt")
        with open(times_file, "w") as out:
            procs.append(subprocess.Popen(
                ["mosquitto_sub", "-p", str(port), "-t", "edgeinfer/bench/result", "-F", "%U"],
                stdout=out))
            env = dict(os.environ, RUST_LOG="warn")
            procs.append(subprocess.Popen([DEVICE, "run", "--config", cfg], cwd=dev, env=env,
                                          stderr=subprocess.DEVNULL))
            time.sleep(3)
            base_start = time.time()
            time.sleep(10)
            base_end = time.time()
            rows = {"demo": [], "big": []}
            for _ in range(args.rounds):
                for name, model in (("big", big), ("demo", demo)):
                    t0 = time.time()
                    m0 = time.monotonic()
                    r = subprocess.run([HOST, "deploy", "--broker", url, "--key",
                                        os.path.join(work, "keys"), "--device", "bench",
                                        "--model", model, "--timeout", "60"],
                                       capture_output=True, text=True)
                    took = time.monotonic() - m0
                    if r.returncode != 0:
                        sys.exit(f"deploy failed: {r.stdout}{r.stderr}")
                    time.sleep(1.5)
                    rows[name].append((took, t0, time.time()))
            time.sleep(1)
        times = arrivals(times_file)
        baseline = longest_gap(times, base_start, base_end)
        size = {"demo": os.path.getsize(demo), "big": os.path.getsize(big)}
        print(f"results arriving: {len(times)}; longest gap with no deploy (10 s): "
              f"{baseline * 1000:.0f} ms")
        print("| model | file bytes | deploy → applied, median (min–max) | longest gap between results during the deploys |")
        print("|---|---|---|---|")
        for name in ("demo", "big"):
            took = sorted(r[0] for r in rows[name])
            gap = max(longest_gap(times, r[1], r[2]) for r in rows[name])
            print(f"| {name} | {size[name]:,} | {took[len(took) // 2]:.2f} s "
                  f"({took[0]:.2f}–{took[-1]:.2f}) | {gap * 1000:.0f} ms |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
        if broker:
            shutil.rmtree(broker.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
