"""The trainer's defaults against tuning, on real tabular data.

    cargo build --release --features host --bin edgeinfer-host
    python3 -m pip install scikit-learn    # bundles the data sets, no download
    python3 benches/training_defaults.py [--seeds 5] [--host target/release/edgeinfer-host]

For iris, wine and breast cancer (scikit-learn's bundled copies), trains
`--arch mlp:32` with nothing else set (`--data --target --task --seed`) for
each seed, then with every learning rate and batch size of a small grid,
and prints the markdown table docs/training.md holds: mean test accuracy of
the defaults; of the grid point tuning picks (best mean validation
accuracy, as one tunes); and of the grid point with the best mean *test*
accuracy, an upper bound that also fits the test split's noise. Every run
uses the same seeded splits, so the comparisons are paired.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

from sklearn import datasets

GRID_LR = ["0.001", "0.003", "0.01", "0.03"]
GRID_BATCH = ["8", "16", "32"]


def write_csv(path, bunch):
    names = [n.replace(" ", "_").replace("(", "").replace(")", "") for n in bunch.feature_names]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names + ["label"])
        for x, y in zip(bunch.data, bunch.target):
            w.writerow([f"{v:.6g}" for v in x] + [bunch.target_names[y]])


def train(host, data, out, seed, extra):
    cmd = [host, "train", "--data", data, "--target", "label", "--task", "classify",
           "--arch", "mlp:32", "--seed", str(seed), "--out", out] + extra
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr}")
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    return summary["test"]["accuracy"], summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--host", default="target/release/edgeinfer-host")
    args = ap.parse_args()
    seeds = range(1, args.seeds + 1)
    sets = {
        "iris": datasets.load_iris(),
        "wine": datasets.load_wine(),
        "breast cancer": datasets.load_breast_cancer(),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, bunch in sets.items():
            data = os.path.join(tmp, name.replace(" ", "_") + ".csv")
            write_csv(data, bunch)
            out = os.path.join(tmp, "out")
            default, chosen = [], []
            for s in seeds:
                acc, summ = train(args.host, data, out, s, [])
                default.append(acc)
                chosen.append((summ["lr"], summ["batch"], summ["epochs_run"], summ["converged"]))
            tuned, oracle = None, None
            for lr in GRID_LR:
                for batch in GRID_BATCH:
                    runs = [train(args.host, data, out, s,
                                  ["--lr", lr, "--batch", batch, "--epochs", "2000",
                                   "--patience", "200"]) for s in seeds]
                    test = sum(r[0] for r in runs) / len(runs)
                    val = sum(r[1]["val"]["accuracy"] for r in runs) / len(runs)
                    if tuned is None or val > tuned[1]:
                        tuned = (test, val, lr, batch)
                    if oracle is None or test > oracle[0]:
                        oracle = (test, val, lr, batch)
            d = sum(default) / len(default)
            rows.append((name, len(bunch.target), d, tuned, oracle, chosen))
            print(f"{name}: default {d:.4f}, tuned {tuned[0]:.4f}, oracle {oracle[0]:.4f}",
                  file=sys.stderr)
    print("| data set | rows | defaults | tuned (best validation) | grid point | defaults − tuned | "
          "best test accuracy in the grid | grid point | defaults − that |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, d, tuned, oracle, chosen in rows:
        print(f"| {name} | {n} | {d:.4f} | {tuned[0]:.4f} | lr {tuned[2]}, batch {tuned[3]} | "
              f"{100 * (d - tuned[0]):+.1f} | {oracle[0]:.4f} | lr {oracle[2]}, batch {oracle[3]} | "
              f"{100 * (d - oracle[0]):+.1f} |")
    print()
    print("| data set | what the defaults chose per seed: lr / batch / epochs run |")
    print("|---|---|")
    for name, n, d, tuned, oracle, chosen in rows:
        picks = "; ".join(f"{lr:.1e} / {b} / {e}{'' if c else ' (not converged)'}"
                          for lr, b, e, c in chosen)
        print(f"| {name} | {picks} |")

if __name__ == "__main__":
    main()
