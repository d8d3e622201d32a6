#!/usr/bin/env python3
"""rollbackd's watcher under load, against a real Prometheus.

Evaluates 1,000 rules every 5 s for a minute (by default) and prints
rollbackd's CPU seconds and peak RSS beside Prometheus's CPU over the same
run, and rollbackd's idle RSS with the shipped rules. Targets: rollbackd CPU
<= 10 % of Prometheus's, peak RSS <= 30 MB, idle RSS <= 15 MB.

Usage: bench/watch_load.py [--seconds 60] [--rules 1000] [--routes 100] [--per-request 20]
Everything runs on loopback and is stopped at the end. Release build.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import free_port, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")

TEMPLATES = [
    ('(sum(rate(http_requests_total{{service="demo",code=~"5.."}}[{w}])) or vector(0)) / '
     'sum(rate(http_requests_total{{service="demo"}}[{w}]))', "above", 0.00025),
    ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{service="demo"}}[{w}])))',
     "above", 1.0),
    ('sum(db_pool_connections_available{{service="demo"}}) / sum(db_pool_connections_max{{service="demo"}})',
     "below", 0.1),
    ('(sum(rate(db_queries_total{{service="demo",result="error"}}[{w}])) or vector(0)) / '
     'sum(rate(db_queries_total{{service="demo"}}[{w}]))', "above", 0.1),
]
WINDOWS = ["1m", "2m", "5m"]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rules_file(path, count, groups):
    per_group = count // groups
    lines = ["groups:"]
    n = 0
    for g in range(groups):
        lines += [f"  - name: load-{g}", "    interval: 5s", "    rules:"]
        for _ in range(per_group):
            expr, op, threshold = TEMPLATES[n % len(TEMPLATES)]
            window = WINDOWS[(n // len(TEMPLATES)) % len(WINDOWS)]
            lines += [
                f"      - name: Rule{n}",
                f"        expr: '{expr.format(w=window)}'",
                f"        {op}: {threshold * (1 + n / 10000):.6f}",
                "        for: 1m",
            ]
            n += 1
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return n


def config(path, prom_port, listen_port, rule_paths, base_url, per_request=20):
    paths = ", ".join(f'"{p}"' for p in rule_paths)
    with open(path, "w") as f:
        f.write(
            f'[prometheus]\nurl = "http://127.0.0.1:{prom_port}"\ntimeout = "5s"\n'
            f'max_queries_per_request = {per_request}\n\n'
            f'[watch]\nrule_paths = [{paths}]\nmax_concurrent_queries = 8\n\n'
            f'[server]\nlisten = "127.0.0.1:{listen_port}"\n\n'
            f'[service]\nname = "demo"\nbase_url = "{base_url}"\n'
        )


def evaluations(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines()
               if l.startswith("rollbackd_rule_evaluations_total{"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--routes", type=int, default=100,
                    help="route label values the demo service spreads its request series over")
    ap.add_argument("--per-request", type=int, default=20,
                    help="prometheus.max_queries_per_request (1: one query per request)")
    args = ap.parse_args()

    subprocess.run([os.path.join(ROOT, "scripts/install-deps.sh")], check=True)
    print("bench: building release binaries", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "rollbackd",
                    "--example", "demo_service"], cwd=ROOT, check=True)
    rollbackd = os.path.join(ROOT, "target/release/rollbackd")
    service = os.path.join(ROOT, "target/release/examples/demo_service")

    work = tempfile.mkdtemp(prefix="rollbackd-bench.")
    procs = []

    def spawn(cmd, log):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, log), "w"))
        procs.append(p)
        return p

    try:
        svc_port, prom_port = free_port(), free_port()
        spawn([service, f"127.0.0.1:{svc_port}"], "service.log")
        wait_http(f"http://127.0.0.1:{svc_port}/health")
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{svc_port}/control", data=f'{{"routes": {args.routes}}}'.encode(),
            headers={"content-type": "application/json"}, method="POST")).read()
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: demo\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{svc_port}']\n")
        prom = spawn(["prometheus", f"--config.file={work}/prometheus.yml",
                      f"--storage.tsdb.path={work}/data",
                      f"--web.listen-address=127.0.0.1:{prom_port}"], "prometheus.log")
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        base_url = f"http://127.0.0.1:{svc_port}"

        # Idle: the shipped rules (6 rules, 10-15 s intervals).
        idle_port = free_port()
        config(f"{work}/idle.toml", prom_port, idle_port, [os.path.join(ROOT, "rules")], base_url)
        idle = spawn([rollbackd, "--config", f"{work}/idle.toml", "watch"], "idle.log")
        wait_http(f"http://127.0.0.1:{idle_port}/readyz", timeout=60)
        time.sleep(20)
        idle_rss = status_kb(idle.pid, "VmRSS")
        idle.terminate()
        idle.wait()

        # Load: N rules, 5 s interval.
        count = rules_file(f"{work}/load.yml", args.rules, 10)
        load_port = free_port()
        config(f"{work}/load.toml", prom_port, load_port, [f"{work}/load.yml"], base_url,
               args.per_request)
        load = spawn([rollbackd, "--config", f"{work}/load.toml", "watch"], "load.log")
        wait_http(f"http://127.0.0.1:{load_port}/readyz", timeout=60)
        time.sleep(5)
        r0, p0, e0, t0 = cpu_seconds(load.pid), cpu_seconds(prom.pid), evaluations(load_port), time.time()
        time.sleep(args.seconds)
        r1, p1, e1, t1 = cpu_seconds(load.pid), cpu_seconds(prom.pid), evaluations(load_port), time.time()
        peak = status_kb(load.pid, "VmHWM")
        errors = 0.0
        body = urllib.request.urlopen(f"http://127.0.0.1:{load_port}/metrics").read().decode()
        for line in body.splitlines():
            if line.startswith("rollbackd_rule_evaluations_total{") and 'outcome="error"' in line:
                errors += float(line.rsplit(" ", 1)[1])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    rb_cpu, prom_cpu = r1 - r0, p1 - p0
    ratio = rb_cpu / prom_cpu if prom_cpu > 0 else float("inf")
    print()
    series = 2 * args.routes + 14 * args.routes
    print(f"rollbackd watcher benchmark: {count} rules every 5s for {t1 - t0:.0f}s "
          f"({e1 - e0:.0f} evaluations, {errors:.0f} with errors); "
          f"service exposes {args.routes} routes (~{series} request series); "
          f"{args.per_request} queries per request")
    print(f"  rollbackd CPU      {rb_cpu:7.2f} s")
    print(f"  Prometheus CPU     {prom_cpu:7.2f} s")
    print(f"  CPU ratio          {ratio * 100:7.1f} %   (target <= 10 %)  {'met' if ratio <= 0.10 else 'MISSED'}")
    print(f"  peak RSS (load)    {peak / 1024:7.1f} MB  (target <= 30 MB) {'met' if peak <= 30 * 1024 else 'MISSED'}")
    print(f"  idle RSS (6 rules) {idle_rss / 1024:7.1f} MB  (target <= 15 MB) {'met' if idle_rss <= 15 * 1024 else 'MISSED'}")
    print(f"  logs in {work}")


if __name__ == "__main__":
    main()
