"""Runs the ONNX backend test models that the `onnx` Python package ships
(pytorch-converted, pytorch-operator, simple) through `edgeinfer infer` and
prints one JSON object: model name -> "ok", or why not.

    python3 tests/onnx_backend.py EDGEINFER_BINARY WORK_DIR

Each model's reference inputs and outputs (TensorProto files) become .npy
files; every output edgeinfer gives is compared with the reference at the
ONNX backend tests' own tolerance (rtol 1e-3, atol 1e-7, plus 1e-5 absolute
for float32 rounding). Used by tests/models.rs.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper

SUITES = ["pytorch-converted", "pytorch-operator", "simple"]


def load_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    results = {}
    for suite in SUITES:
        base = os.path.join(root, suite)
        for name in sorted(os.listdir(base)):
            model = os.path.join(base, name, "model.onnx")
            data = os.path.join(base, name, "test_data_set_0")
            if not (os.path.isfile(model) and os.path.isdir(data)):
                continue
            key = f"{suite}/{name}"
            inputs = sorted(
                (f for f in os.listdir(data) if f.startswith("input_")),
                key=lambda f: int(f[6:-3]),
            )
            outputs = sorted(
                (f for f in os.listdir(data) if f.startswith("output_")),
                key=lambda f: int(f[7:-3]),
            )
            args = [binary, "infer", "--model", model, "--json"]
            out_dir = os.path.join(work, suite, name)
            os.makedirs(out_dir, exist_ok=True)
            for f in inputs:
                npy = os.path.join(out_dir, f[:-3] + ".npy")
                np.save(npy, load_pb(os.path.join(data, f)))
                args += ["--input", npy]
            run = subprocess.run(args, capture_output=True, text=True, timeout=120)
            if run.returncode != 0:
                lines = [l for l in run.stderr.splitlines() if "error" in l]
                reason = lines[0] if lines else run.stderr.strip()
                # The paths are this machine's; the reason is what matters.
                reason = reason.replace("edgeinfer: error: ", "").replace(model + ": ", "")
                reason = reason.replace(out_dir + os.sep, "")
                results[key] = "error: " + reason[:240]
                continue
            got = json.loads(run.stdout)["outputs"]
            want = [load_pb(os.path.join(data, f)) for f in outputs]
            if len(got) != len(want):
                results[key] = f"mismatch: {len(got)} outputs, expected {len(want)}"
                continue
            verdict = "ok"
            for i, (g, w) in enumerate(zip(got, want)):
                g = np.array(g["data"], dtype=np.float64).reshape(g["shape"])
                w = w.astype(np.float64)
                if g.shape != w.shape:
                    verdict = f"mismatch: output {i} shape {list(g.shape)}, expected {list(w.shape)}"
                    break
                if not np.allclose(g, w, rtol=1e-3, atol=1e-5, equal_nan=True):
                    d = float(np.nanmax(np.abs(g - w))) if g.size else 0.0
                    verdict = f"mismatch: output {i} differs by {d:g}"
                    break
            results[key] = verdict
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
