#!/usr/bin/env python3
"""Soak: the demo for a long time through a real Mosquitto that restarts.

The demo's model and simulated sensor at 100x its real rate (10,000 samples/s,
about 312 inferences/s), results over MQTT at QoS 1 through the outbox, while
Mosquitto is restarted every few minutes. Each interval the device's resident
memory and open file descriptors are sampled; at the end every sequence number
the device emitted is checked at a persistent subscriber.

    cargo build --release
    python3 benches/soak.py                       # 30 min, restart every 5 min
    python3 benches/soak.py --minutes 3 --restart-every 1 --sample-every 15

Needs mosquitto and mosquitto_sub on PATH. Prints one row per sample and a
verdict: RSS and descriptors flat (last sample within 10 % / +2 of the first
after warm-up), results emitted vs received, duplicates.
"""

import argparse
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"soak: broker on port {port} did not start")


def proc_status(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss / 1024.0, fds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--restart-every", type=float, default=5.0, help="minutes")
    ap.add_argument("--sample-every", type=float, default=60.0, help="seconds")
    ap.add_argument("--binary", default=None,
                    help="default: edgeinfer in cargo's release target directory")
    args = ap.parse_args()
    if args.binary is None:
        meta = json.loads(subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT))
        args.binary = os.path.join(meta["target_directory"], "release", "edgeinfer")

    work = tempfile.mkdtemp(prefix="edgeinfer-soak-")
    port = free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        # Persistence: the subscriber's session and its queued messages
        # survive a broker restart, as on a real installation.
        # `user`: as root, Mosquitto would switch to its own user, which
        # cannot write the private work directory.
        f.write(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
                f"persistence true\npersistence_location {work}/\n"
                "max_queued_messages 1000000\n")

    def start_broker():
        b = subprocess.Popen(["mosquitto", "-c", conf],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return b

    broker = start_broker()
    received = []
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(port), "-q", "1", "-c", "-i", "soak-sub",
         "-t", "edgeinfer/soak/result"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def read_sub():
        for line in sub.stdout:
            try:
                batch = json.loads(line)
            except ValueError:
                continue
            received.extend(r["seq"] for r in batch["records"])

    threading.Thread(target=read_sub, daemon=True).start()
    time.sleep(1.0)

    cfg = os.path.join(work, "soak.toml")
    with open(cfg, "w") as f:
        f.write(f"""device_id = "soak"
[model]
path = "{ROOT}/models/demo/model.onnx"
[source]
kind = "simulated"
rate_hz = 10000.0
channels = 3
mode = "alternate"
switch_every_s = 0.05
seed = 42
[postprocess]
kind = "classify"
top_k = 2
[[sink]]
kind = "mqtt"
encoding = "json"
batch_max_records = 10
batch_max_ms = 200
[mqtt]
broker = "mqtt://127.0.0.1:{port}"
reconnect_min_ms = 200
reconnect_max_ms = 2000
metrics_interval_s = 10.0
grace_s = 30.0
[outbox]
dir = "{work}/state"
""")
    log = open(os.path.join(work, "device.log"), "w")
    dev = subprocess.Popen([args.binary, "run", "--config", cfg],
                           stdout=subprocess.DEVNULL, stderr=log)

    print(f"soak: {args.minutes:g} min, Mosquitto restarted every {args.restart_every:g} min, "
          f"work dir {work}")
    print(f"{'minute':>7} {'RSS MiB':>8} {'fds':>4} {'received':>9} {'restarts':>8}")
    start = time.time()
    end = start + args.minutes * 60
    next_sample = start + 5.0  # first sample after warm-up
    next_restart = start + args.restart_every * 60
    restarts = 0
    samples = []
    while time.time() < end:
        now = time.time()
        if now >= next_restart:
            broker.send_signal(signal.SIGTERM)  # saves its database
            broker.wait()
            time.sleep(2.0)  # the device notices and backs off
            broker = start_broker()
            restarts += 1
            next_restart += args.restart_every * 60
        if now >= next_sample:
            rss, fds = proc_status(dev.pid)
            samples.append((rss, fds))
            print(f"{(now - start) / 60:>7.1f} {rss:>8.1f} {fds:>4} {len(received):>9} {restarts:>8}",
                  flush=True)
            next_sample += args.sample_every
        if dev.poll() is not None:
            sys.exit(f"soak: the device exited ({dev.returncode}); see {work}/device.log")
        time.sleep(0.2)

    dev.send_signal(signal.SIGINT)
    dev.wait(timeout=60)
    log.close()
    summary = next((l for l in open(os.path.join(work, "device.log")) if " inferences," in l), "")
    emitted = int(summary.split(" results")[0].rsplit(" ", 1)[1]) if summary else -1
    deadline = time.time() + 30
    while len(set(received)) < emitted and time.time() < deadline:
        time.sleep(0.2)
    sub.terminate()
    broker.terminate()
    unique = set(received)
    lost = sorted(set(range(emitted)) - unique)
    missing = len(lost)
    if lost:
        runs = []
        for s in lost:
            if runs and s == runs[-1][1] + 1:
                runs[-1][1] = s
            else:
                runs.append([s, s])
        print("missing seq ranges: " + ", ".join(f"{a}-{b}" for a, b in runs[:10]))
    rss0, fd0 = samples[0]
    rss1, fd1 = samples[-1]
    peak = max(r for r, _ in samples)
    flat = rss1 <= rss0 * 1.10 and fd1 <= fd0 + 2
    print(f"device: {summary.strip()}")
    print(f"results emitted {emitted}, received {len(unique)} distinct, missing {missing}, "
          f"duplicates {len(received) - len(unique)}")
    print(f"RSS first {rss0:.1f} MiB, last {rss1:.1f} MiB, peak {peak:.1f} MiB; "
          f"fds first {fd0}, last {fd1}: {'flat' if flat else 'GROWING'}")
    ok = flat and missing == 0
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
