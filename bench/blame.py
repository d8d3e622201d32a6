#!/usr/bin/env python3
"""Blame end to end against the demo's own deploy platform: does rollbackd
roll back only the deploys to blame, and what does judging blame cost
between the rule firing and the platform call?

The scenarios are those of tests/blame.rs, with the demo service playing
both the service and its deploy platform (instead of the Rust fake Railway),
reached through rollbackd's `command` provider. Each scenario starts fresh:
a demo service, a Prometheus scraping it every second, the service's knobs
as the scenario begins (`POST /deploy`, the live deployment), and a wait
until Prometheus holds at least 8 s of scrapes (`count_over_time(up[1m])`):
the baseline. Then the scenario's deploy, then a fresh `rollbackd watch`
(JSON logs to a file) with one rule, HighErrorRate (errors above 5 % of
requests over [5s], for 2s, `policy: auto`, evaluated every second), and
`[blame] baseline = "1m", baseline_gap = "1s", onset_window = "12s"`. Some
scenarios then change the service after rollbackd has evaluated the rule a
number of times (rollbackd_rule_evaluations_total{outcome="ok"} on its
/metrics).

rollbackd reaches the platform through one wrapper script, which appends
`<call> <deployment id> <date +%s.%N>` to a calls file, then runs the demo's
`examples/demo/deploys.sh`. A scenario waits (at most 60 s) for the log line
"blame judged", then for the expected calls (at most 20 s), then 3 s more:
the judgement precedes any platform call, so a wrong call would show by
then. A scenario is OK when the rollbacks and cancels in the calls file, the
verdict and (for low_traffic) the parked confirmations are the expected ones;
under the table, a WRONG one's judgement summary (with the per-version
request counts of a version test).

Cost: `--trials` pairs of the bad_deploy scenario, blame on then blame off
(`[blame] enabled = false`), each trial with its own fresh service,
Prometheus and rollbackd, so both arms meet the same conditions. Measured:
from rollbackd's "rule fired" log line (its timestamp) to the wrapper's
rollback timestamp. Each trial line also shows the rule's pending -> firing
(by its evaluation times; `for: 2s`) and the judgement's own seconds (the
log line's `seconds`). Printed per arm: median, min and max; the difference
of the medians (what blame adds) against the goal "blame adds < 0.5 s at
1 s scrapes", and the ratio on / off.

Usage: bench/blame.py [--trials 5] [--only NAME ...] [--no-build]
Exits 1 when a scenario is WRONG or a trial timed out. Everything runs on
loopback and is stopped at the end; logs are kept in a temporary directory
it names (one subdirectory per scenario and trial).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime

from benchlib import free_port, stop_process, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-token"
RATIO = ('(sum(rate(http_requests_total{code="500"}[5s])) or vector(0)) / '
         'sum(rate(http_requests_total[5s]))')
VERSIONS = ("        blame:\n          versions:\n"
            "            errors: 'sum by (version) (http_requests_total{code=\"500\"})'\n"
            "            requests: 'sum by (version) (http_requests_total)'\n")
MIN_TRAFFIC = ("        min_traffic:\n          expr: 'sum(rate(http_requests_total[5s]))'\n"
               "          above: 5\n")
ROLLING = {"version": "v2", "old_version": {"version": "v1", "share": 0.5,
                                             "error_ratio": 0, "latency": 0.04}}
JUDGED_TIMEOUT, CALL_TIMEOUT, SETTLE = 60, 20, 3


def scenario(name, deploy, expect, initial=None, later=None, rule="", rollbacks=0,
             cancels=0, pending=0):
    """later: (evaluations, path, knobs): POSTed once rollbackd has evaluated
    the rule that many times. expect: (verdict, reason)."""
    return dict(name=name, initial=initial or {}, deploy=deploy, later=later, rule=rule,
                expect=expect, rollbacks=rollbacks, cancels=cancels, pending=pending)


SCENARIOS = [
    scenario("bad_deploy", {"version": "v2", "error_ratio": 0.3},
             ("to_blame", "worse_than_baseline"), rollbacks=1),
    scenario("dependency_after_good_deploy", {"version": "v2"}, ("not_to_blame", "late_onset"),
             later=(16, "/control", {"dependency_error_ratio": 0.3})),
    scenario("dependency_before_good_deploy", {"version": "v2"},
             ("not_to_blame", "already_breaching"), initial={"dependency_error_ratio": 0.3}),
    scenario("bad_deploy_small_dependency", {"version": "v2", "error_ratio": 0.3},
             ("to_blame", "worse_than_baseline"), initial={"dependency_error_ratio": 0.02},
             rollbacks=1),
    scenario("slow_bad_deploy", {"version": "v2"}, ("to_blame", "worse_than_baseline"),
             later=(3, "/control", {"error_ratio": 0.3}), rollbacks=1),
    scenario("low_traffic", {"rps": 50, "error_ratio": 0.3}, ("inconclusive", "no_baseline"),
             initial={"rps": 1}, rule=MIN_TRAFFIC, pending=1),
    scenario("rolling_bad", dict(ROLLING, error_ratio=0.3), ("to_blame", "new_version_worse"),
             initial={"version_label": True, "rps": 200}, rule=VERSIONS, rollbacks=1),
    scenario("rolling_equal", dict(ROLLING, error_ratio=0, dependency_error_ratio=0.3),
             ("not_to_blame", "versions_equal"), initial={"version_label": True, "rps": 200},
             rule=VERSIONS),
    scenario("deploying", {"version": "v2"}, ("not_to_blame", "deploy_in_progress"),
             later=(2, "/deploy/in-progress", {"version": "v3", "error_ratio": 0.3}), cancels=1),
]


def http(url, body=None, token=None, timeout=5):
    """GET (or POST `body` as JSON); the answer's text."""
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers,
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def parse_time(text):
    """RFC 3339 to Unix seconds (fractions cut to microseconds)."""
    text = text.strip().replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    return datetime.fromisoformat(text).timestamp()


def wait_until(what, timeout, probe, step=0.2):
    """probe() until it returns something truthy; None after `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            got = probe()
        except Exception:
            got = None
        if got:
            return got
        time.sleep(step)
    print(f"   ({what}: not within {timeout:g} s)", flush=True)
    return None


def log_lines(path, message):
    """rollbackd's JSON log lines whose message starts with `message`."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if str(e.get("message", "")).startswith(message):
                out.append(e)
    return out


def calls(path):
    """The wrapper's record: [(call, deployment id, unix time)]."""
    with open(path) as f:
        return [(p[0], p[1], float(p[2])) for p in (line.split() for line in f) if len(p) == 3]


class Case:
    """One scenario's world: service, Prometheus, rollbackd, in `work`."""

    def __init__(self, sc, work, bins, blame=True):
        self.sc, self.work, self.blame = sc, work, blame
        self.rollbackd, self.service = bins
        self.procs = []
        os.makedirs(work)
        self.calls = os.path.join(work, "calls.txt")
        self.log = os.path.join(work, "rollbackd.log")
        open(self.calls, "w").close()

    def spawn(self, cmd, log):
        p = subprocess.Popen(cmd, cwd=self.work, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, log), "w"))
        self.procs.append(p)
        return p

    def stop(self):
        """rollbackd first (it finishes a running rollback against the live
        service), then Prometheus, then the service."""
        for p in reversed(self.procs):
            stop_process(p)

    def start(self):
        """Service with the initial knobs live, Prometheus with >= 8 s of it,
        then the scenario's deploy and a fresh rollbackd. False on timeout."""
        w = self.work
        svc_port, prom_port, self.rb_port = free_port(), free_port(), free_port()
        self.svc = f"http://127.0.0.1:{svc_port}"
        self.prom = f"http://127.0.0.1:{prom_port}"
        self.rb = f"http://127.0.0.1:{self.rb_port}"
        self.spawn([self.service, f"127.0.0.1:{svc_port}"], "service.log")
        wait_http(f"{self.svc}/health")
        http(f"{self.svc}/deploy", self.sc["initial"])
        with open(os.path.join(w, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: demo\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{svc_port}']\n")
        self.spawn(["prometheus", f"--config.file={w}/prometheus.yml",
                    f"--storage.tsdb.path={w}/prometheus-data",
                    f"--web.listen-address=127.0.0.1:{prom_port}"], "prometheus.log")
        wait_http(f"{self.prom}/-/ready")
        q = urllib.parse.quote("count_over_time(up[1m])")
        if not wait_until("8 s of scrapes", 40, lambda: float(json.loads(http(
                f"{self.prom}/api/v1/query?query={q}"))["data"]["result"][0]["value"][1]) >= 8):
            return False
        http(f"{self.svc}/deploy", self.sc["deploy"])
        self.write_config()
        self.spawn([self.rollbackd, "--log-format", "json", "--config", f"{w}/rollbackd.toml",
                    "watch"], "rollbackd.log")
        return wait_until("rollbackd ready", 20, lambda: http(f"{self.rb}/readyz"), 0.1) is not None

    def write_config(self):
        w = self.work
        wrapper = os.path.join(w, "platform.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\n# The demo's deploy platform; notes every call first.\nset -eu\n"
                    f'echo "$1 ${{ROLLBACKD_DEPLOYMENT_ID:--}} $(date +%s.%N)" >> "{self.calls}"\n'
                    f"DEMO_URL='{self.svc}' exec '{ROOT}/examples/demo/deploys.sh' \"$@\"\n")
        os.chmod(wrapper, 0o755)
        with open(os.path.join(w, "rules.yml"), "w") as f:
            f.write("groups:\n  - name: http\n    interval: 1s\n    rules:\n"
                    f"      - name: HighErrorRate\n        expr: '{RATIO}'\n        above: 0.05\n"
                    f"        for: 2s\n        policy: auto\n{self.sc['rule']}")
        cmds = "\n".join(f'{c} = ["{wrapper}", "{c}"]' for c in ("list", "status", "rollback", "cancel"))
        with open(os.path.join(w, "rollbackd.toml"), "w") as f:
            f.write(f'[prometheus]\nurl = "{self.prom}"\ntimeout = "2s"\n\n'
                    f'[service]\nname = "demo"\nbase_url = "{self.svc}"\n\n'
                    f'[watch]\nrule_paths = ["{w}/rules.yml"]\n\n'
                    f'[provider]\ntype = "command"\n{cmds}\ntimeout = "10s"\n\n'
                    '[blame]\nbaseline = "1m"\nbaseline_gap = "1s"\nonset_window = "12s"\n'
                    f'{"" if self.blame else "enabled = false"}\n\n'
                    f'[engine]\nstate_dir = "{w}/state"\npoll_interval = "200ms"\ncoalesce = "500ms"\n\n'
                    '[verify]\ninitial_wait = "0s"\nretry_interval = "300ms"\ncheck_timeout = "1s"\n\n'
                    f'[server]\nlisten = "127.0.0.1:{self.rb_port}"\napi_token = "{TOKEN}"\n')

    def evaluations(self):
        n = 0.0
        for line in http(f"{self.rb}/metrics").splitlines():
            if line.startswith("rollbackd_rule_evaluations_total{") and 'outcome="ok"' in line:
                n += float(line.rsplit(" ", 1)[1])
        return n

    def count(self, call):
        return sum(1 for c in calls(self.calls) if c[0] == call)

    def pending(self):
        return len(json.loads(http(f"{self.rb}/api/v1/pending", token=TOKEN)))


def judged_detail(line):
    """The judgement's summary, with the request counts of a version test."""
    try:
        evidence = json.loads(line["evidence"])
    except (KeyError, ValueError):
        return ""
    text = evidence.get("summary", "")
    for rule in evidence.get("rules", []):
        v = rule.get("versions") or {}
        if "old_n" in v:
            text += (f"; requests since go-live {v['old']} {v['old_n']:.0f}, {v['new']} {v['new_n']:.0f}"
                     f" (go-live {evidence.get('go_live')})")
    return text


def run_scenario(sc, work, bins):
    """Runs one scenario; returns its table row (a dict)."""
    row = dict(name=sc["name"], verdict="-", reason="-", seconds=None, rollbacks=0, cancels=0,
               pending=None, ok=False, note="")
    case = Case(sc, work, bins)
    try:
        if not case.start():
            row["note"] = "setup timed out"
            return row
        if sc["later"]:
            n, path, knobs = sc["later"]
            if not wait_until(f"{n} evaluations", 60, lambda: case.evaluations() >= n):
                row["note"] = f"no {n} evaluations"
                return row
            http(f"{case.svc}{path}", knobs)
        judged = wait_until("blame judged", JUDGED_TIMEOUT, lambda: log_lines(case.log, "blame judged"))
        if judged:
            j = judged[0]
            row.update(verdict=j.get("verdict", "?"), reason=j.get("reason", "?"),
                       seconds=j.get("seconds"), detail=judged_detail(j))
        want = {"rollback": sc["rollbacks"], "cancel": sc["cancels"]}
        if judged and any(want.values()):
            wait_until("the expected calls", CALL_TIMEOUT,
                       lambda: all(case.count(c) >= k for c, k in want.items()))
        time.sleep(SETTLE)
        row["rollbacks"], row["cancels"] = case.count("rollback"), case.count("cancel")
        if sc["pending"]:
            row["pending"] = wait_until("the parked confirmation", 10,
                                        lambda: case.pending() or None) or 0
        row["ok"] = bool(judged) and (row["verdict"], row["reason"]) == sc["expect"] \
            and (row["rollbacks"], row["cancels"]) == (sc["rollbacks"], sc["cancels"]) \
            and (row["pending"] or 0) == sc["pending"]
        if not row["ok"] and (row["verdict"], row["reason"]) != sc["expect"]:
            row["note"] = "expected " + "/".join(sc["expect"])
        return row
    finally:
        case.stop()


def run_trial(work, bins, blame):
    """One bad deploy; seconds from "rule fired" to the rollback call (None
    on timeout), the judgement's own seconds (blame on), and the seconds
    from pending to firing by the evaluation times (`for: 2s`)."""
    case = Case(SCENARIOS[0], work, bins, blame=blame)
    try:
        if not case.start():
            return None, None, None
        if not wait_until("the rollback call", JUDGED_TIMEOUT, lambda: case.count("rollback")):
            return None, None, None
        # Let the run end (verified) before everything stops.
        wait_until("the rollback run's end", CALL_TIMEOUT,
                   lambda: log_lines(case.log, "rollback succeeded") or log_lines(case.log, "rollback failed"))
        fired = log_lines(case.log, "rule fired")
        judged = log_lines(case.log, "blame judged")
        call = next(c[2] for c in calls(case.calls) if c[0] == "rollback")
        at = {e["to"]: parse_time(e["at"]) for e in reversed(log_lines(case.log, "rule state changed"))}
        held = at["firing"] - at["pending"] if {"pending", "firing"} <= at.keys() else None
        if not fired:
            return None, None, held
        return (call - parse_time(fired[0]["timestamp"]),
                judged[0].get("seconds") if judged else None, held)
    finally:
        case.stop()


def arm_line(name, values, failed):
    if not values:
        return f"  {name:<10} no successful trial ({failed} failed)"
    return (f"  {name:<10} median {statistics.median(values):6.3f} s   min {min(values):6.3f}   "
            f"max {max(values):6.3f}   ({len(values)} trials{f', {failed} FAILED' if failed else ''})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5, help="pairs of cost trials (blame on, off)")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME",
                    help="run only these scenarios (none: skip them, run the cost trials)")
    ap.add_argument("--no-build", action="store_true",
                    help="skip cargo build; use the binaries already in target/debug")
    args = ap.parse_args()
    if args.trials < 0:
        sys.exit("bench: --trials must not be negative")
    bins = (os.path.join(ROOT, "target/debug/rollbackd"),
            os.path.join(ROOT, "target/debug/examples/demo_service"))
    if args.no_build:
        for b in bins:
            if not os.access(b, os.X_OK):
                sys.exit(f"bench: {b} is missing; run without --no-build")
        print(f"bench: not building; using {bins[0]} and {bins[1]}", flush=True)
    else:
        print("bench: building rollbackd and the demo service", flush=True)
        subprocess.run(["cargo", "build", "--quiet", "--bin", "rollbackd", "--example",
                        "demo_service"], cwd=ROOT, check=True)
    names = [s["name"] for s in SCENARIOS]
    chosen = names if args.only is None else args.only
    for n in chosen:
        if n not in names:
            sys.exit(f"bench: no scenario {n}; known: {', '.join(names)}")

    work = tempfile.mkdtemp(prefix="rollbackd-blame.")
    print(f"bench: logs in {work}", flush=True)
    failed = False

    rows = []
    for sc in SCENARIOS:
        if sc["name"] in chosen:
            print(f"== scenario {sc['name']}", flush=True)
            rows.append((sc, run_scenario(sc, os.path.join(work, sc["name"]), bins)))
    if rows:
        print(f"\n{'scenario':<30} {'expected':<33} {'actual':<33} {'verdict/reason':<32} "
              f"{'blame s':>7}  result")
        for sc, r in rows:
            exp = f"{sc['rollbacks']} rollback, {sc['cancels']} cancel"
            act = f"{r['rollbacks']} rollback, {r['cancels']} cancel"
            if sc["pending"]:
                exp += f", {sc['pending']} pending"
                act += f", {r['pending'] or 0} pending"
            secs = f"{r['seconds']:.3f}" if r["seconds"] is not None else "-"
            print(f"{sc['name']:<30} {exp:<33} {act:<33} {r['verdict'] + '/' + r['reason']:<32} "
                  f"{secs:>7}  {'OK' if r['ok'] else 'WRONG'}{'  ' + r['note'] if r['note'] else ''}")
            failed |= not r["ok"]
        for sc, r in rows:
            if not r["ok"] and r.get("detail"):
                print(f"  {sc['name']}: {r['detail']}")

    if args.trials:
        print(f"\n== cost: bad_deploy, rule fired -> rollback call, {args.trials} pairs "
              "(blame on, then off; each trial fresh)", flush=True)
        results = {True: [], False: []}
        for i in range(1, args.trials + 1):
            for blame in (True, False):
                arm = "on" if blame else "off"
                took, judged, held = run_trial(os.path.join(work, f"trial-{i}-{arm}"), bins, blame)
                results[blame].append(took)
                shown = "TIMED OUT" if took is None else f"{took:6.3f} s"
                extra = f"   pending -> firing {held:.3f} s" if held is not None else ""
                extra += f"   judgement {judged:.3f} s" if judged is not None else ""
                print(f"   trial {i} blame {arm:<3} {shown}{extra}", flush=True)
        ok = {b: [v for v in vals if v is not None] for b, vals in results.items()}
        timed_out = {b: len(results[b]) - len(ok[b]) for b in results}
        failed |= any(timed_out.values())
        print("\n  rule fired -> rollback call")
        print(arm_line("blame on", ok[True], timed_out[True]))
        print(arm_line("blame off", ok[False], timed_out[False]))
        if ok[True] and ok[False]:
            on, off = statistics.median(ok[True]), statistics.median(ok[False])
            print(f"  blame adds {on - off:+.3f} s (median on - median off)   goal < 0.5 s at 1 s "
                  f"scrapes: {'met' if on - off < 0.5 else 'MISSED'}")
            print(f"  ratio on / off = {on / off:.2f}")
    print(f"\nlogs in {work}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
