#!/usr/bin/env python3
"""rollbackd's back-test over a week of history: the shipped rules, 7 days
at 15 s resolution, against a real Prometheus holding a backfilled week.

The week is the demo service's own series (one scrape, its counters growing
at the rates measured over a few seconds, its gauges constant), written as
OpenMetrics and backfilled with `promtool tsdb create-blocks-from
openmetrics`. Then `rollbackd rules backtest rules/ --from … --to …` runs
against it. Prints the series and points, the backfill time, and
rollbackd's wall time and peak RSS (target: well under a minute).

Usage: bench/backtest.py [--days 7] [--no-build]
Everything runs on loopback and is stopped at the end. Release build.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import free_port, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 15
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def samples(url):
    """{(name, labels): value} from one scrape."""
    out = {}
    for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        m = LINE.match(line)
        if m and not line.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run([os.path.join(ROOT, "scripts/install-deps.sh")], check=True)
        print("bench: building release binaries", flush=True)
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "rollbackd",
                        "--example", "demo_service"], cwd=ROOT, check=True)
    rollbackd = os.path.join(ROOT, "target/release/rollbackd")
    service = os.path.join(ROOT, "target/release/examples/demo_service")
    work = tempfile.mkdtemp(prefix="rollbackd-backtest-bench.")
    procs = []
    try:
        svc_port = free_port()
        procs.append(subprocess.Popen([service, f"127.0.0.1:{svc_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{svc_port}/health")
        first, t1 = samples(f"http://127.0.0.1:{svc_port}/metrics"), time.time()
        time.sleep(3)
        second, t2 = samples(f"http://127.0.0.1:{svc_port}/metrics"), time.time()

        now = int(time.time())
        to = (now - 2 * 3600) // STEP * STEP
        start = to - args.days * 86400
        points = (to - start) // STEP + 1
        counter = re.compile(r"(_total|_bucket|_sum|_count)$")
        by_name = {}
        for (name, labels), v in second.items():
            by_name.setdefault(name, []).append((labels, v))
        path = os.path.join(work, "week.om")
        t0 = time.time()
        with open(path, "w") as f:
            for name in sorted(by_name):
                f.write(f"# TYPE {name} unknown\n")
                for labels, v in by_name[name]:
                    rate = max(0.0, (v - first.get((name, labels), v)) / (t2 - t1))
                    for i in range(points):
                        t = start + i * STEP
                        value = rate * (t - start) if counter.search(name) else v
                        f.write(f"{name}{labels} {value:.6g} {t}\n")
            f.write("# EOF\n")
        series = len(second)
        size = os.path.getsize(path)
        data = os.path.join(work, "data")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", path, data],
                       check=True)
        backfill = time.time() - t0
        os.remove(path)

        prom_port = free_port()
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 15s\n")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=30d"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prometheus.log"), "w")))
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", timeout=60)
        with open(os.path.join(work, "rollbackd.toml"), "w") as f:
            f.write(f'[prometheus]\nurl = "http://127.0.0.1:{prom_port}"\ntimeout = "60s"\n\n'
                    f'[service]\nname = "demo"\nbase_url = "http://127.0.0.1:{svc_port}"\n')

        def iso(t):
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

        cmd = [rollbackd, "--config", os.path.join(work, "rollbackd.toml"), "rules", "backtest",
               os.path.join(ROOT, "rules"), "--from", iso(start), "--to", iso(to)]
        t0 = time.time()
        with open(os.path.join(work, "out.txt"), "w") as o, open(os.path.join(work, "err.txt"), "w") as e:
            child = subprocess.Popen(cmd, stdout=o, stderr=e)
            _, status, usage = os.wait4(child.pid, 0)
        wall = time.time() - t0
        code = os.waitstatus_to_exitcode(status)
        out = open(os.path.join(work, "out.txt")).read()
        err = open(os.path.join(work, "err.txt")).read()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    print(out)
    if code != 0:
        print(err)
        sys.exit(f"bench: rollbackd rules backtest exited {code}")
    print(f"back-test benchmark: {args.days} days at {STEP} s, the shipped rules (6, one a probe), "
          f"{series} series x {points} points backfilled ({size / 1e6:.0f} MB of OpenMetrics, "
          f"{backfill:.1f} s to write and backfill)")
    print(f"  rollbackd rules backtest   wall {wall:6.2f} s   (target: well under 60 s)   "
          f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB")
    print(f"  logs in {work}")


if __name__ == "__main__":
    main()
