#!/usr/bin/env python3
"""Images end to end: images per second through `edgeinfer run` for
MobileNet v1 at 224x224 (widths 0.5 and 1.0) and at 320x320 (width 1.0),
random weights, on 640x480 JPEGs, split into decode, resize and inference;
and, for a 30 fps Motion-JPEG camera, frames processed against frames
skipped.

What it runs is what a user runs: the release `edgeinfer` binary with a
config a user would write (an `image_dir` source; an `mjpeg` source whose
command writes frames at 30 fps), the `imagenet` preset, results to stdout.
The split is the binary's own exit summary (`per image (p50): decode ...,
resize ..., inference ...`), the rate is results counted as they are
printed, after the first (model loading excluded).

    pip install pillow
    cargo build --release --bin edgeinfer
    cargo run --release --example make_models -- --zoo /tmp/zoo
    python3 benches/images.py [--model M.onnx ...] [--images 200] [--seconds 10]
"""

import argparse
import io
import os
import random
import re
import subprocess
import sys
import tempfile
import time

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
DEVICE = os.path.join(TARGET, "release", "edgeinfer")


def photo(seed, w=640, h=480):
    """A JPEG with the structure of a photo (gradients, shapes, noise)."""
    rnd = random.Random(seed)
    img = Image.radial_gradient("L").resize((w, h)).convert("RGB")
    px = img.load()
    for _ in range(40):
        x, y = rnd.randrange(w - 40), rnd.randrange(h - 40)
        c = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        for i in range(x, x + 40):
            for j in range(y, y + 40, 3):
                px[i, j] = c
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


SUMMARY = re.compile(
    r"(\d+) samples, (\d+) inferences.*per image \(p50\): decode ([\d.]+) ms, "
    r"resize ([\d.]+) ms, inference ([\d.]+) ms(?:, (\d+) camera frames skipped)?"
)


def summary(stderr):
    m = SUMMARY.search(stderr)
    if not m:
        sys.exit(f"no summary in the output:\n{stderr}")
    return m


def directory(model, work, n):
    inbox = os.path.join(work, "in")
    os.makedirs(inbox)
    frames = [photo(i) for i in range(8)]
    for i in range(n):
        with open(os.path.join(inbox, f"{i:05}.jpg"), "wb") as f:
            f.write(frames[i % len(frames)])
    cfg = os.path.join(work, "dir.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[model]\npath = "{model}"\n'
            f'[source]\nkind = "image_dir"\npath = "{inbox}"\nafter = "keep"\npoll_ms = 20\n'
            '[image]\npreset = "imagenet"\n[[sink]]\nkind = "stdout"\n'
        )
    p = subprocess.Popen(
        [DEVICE, "run", "--config", cfg, "--count", str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = None
    count = 0
    for _ in p.stdout:
        count += 1
        if first is None:
            first = time.perf_counter()
    last = time.perf_counter()
    err = p.stderr.read()
    p.wait()
    m = summary(err)
    rate = (count - 1) / (last - first) if count > 1 else 0.0
    return rate, float(m[3]), float(m[4]), float(m[5])


CAMERA = """
import sys, time
frames = [open(p, "rb").read() for p in sys.argv[2:]]
out = sys.stdout.buffer
start = time.time()
i = 0
while time.time() - start < float(sys.argv[1]):
    out.write(frames[i % len(frames)])
    out.flush()
    i += 1
    time.sleep(max(0, start + i / 30 - time.time()))
sys.stderr.write(f"{i} frames\\n")
time.sleep(3600)
"""


def camera(model, work, seconds):
    paths = []
    for i in range(4):
        path = os.path.join(work, f"frame{i}.jpg")
        with open(path, "wb") as f:
            f.write(photo(100 + i))
        paths.append(path)
    script = os.path.join(work, "camera.py")
    with open(script, "w") as f:
        f.write(CAMERA)
    cmd = ", ".join(f'"{a}"' for a in ["python3", script, str(seconds), *paths])
    cfg = os.path.join(work, "cam.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[model]\npath = "{model}"\n'
            f'[source]\nkind = "mjpeg"\ncommand = [{cmd}]\n'
            '[image]\npreset = "imagenet"\n[[sink]]\nkind = "stdout"\n'
        )
    p = subprocess.Popen(
        [DEVICE, "run", "--config", cfg],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(seconds + 2)
    p.terminate()
    err = p.communicate()[1]
    m = summary(err)
    return int(m[2]), int(m[6] or 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    models = a.model or [
        "/tmp/zoo/mobilenet_v1_050_224.onnx",
        "/tmp/zoo/mobilenet_v1_100_224.onnx",
        # Slower than the camera: what skipping looks like.
        "/tmp/zoo/mobilenet_v1_100_320.onnx",
    ]
    for model in models:
        model = os.path.abspath(model)
        with tempfile.TemporaryDirectory() as work:
            rate, decode, resize, infer = directory(model, work, a.images)
            processed, skipped = camera(model, work, a.seconds)
        print(f"{os.path.basename(model)}")
        print(f"  image_dir, {a.images} JPEGs 640x480: "
              f"{rate:.1f} images/s end to end")
        print(f"  per image (p50): decode {decode:.1f} ms, resize {resize:.1f} ms, "
              f"inference {infer:.1f} ms")
        print(f"  mjpeg at 30 fps for {a.seconds:.0f} s: {processed} frames processed, "
              f"{skipped} skipped")


if __name__ == "__main__":
    main()
