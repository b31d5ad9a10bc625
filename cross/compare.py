#!/usr/bin/env python3
"""Compares two result files within a tolerance, with no third-party modules.

    compare.py npy A.npy B.npy [TOL]      # .npy arrays (f32/f64/i64/u8, C order)
    compare.py jsonl A.jsonl B.jsonl [TOL] # result lines; ts_ms is ignored
Exits 1 and says where on the first difference.
"""
import json
import struct
import sys


def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        sys.exit(f"{path}: not a .npy file")
    major = data[6]
    if major == 1:
        hlen = struct.unpack("<H", data[8:10])[0]
        start = 10
    else:
        hlen = struct.unpack("<I", data[8:12])[0]
        start = 12
    header = eval(data[start:start + hlen].decode("latin1"))  # a Python dict literal
    shape = tuple(header["shape"])
    fmt = {"<f4": "f", "<f8": "d", "<i8": "q", "|u1": "B"}[header["descr"]]
    body = data[start + hlen:]
    n = 1
    for d in shape:
        n *= d
    return shape, struct.unpack(f"<{n}{fmt}", body[: n * struct.calcsize(fmt)])


def numbers(value, path=""):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            if k != "ts_ms":
                yield from numbers(v, f"{path}.{k}")


def main():
    kind, a, b = sys.argv[1:4]
    tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-4
    if kind == "npy":
        (sa, va), (sb, vb) = read_npy(a), read_npy(b)
        if sa != sb:
            sys.exit(f"shapes differ: {a} {sa} vs {b} {sb}")
        worst = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
        if worst > tol:
            sys.exit(f"{a} vs {b}: max abs diff {worst} > {tol}")
        print(f"ok {a}: max abs diff {worst:.3g}")
    else:
        la = [json.loads(l) for l in open(a) if l.strip()]
        lb = [json.loads(l) for l in open(b) if l.strip()]
        if len(la) != len(lb) or not la:
            sys.exit(f"{a}: {len(la)} results, {b}: {len(lb)}")
        worst = 0.0
        for i, (x, y) in enumerate(zip(la, lb)):
            if x.get("label") != y.get("label"):
                sys.exit(f"result {i}: {x} vs {y}")
            nx, ny = list(numbers(x)), list(numbers(y))
            if [p for p, _ in nx] != [p for p, _ in ny]:
                sys.exit(f"result {i}: fields differ: {x} vs {y}")
            for (p, u), (_, v) in zip(nx, ny):
                worst = max(worst, abs(u - v))
                if abs(u - v) > tol:
                    sys.exit(f"result {i} {p}: {u} vs {v}")
        print(f"ok {a}: {len(la)} results, max abs diff {worst:.3g}")


main()
