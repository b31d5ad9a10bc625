#!/usr/bin/env python3
"""int8 against f32 for models the host trainer makes: file size, test
accuracy (or R²) before and after, and single-example latency.

Each model is trained with `edgeinfer-host train --quantize` (the int8
model is calibrated on the training split and scored on the test split,
which the trainer's summary reports); latency is `edgeinfer profile
--model` of model.onnx and model-int8.onnx side by side, the release
device binary, one thread.

    cargo build --release --bin edgeinfer
    cargo build --features host --bin edgeinfer-host
    python3 benches/quantize.py [--runs 2000]

Datasets: iris and red wine quality (linfa-datasets, through `cargo run
--example datasets`), a 32-feature 3-class table of 3000 rows with a
weight-heavy MLP, the demo's recorded vibration windows (1-D CNN), and a
generated folder of 32x32 shapes (2-D CNN, needs Pillow).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def blobs(path, rows=3000, features=32, classes=3):
    rng = random.Random(3)
    centers = [[rng.gauss(0, 1.2) for _ in range(features)] for _ in range(classes)]
    with open(path, "w") as f:
        f.write(",".join(f"f{i}" for i in range(features)) + ",kind\n")
        for r in range(rows):
            c = r % classes
            f.write(",".join(f"{10 + m + rng.gauss(0, 1):.4f}" for m in centers[c]) + f",k{c}\n")


def shapes(folder, per_class=150, size=32):
    from PIL import Image, ImageDraw
    rng = random.Random(5)
    for name in ["circle", "square", "stripes"]:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for i in range(per_class):
            img = Image.new("L", (size, size), rng.randint(0, 60))
            d = ImageDraw.Draw(img)
            r = rng.randint(6, 12)
            cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
            ink = rng.randint(160, 255)
            if name == "circle":
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ink)
            elif name == "square":
                d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=ink)
            else:
                for x in range(rng.randint(0, 3), size, 6):
                    d.line([x, 0, x, size], fill=ink, width=2)
            px = img.load()
            for _ in range(60):
                px[rng.randrange(size), rng.randrange(size)] = rng.randint(0, 255)
            img.save(os.path.join(folder, name, f"{i}.png"))


def p50_us(binary, model, runs):
    out = sh([binary, "profile", "--model", model, "--runs", str(runs), "--json"])
    return json.loads(out)["latency_p50_us"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--binary", default=os.path.join(TARGET, "release", "edgeinfer"))
    ap.add_argument("--host", default=os.path.join(TARGET, "debug", "edgeinfer-host"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    sh(["cargo", "run", "-q", "--example", "datasets", "--", tmp])
    blobs(os.path.join(tmp, "blobs.csv"))
    vib = os.path.join(tmp, "vibration.csv")
    for mode in ["normal", "fault"]:
        sh([args.host, "record", "--config", f"models/demo/record-{mode}.toml",
            "--label", mode, "--seconds", "60", "--out", vib])
    jobs = [
        ("iris, MLP 16", ["--data", f"{tmp}/iris.csv", "--target", "species", "--task",
                          "classify", "--arch", "mlp:16", "--test-split", "0.2"]),
        ("wine quality, MLP 64-64", ["--data", f"{tmp}/winequality.csv", "--target", "quality",
                                     "--task", "regress", "--arch", "mlp:64,64"]),
        ("32-feature table, MLP 256-256", ["--data", f"{tmp}/blobs.csv", "--target", "kind",
                                           "--task", "classify", "--arch", "mlp:256,256"]),
        ("demo vibration, 1-D CNN 8-16", ["--data", vib, "--target", "label", "--task",
                                          "classify", "--window", "64", "--hop", "32",
                                          "--channels", "x,y,z", "--arch", "cnn1d:8,16",
                                          "--kernel", "5"]),
    ]
    try:
        shapes(os.path.join(tmp, "shapes"))
        jobs.append(("shapes 32x32, 2-D CNN 16-32", ["--images", f"{tmp}/shapes",
                                                     "--grayscale", "--size", "32x32"]))
    except ImportError:
        print("(Pillow not installed: no image model)", file=sys.stderr)
    print(f"{'model':<32} {'f32 B':>9} {'int8 B':>9} {'size':>6} {'metric f32':>11} "
          f"{'int8':>7} {'f32 µs':>8} {'int8 µs':>8} {'int8/f32':>9}")
    for name, train in jobs:
        out = os.path.join(tmp, name.split(",")[0].replace(" ", "_"))
        s = json.loads(sh([args.host, "train", *train, "--epochs", "200", "--seed", "1",
                           "--quantize", "--out", out]).strip().splitlines()[-1])
        q = s["quantized"]
        key = "accuracy" if "accuracy" in q["f32_metrics"] else "r2"
        f = p50_us(args.binary, f"{out}/model.onnx", args.runs)
        i = p50_us(args.binary, f"{out}/model-int8.onnx", args.runs)
        print(f"{name:<32} {q['f32_bytes']:>9} {q['int8_bytes']:>9} {q['size_ratio']:>6.2f} "
              f"{q['f32_metrics'][key]:>11.3f} {q['int8_metrics'][key]:>7.3f} "
              f"{f:>8.1f} {i:>8.1f} {i / f:>9.2f}")


if __name__ == "__main__":
    sys.exit(main())
