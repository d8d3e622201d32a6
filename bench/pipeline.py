#!/usr/bin/env python3
"""rollbackd against a Prometheus -> Alertmanager -> webhook pipeline: how
long from a bad deploy to the platform's rollback call.

One real Prometheus scrapes the demo service and evaluates an alerting rule
that a real Alertmanager routes to a webhook receiver (a thread of this
script); the receiver lists the deploys and calls the rollback command. In
the other system, `rollbackd watch` evaluates the same expression against the
same Prometheus and calls the same rollback command through its `command`
provider. Both reach the platform through one wrapper script, which notes
the time (`date +%s.%N`) just before it runs the demo's
`examples/demo/deploys.sh rollback`.

A trial: wait until the expression is below the threshold and no alert is
pending or firing anywhere, and settle. Make the bad deploy: register it
(`POST /deploy {"version": "bad-N"}` to the demo service) and wait until the
demo platform lists it SUCCESS (it reads DEPLOYING for its first second, and
while no deployment is live neither system has anything to roll back). Wait
until the trial's phase of the scrape cycle (read from the target's
`lastScrape`). Then the failure, the moment measured from: `POST /control
{"error_ratio": 0.05}`; and wait for the rollback call.

Where a failure falls in the scrape cycle decides most of the time to detect
it, in both systems. So the phases are spread evenly over the interval
((i + 0.5) / trials, in random order), and the A and the R trial of a pair
meet the same phase: the medians compare the systems, not their luck.

Trials alternate, A (Alertmanager pipeline) then R (rollbackd), `--trials`
of each, against the same Prometheus. The Alertmanager rule stays loaded
all along; the receiver calls the platform only during A trials, once. Each
R trial starts a fresh `rollbackd watch` with a fresh state dir, so nothing
from earlier trials (cooldown, rate limit, breaker, loop guard) can refuse
it, and stops it once its run is over. After each trial a healthy deploy is
made, so the next bad deploy always has a healthy deployment behind it.

Settings: `--interval 1s` (default): scrape and evaluation (Prometheus and
rollbackd) every 1 s, rate window [5s]; `--interval 15s`: the shipped
defaults, 15 s, with a [1m] window; `--both` runs 1s, then 15s. Always: the
rule has `for: 0s` and threshold 0.00025; Alertmanager has group_wait 0s,
group_interval 1s, repeat_interval 1m. rollbackd's guards and
engine.coalesce keep their defaults; only what acts after the platform call
is shortened (engine.poll_interval, verify waits), so each run ends sooner.

Usage: bench/pipeline.py [--interval 1s|15s | --both] [--trials 5] [--no-build]
Prints each trial (seconds from the failure to the rollback call, and when
the rule fired, by its evaluation time, with the steps in between), then per
system the median, min and max, the medians of firing and of firing -> call,
and `ratio rollbackd / alertmanager = X.XX` (of the medians) against the goal
(<= 1.0). Exits 1 when a trial timed out. Everything runs on loopback and is
stopped at the end; logs are kept in a temporary directory it names.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchlib import free_port, stop_process, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THRESHOLD = 0.00025
ERROR_RATIO = 0.05
ALERT = "BenchHighErrorRate"
EXPR = ('sum(rate(http_requests_total{{service="demo",code=~"5.."}}[{w}])) / '
        'sum(rate(http_requests_total{{service="demo"}}[{w}]))')

# interval -> (seconds, rate window, per-trial timeout in seconds)
SETTINGS = {"1s": (1, "5s", 60), "15s": (15, "1m", 180)}


def http_json(url, body=None, timeout=5):
    req = urllib.request.Request(url)
    if body is not None:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def parse_time(text):
    """RFC 3339 (Prometheus's or rollbackd's) to Unix seconds."""
    text = text.strip().replace("Z", "+00:00")
    if "." in text:  # at most microseconds for fromisoformat
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    return datetime.fromisoformat(text).timestamp()


def next_at_phase(prom_url, interval, phase):
    """The next time (Unix seconds, at least 50 ms away) that is `phase`
    (a fraction) of the scrape interval after Prometheus begins a scrape of
    the demo service, from the target's lastScrape."""
    targets = http_json(f"{prom_url}/api/v1/targets?state=active")["data"]["activeTargets"]
    last = parse_time(targets[0]["lastScrape"])
    t = last + phase * interval
    while t < time.time() + 0.05:
        t += interval
    return t


def eval_lag(prom_url, interval):
    """How long after a scrape of the demo service begins Prometheus
    evaluates the bench's alerting rule (seconds, modulo the interval)."""
    deadline = time.time() + 60
    while True:
        targets = http_json(f"{prom_url}/api/v1/targets?state=active")["data"]["activeTargets"]
        groups = http_json(f"{prom_url}/api/v1/rules")["data"]["groups"]
        if targets and groups and targets[0]["health"] == "up" and groups[0]["lastEvaluation"] \
                and not groups[0]["lastEvaluation"].startswith("0001"):
            break
        if time.time() > deadline:
            sys.exit("bench: Prometheus neither scraped the service nor evaluated its rule in 60 s")
        time.sleep(0.5)
    scrape = parse_time(targets[0]["lastScrape"])
    evaluation = parse_time(groups[0]["lastEvaluation"])
    return (evaluation - scrape) % interval


def pick_target(deployments):
    """rollbackd's choice (engine/target.rs): the live deployment is the
    newest SUCCESS; the target the newest earlier SUCCESS or REMOVED one."""
    current = next((d for d in deployments if d["status"] == "SUCCESS"), None)
    if current is None:
        return None
    return next((d for d in deployments if d["created_at"] < current["created_at"]
                 and d["status"] in ("SUCCESS", "REMOVED")), None)


class Receiver:
    """The Alertmanager pipeline's webhook receiver. Armed for one A trial,
    it acts on the first firing notification: lists the deploys, picks the
    target as rollbackd would, and runs the rollback command once."""

    def __init__(self, wrapper, log_path):
        self.wrapper, self.log_path = wrapper, log_path
        self.lock = threading.Lock()
        self.armed = False
        self.done = threading.Event()
        self.error = None
        self.started = None  # the firing alert's startsAt (Prometheus's evaluation time)
        self.received = None  # when that notification arrived
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.delivered(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arm(self):
        with self.lock:
            self.armed, self.error, self.started, self.received = True, None, None, None
            self.done.clear()

    def disarm(self):
        with self.lock:
            self.armed = False

    def delivered(self, body):
        now = time.time()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        status = payload.get("status")
        with self.lock:
            act = self.armed and status == "firing"
            if act:
                self.armed = False
        with open(self.log_path, "a") as f:
            f.write(f"{now:.3f} {status} {len(payload.get('alerts', []))} alert(s)"
                    f"{' -> rollback' if act else ''}\n")
        if not act:
            return
        self.received = now
        try:
            self.started = min(parse_time(a["startsAt"]) for a in payload["alerts"]
                               if a.get("status") == "firing")
        except (KeyError, ValueError):
            pass
        try:
            env = dict(os.environ, BENCH_CALLER="alertmanager")
            out = subprocess.run([self.wrapper, "list"], env=env, capture_output=True,
                                 timeout=10, check=True).stdout
            target = pick_target(json.loads(out))
            if target is None:
                raise RuntimeError("no deployment to roll back to")
            env.update(ROLLBACKD_DEPLOYMENT_ID=target["id"],
                       ROLLBACKD_TARGET_GIT_SHA=target.get("git_sha") or "")
            subprocess.run([self.wrapper, "rollback"], env=env, capture_output=True,
                           timeout=10, check=True)
        except Exception as e:  # reported by the trial
            self.error = str(e)
        self.done.set()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def median_line(name, values, failed):
    if not values:
        return f"  {name:<22} no successful trial ({failed} failed)"
    return (f"  {name:<22} median {statistics.median(values):6.2f} s   "
            f"min {min(values):6.2f}   max {max(values):6.2f}   "
            f"({len(values)} trials{f', {failed} FAILED' if failed else ''})")


def run_setting(interval_name, args, rollbackd, service, work):
    interval, window, trial_timeout = SETTINGS[interval_name]
    expr = EXPR.format(w=window)
    settle = args.settle if args.settle is not None else max(3.0, float(interval))
    quiet_timeout = 6 * interval + 60 + (60 if window == "1m" else 5)
    work = os.path.join(work, interval_name)
    os.makedirs(work)
    procs = []
    receiver = None

    def spawn(cmd, log):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(work, log), "w"), cwd=work)
        procs.append(p)
        return p

    def stop(p):
        stop_process(p, timeout=10)

    print(f"\n== {interval_name}: scrape {interval}s, evaluation {interval}s (Prometheus and rollbackd), "
          f"for 0s, threshold {THRESHOLD}; Alertmanager group_wait 0s, group_interval 1s, "
          f"repeat_interval 1m", flush=True)
    print(f"   expression: {expr}", flush=True)
    # (system, seconds to the call or None when it failed, seconds to the
    # rule firing by its evaluation time or None when unknown)
    results = []
    try:
        svc_port, prom_port, am_port = free_port(), free_port(), free_port()
        svc_url = f"http://127.0.0.1:{svc_port}"
        prom_url = f"http://127.0.0.1:{prom_port}"
        am_url = f"http://127.0.0.1:{am_port}"
        spawn([service, f"127.0.0.1:{svc_port}"], "service.log")
        wait_http(f"{svc_url}/health")

        # The platform, as both systems reach it: the demo's deploys.sh,
        # with the time of every rollback call noted first.
        calls = os.path.join(work, "calls.txt")
        open(calls, "w").close()
        wrapper = os.path.join(work, "platform.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\n# The demo's deploy platform; notes when a rollback is asked for.\nset -eu\n"
                    f'if [ "${{1:-}}" = rollback ]; then\n'
                    f'  echo "$(date +%s.%N) ${{BENCH_CALLER:-unknown}} ${{ROLLBACKD_DEPLOYMENT_ID:-}}" >> "{calls}"\n'
                    f"fi\nDEMO_URL='{svc_url}' exec '{ROOT}/examples/demo/deploys.sh' \"$@\"\n")
        os.chmod(wrapper, 0o755)

        receiver = Receiver(wrapper, os.path.join(work, "webhook.log"))
        with open(os.path.join(work, "alertmanager.yml"), "w") as f:
            f.write("route:\n  receiver: bench\n  group_by: [alertname]\n  group_wait: 0s\n"
                    "  group_interval: 1s\n  repeat_interval: 1m\n"
                    "receivers:\n  - name: bench\n    webhook_configs:\n"
                    f"      - url: '{receiver.url}'\n        send_resolved: true\n")
        spawn(["prometheus-alertmanager", f"--config.file={work}/alertmanager.yml",
               f"--storage.path={work}/alertmanager-data",
               f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
              "alertmanager.log")
        wait_http(f"{am_url}/-/ready")

        with open(os.path.join(work, "alerts.yml"), "w") as f:
            f.write(f"groups:\n  - name: bench\n    interval: {interval}s\n    rules:\n"
                    f"      - alert: {ALERT}\n        expr: '({expr}) > {THRESHOLD}'\n        for: 0s\n")
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(f"global:\n  scrape_interval: {interval}s\n  evaluation_interval: {interval}s\n"
                    f"rule_files: ['{work}/alerts.yml']\n"
                    "alerting:\n  alertmanagers:\n    - static_configs:\n"
                    f"        - targets: ['127.0.0.1:{am_port}']\n"
                    "scrape_configs:\n  - job_name: demo\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{svc_port}']\n")
        spawn(["prometheus", f"--config.file={work}/prometheus.yml",
               f"--storage.tsdb.path={work}/prometheus-data",
               f"--web.listen-address=127.0.0.1:{prom_port}"], "prometheus.log")
        wait_http(f"{prom_url}/-/ready")
        print(f"   Prometheus evaluates its alerting rule {eval_lag(prom_url, interval) * 1000:.0f} ms "
              "after each scrape of the service begins (a phase set by hashes of the group and "
              "the target)", flush=True)

        with open(os.path.join(work, "rules.yml"), "w") as f:
            f.write(f"groups:\n  - name: bench\n    interval: {interval}s\n    rules:\n"
                    f"      - name: HighErrorRate\n        expr: '{expr}'\n        above: {THRESHOLD}\n"
                    "        for: 0s\n        policy: auto\n")

        def quiet():
            """The expression has a value below the threshold, and neither
            Prometheus nor Alertmanager has the alert pending or firing."""
            q = urllib.parse.urlencode({"query": expr})
            result = http_json(f"{prom_url}/api/v1/query?{q}")["data"]["result"]
            if not result or not float(result[0]["value"][1]) < THRESHOLD:
                return False
            if any(a["labels"].get("alertname") == ALERT
                   for a in http_json(f"{prom_url}/api/v1/alerts")["data"]["alerts"]):
                return False
            return not http_json(f"{am_url}/api/v2/alerts?active=true")

        def wait_quiet():
            deadline = time.time() + quiet_timeout
            while time.time() < deadline:
                try:
                    if quiet():
                        return True
                except Exception:
                    pass
                time.sleep(0.25)
            return False

        def call_after(t0, who):
            with open(calls) as f:
                for line in f:
                    ts, caller, _ = (line.split() + ["", "", ""])[:3]
                    if caller == who and float(ts) >= t0:
                        return float(ts)
            return None

        rng = random.Random(args.seed)
        order = [("A", "alertmanager"), ("R", "rollbackd")] * args.trials
        # Where in the scrape cycle each pair's failure begins: spread evenly
        # over the interval, in random order, the same for the A and the R
        # trial of a pair, so both systems meet the same phases.
        phases = [(i + 0.5) / args.trials for i in range(args.trials)]
        rng.shuffle(phases)
        for n, (letter, system) in enumerate(order, 1):
            phase = phases[(n - 1) // 2]
            if not wait_quiet():
                results.append((system, None, None))
                print(f"   trial {n:2} {letter} {system:<12}  FAILED: not quiet within {quiet_timeout}s",
                      flush=True)
                http_json(f"{svc_url}/deploy", {"version": "v1", "error_ratio": 0})
                continue
            time.sleep(settle)
            # The new deployment first; once the platform lists it live
            # (the demo's reads DEPLOYING for its first second), it fails.
            http_json(f"{svc_url}/deploy", {"version": f"bad-{n}"})
            if not wait_live(svc_url):
                sys.exit(f"bench: deployment bad-{n} never became SUCCESS; see {work}")
            rb, rb_log = None, None
            if system == "rollbackd":
                rb_log = os.path.join(work, f"rollbackd-{n}.log")
                rb = start_rollbackd(rollbackd, work, n, prom_url, svc_url, wrapper, rb_log,
                                     ready_timeout=3 * interval + 60)
                procs.append(rb)
            else:
                receiver.arm()
            at = next_at_phase(prom_url, interval, phase)
            time.sleep(max(0.0, at - time.time()))

            t0 = time.time()
            http_json(f"{svc_url}/control", {"error_ratio": ERROR_RATIO})
            t1 = None
            deadline = t0 + trial_timeout
            while time.time() < deadline:
                t1 = call_after(t0, system)
                if t1 is not None:
                    break
                time.sleep(0.05)
            receiver.disarm()

            # When each step happened, after the failure began (t0).
            steps = []
            detail_lag = ""
            if system == "alertmanager":
                receiver.done.wait(timeout=10)
                steps += [("fired (eval time)", receiver.started),
                          ("webhook received", receiver.received)]
            else:
                # Let the run finish (verification), then stop rollbackd.
                end = time.time() + 30
                while time.time() < end and t1 is not None and not run_over(rb_log):
                    time.sleep(0.2)
                stop(rb)
                procs.remove(rb)
                fired, handed, started = rollbackd_times(rb_log)
                if fired is not None:
                    # Its evaluations come at a fixed lag after the scrapes too.
                    lag = (fired - next_at_phase(prom_url, interval, 0.0)) % interval
                    detail_lag = f"evaluates {lag * 1000:.0f} ms after the scrape; "
                steps += [("fired (eval time)", fired), ("trigger to the engine", handed),
                          ("run started", started)]
            detail = detail_lag + ", ".join(f"{name} +{t - t0:.2f}" for name, t in steps if t is not None)
            if system == "alertmanager" and receiver.error:
                detail += f"; receiver: {receiver.error}"
            if t1 is None:
                results.append((system, None, None))
                print(f"   trial {n:2} {letter} {system:<12}  FAILED: no rollback call within "
                      f"{trial_timeout}s  {detail}", flush=True)
            else:
                fired = steps[0][1]
                results.append((system, t1 - t0, None if fired is None else fired - t0))
                print(f"   trial {n:2} {letter} {system:<12} {t1 - t0:6.2f} s   "
                      f"failure at {phase:.2f} of the scrape cycle; {detail}", flush=True)
            # Heal with a healthy deploy, whatever happened: the next bad
            # deploy then has a healthy deployment right behind it.
            http_json(f"{svc_url}/deploy", {"version": "v1", "error_ratio": 0})
    finally:
        if receiver is not None:
            receiver.stop()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    print(f"\n   bad deploy -> platform rollback call, {interval_name} setting "
          "(then: of which the rule's firing, by its evaluation time, and firing -> call)")
    medians = {}
    for system, name in (("alertmanager", "Alertmanager pipeline"), ("rollbackd", "rollbackd")):
        mine = [r for r in results if r[0] == system]
        calls = [r[1] for r in mine if r[1] is not None]
        failed = len(mine) - len(calls)
        print(median_line(name, calls, failed))
        fired = [r[2] for r in mine if r[1] is not None and r[2] is not None]
        after = [r[1] - r[2] for r in mine if r[1] is not None and r[2] is not None]
        if fired:
            print(f"  {'':<22} firing median {statistics.median(fired):5.2f} s, "
                  f"firing -> call median {statistics.median(after):5.2f} s")
        medians[system] = (calls, failed)
    (am, am_failed), (rb, rb_failed) = medians["alertmanager"], medians["rollbackd"]
    ratio = None
    if am and rb:
        ratio = statistics.median(rb) / statistics.median(am)
        note = " (successful trials only)" if am_failed or rb_failed else ""
        print(f"  ratio rollbackd / alertmanager = {ratio:.2f}   (goal <= 1.0) "
              f"{'met' if ratio <= 1.0 else 'MISSED'}{note}")
    else:
        print("  ratio rollbackd / alertmanager: not computed (a system had no successful trial)")
    return ratio, am_failed + rb_failed


def wait_live(svc_url, timeout=10):
    """Until the newest deployment reads SUCCESS."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if http_json(f"{svc_url}/deployments")[0]["status"] == "SUCCESS":
            return True
        time.sleep(0.1)
    return False


def start_rollbackd(rollbackd, work, n, prom_url, svc_url, wrapper, log, ready_timeout):
    """A fresh `rollbackd watch` for trial n, once ready (every group evaluated once)."""
    port = free_port()
    toml = os.path.join(work, f"rollbackd-{n}.toml")
    with open(toml, "w") as f:
        f.write(
            f'[prometheus]\nurl = "{prom_url}"\ntimeout = "5s"\n\n'
            f'[watch]\nrule_paths = ["{work}/rules.yml"]\n\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\n\n'
            f'[service]\nname = "demo"\nbase_url = "{svc_url}"\n\n'
            f'[provider]\ntype = "command"\nlist = ["{wrapper}", "list"]\n'
            f'status = ["{wrapper}", "status"]\nrollback = ["{wrapper}", "rollback"]\n'
            'timeout = "10s"\n\n'
            # Detection speed against Alertmanager's pipeline, which judges
            # no blame; what blame costs is bench/blame.py's to measure.
            '[blame]\nenabled = false\n\n'
            # A fresh state dir per trial: nothing from earlier trials
            # (cooldown, rate limit, breaker, loop) can refuse this one.
            f'[engine]\nstate_dir = "{work}/state-{n}"\n'
            # These two act after the platform call only: the run ends sooner.
            'poll_interval = "500ms"\n\n'
            '[verify]\ninitial_wait = "1s"\nretry_interval = "1s"\n')
    env = dict(os.environ, BENCH_CALLER="rollbackd")
    p = subprocess.Popen([rollbackd, "--log-format", "json", "--config", toml, "watch"], env=env,
                         cwd=work, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.time() + ready_timeout
    while time.time() < deadline and p.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read()
            return p
        except Exception:
            time.sleep(0.1)
    p.kill()
    p.wait()
    with open(log) as f:
        tail = f.read().strip().splitlines()[-1:] or ["(empty log)"]
    sys.exit(f"bench: rollbackd did not become ready; {log}: {tail[0]}")


def json_lines(path):
    with open(path) as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def run_over(log):
    return any(str(message(e)).startswith(("rollback succeeded", "rollback failed"))
               for e in json_lines(log))


def message(e):
    """A JSON log line's message (flattened, or under `fields`)."""
    return e.get("message", e.get("fields", {}).get("message", ""))


def rollbackd_times(log):
    """From rollbackd's JSON log: the evaluation time at which the rule went
    firing, when the trigger reached the rollback engine, and when the
    rollback run started."""
    fired = handed = started = None
    for e in json_lines(log):
        fields = dict(e.get("fields", {}), **e)
        msg = str(message(e))
        try:
            if msg == "rule state changed" and fields.get("to") == "firing" and fired is None:
                fired = parse_time(fields["at"])
            elif msg.startswith("rollback trigger") and handed is None:
                handed = parse_time(e["timestamp"])
            elif msg == "rollback started" and started is None:
                started = parse_time(e["timestamp"])
        except (KeyError, ValueError):
            continue
    return fired, handed, started


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", choices=sorted(SETTINGS), default="1s",
                    help="scrape and evaluation interval: 1s, or 15s (the shipped defaults)")
    ap.add_argument("--both", action="store_true", help="run the 1s setting, then the 15s one")
    ap.add_argument("--trials", type=int, default=5, help="trials of each system (alternating)")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to wait once quiet before a trial (default: max(3, interval))")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random deploy phase")
    ap.add_argument("--no-build", action="store_true",
                    help="skip install-deps.sh and cargo build; use the binaries already in target/")
    args = ap.parse_args()
    if args.trials < 1:
        sys.exit("bench: --trials must be at least 1")

    rollbackd = os.path.join(ROOT, "target/release/rollbackd")
    service = os.path.join(ROOT, "target/release/examples/demo_service")
    if args.no_build:
        if not os.path.exists(service):
            service = os.path.join(ROOT, "target/debug/examples/demo_service")
        for b in (rollbackd, service):
            if not os.access(b, os.X_OK):
                sys.exit(f"bench: {b} is missing; run without --no-build")
        print(f"bench: not building; using {rollbackd} and {service}", flush=True)
    else:
        subprocess.run([os.path.join(ROOT, "scripts/install-deps.sh")], check=True)
        print("bench: building release binaries", flush=True)
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "rollbackd",
                        "--example", "demo_service"], cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="rollbackd-pipeline.")
    print(f"bench: logs in {work}", flush=True)
    settings = ["1s", "15s"] if args.both else [args.interval]
    summary = []
    for s in settings:
        summary.append((s, *run_setting(s, args, rollbackd, service, work)))
    print()
    for s, ratio, failed in summary:
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        print(f"ratio rollbackd / alertmanager at {s:>3}: {shown}"
              f"{'' if ratio is None else '  (goal <= 1.0: ' + ('met' if ratio <= 1.0 else 'MISSED') + ')'}"
              f"{f'  {failed} trial(s) FAILED' if failed else ''}")
    print(f"logs in {work}")
    if any(failed for _, _, failed in summary):
        sys.exit(1)


if __name__ == "__main__":
    main()
