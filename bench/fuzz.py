#!/usr/bin/env python3
"""The fuzz targets of src/fuzz.rs, many more cases than CI runs, in release.

Four targets (rule files, the config, Alertmanager payloads, Prometheus
answers), each fed CASES inputs built from the pieces real documents are
made of, mixed with random characters. Prints the cases run, the wall time,
the slowest target and the peak RSS of the test process. Bounded: CASES per
target, one process, one thread.

Usage: bench/fuzz.py [--cases 50000] [--seed N]
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = [
    "fuzz::rule_files_never_panic_and_errors_name_the_file",
    "fuzz::configs_never_panic_and_never_print_a_secret",
    "fuzz::alertmanager_payloads_never_panic_and_always_get_an_answer",
    "fuzz::prometheus_answers_never_panic",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    build = subprocess.run(
        ["cargo", "test", "--release", "--lib", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    binary = next(
        m["executable"]
        for m in map(json.loads, build.stdout.splitlines())
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]
    )
    env = dict(os.environ, ROLLBACKD_FUZZ_CASES=str(args.cases), ROLLBACKD_FUZZ_SEED=str(args.seed))
    times, peaks = {}, {}
    for target in TARGETS:
        started = time.monotonic()
        # The test process alone (wait4 gives its own peak RSS, not the build's).
        proc = subprocess.Popen(
            [binary, target, "--exact", "--test-threads=1"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        times[target] = time.monotonic() - started
        peaks[target] = usage.ru_maxrss / 1024
        if status != 0 or "1 passed" not in out:
            print(out)
            sys.exit(f"{target} failed with seed {args.seed}")
        print(f"{target}: {args.cases} cases in {times[target]:.1f} s "
              f"({args.cases / times[target]:,.0f} cases/s), peak RSS {peaks[target]:.1f} MiB")
    total = args.cases * len(TARGETS)
    print(f"fuzz: {total} cases, seed {args.seed}, {sum(times.values()):.1f} s, no panic; "
          f"slowest target {max(times, key=times.get)}; peak RSS {max(peaks.values()):.1f} MiB")


if __name__ == "__main__":
    main()
