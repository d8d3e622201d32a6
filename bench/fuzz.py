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
import os
import resource
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
    parser.add_argument("--cases", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    subprocess.run(
        ["cargo", "test", "--release", "--lib", "--no-run"], cwd=ROOT, check=True,
        stderr=subprocess.DEVNULL,
    )
    env = dict(os.environ, ROLLBACKD_FUZZ_CASES=str(args.cases), ROLLBACKD_FUZZ_SEED=str(args.seed))
    times = {}
    for target in TARGETS:
        started = time.monotonic()
        run = subprocess.run(
            ["cargo", "test", "--release", "--lib", target, "--", "--exact", "--test-threads=1"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        times[target] = time.monotonic() - started
        if run.returncode != 0 or "1 passed" not in run.stdout:
            print(run.stdout, run.stderr, sep="\n")
            sys.exit(f"{target} failed with seed {args.seed}")
        print(f"{target}: {args.cases} cases in {times[target]:.1f} s "
              f"({args.cases / times[target]:,.0f} cases/s)")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    total = args.cases * len(TARGETS)
    wall = sum(times.values())
    print(f"fuzz: {total} cases, seed {args.seed}, {wall:.1f} s, no panic; "
          f"slowest target {max(times, key=times.get)}; peak RSS {peak:.1f} MiB")


if __name__ == "__main__":
    main()
