#!/usr/bin/env python3
"""Collector ingest rate, side by side: one collector into SQLite, one into
PostgreSQL, three in a $share group into each; and database bytes per result.

What it runs is what a user runs: the release `edgeinfer-host` binary, a
Mosquitto broker, a private PostgreSQL server. For each case:

1. the collectors start, subscribe (persistent sessions) and stop;
2. `edgeinfer-host fleet-sim` publishes a backlog into those sessions;
3. the collectors start again, and the clock runs until the database holds
   every result.

So the figure is the collectors' ingest rate alone, not the simulator's.

    cargo build --release --features host,broker --bin edgeinfer-host
    python3 benches/collect.py [--devices 50] [--rate 200] [--seconds 5] [--inflight 20 1000]
"""

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
HOST = os.path.join(TARGET, "release", "edgeinfer-host")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Mosquitto:
    def __init__(self, inflight):
        self.dir = tempfile.mkdtemp()
        self.port = free_port()
        conf = os.path.join(self.dir, "m.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                f"max_queued_messages 10000000\nmax_inflight_messages {inflight}\n"
            )
        self.proc = subprocess.Popen(["mosquitto", "-c", conf], stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres:
    """A private server, fsync on, as the tests start it."""

    def __init__(self):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        bindir = out.stdout.strip() if out.returncode == 0 else ""
        if not os.path.exists(os.path.join(bindir, "initdb")):
            versions = sorted(os.listdir("/usr/lib/postgresql"), key=int)
            bindir = f"/usr/lib/postgresql/{versions[-1]}/bin"
        self.bin = bindir
        self.dir = tempfile.mkdtemp(dir="/tmp")
        self.port = free_port()
        self.pre = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.pre = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", data, "--auth=trust", "--username=postgres", "--no-locale")
        self.run(
            "pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-w", "start",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
        )
        self.data = data
        self.psql("postgres", "CREATE DATABASE edgeinfer")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/edgeinfer"

    def run(self, tool, *args):
        subprocess.run(self.pre + [os.path.join(self.bin, tool), *args], check=True,
                       cwd=self.dir, stdout=subprocess.DEVNULL)

    def psql(self, db, sql):
        out = subprocess.run(
            [os.path.join(self.bin, "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", db, "-c", sql],
            capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def reset(self):
        self.psql("postgres", "DROP DATABASE edgeinfer")
        self.psql("postgres", "CREATE DATABASE edgeinfer")

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def collectors(broker, db, n, group):
    procs = []
    for i in range(n):
        args = [HOST, "collect", "--broker", broker.url, "--db", db, "--client-id", f"bench-{i}"]
        if group:
            args += ["--group", "bench"]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while True:
            line = p.stderr.readline()
            if not line or "subscribed to" in line:
                break
        procs.append(p)
    return procs


def stop_all(procs):
    stats = []
    for p in procs:
        p.terminate()
    for p in procs:
        out, _ = p.communicate()
        stats.append(json.loads(out.strip() or "{}"))
    return stats


def stored(db, pg):
    if pg:
        return int(pg.psql("edgeinfer", "SELECT COUNT(*) FROM results"))
    import sqlite3
    c = sqlite3.connect(db, timeout=30)
    try:
        return c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        c.close()


def db_bytes(db, pg):
    if pg:
        return int(pg.psql("edgeinfer", "SELECT pg_total_relation_size('results')"))
    import sqlite3
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return os.path.getsize(db)


def case(args, broker_inflight, engine, n, pg):
    broker = Mosquitto(broker_inflight)
    tmp = tempfile.mkdtemp()
    if pg:
        pg.reset()
        db = pg.url
    else:
        db = os.path.join(tmp, "bench.sqlite")
    try:
        # Sessions and subscriptions first, then the backlog into them.
        stop_all(collectors(broker, db, n, n > 1))
        sim = subprocess.run(
            [HOST, "fleet-sim", "--broker", broker.url, "--devices", str(args.devices),
             "--rate", str(args.rate), "--seconds", str(args.seconds), "--metrics-every", "1000"],
            capture_output=True, text=True, check=True)
        total = json.loads(sim.stdout)["results"]
        t0 = time.perf_counter()
        procs = collectors(broker, db, n, n > 1)
        while stored(db, pg) < total:
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        stats = stop_all(procs)
        size = db_bytes(db, pg)
        return {
            "engine": engine, "collectors": n, "broker_inflight": broker_inflight,
            "results": total, "seconds": round(elapsed, 3),
            "results_per_s": round(total / elapsed),
            "transactions": sum(s.get("transactions", 0) for s in stats),
            "db_bytes_per_result": round(size / total, 1),
        }
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--inflight", type=int, nargs="+", default=[20, 1000])
    args = ap.parse_args()
    if not os.path.exists(HOST):
        sys.exit(f"{HOST} missing: cargo build --release --features host,broker --bin edgeinfer-host")
    pg = Postgres()
    rows = []
    try:
        for inflight in args.inflight:
            for engine, use_pg in [("sqlite", None), ("postgres", pg)]:
                for n in (1, 3):
                    r = case(args, inflight, engine, n, use_pg)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    finally:
        pg.stop()
    print("\n| engine | collectors | broker max_inflight | results | s | results/s | txns | DB bytes/result |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['collectors']} | {r['broker_inflight']} | {r['results']} | "
              f"{r['seconds']} | {r['results_per_s']} | {r['transactions']} | {r['db_bytes_per_result']} |")


if __name__ == "__main__":
    main()
