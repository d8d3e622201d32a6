#!/usr/bin/env python3
"""Backup plus verification, and the copy to an S3-compatible store,
against plain pg_dump, on a ~100 MB database.

Starts a throwaway PostgreSQL 15 cluster on a free loopback port and a
local S3-compatible server (moto, from .venv), fills a database with about
100 MB of rows, then alternates plain `pg_dump -Fc`, `rollbackd backup
create` (pg_dump --compress=9, SHA-256, checksum re-read and `pg_restore
--list`) and the same with a `[database.backup_store]` (upload, read back
and hashed, pruned), and prints all three. Target: verification adds less
than 30 % of the dump time.

Usage: bench/db_backup.py [--rows 1000000] [--rounds 3]
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts/install-deps.sh")], check=True)
    print("bench: building rollbackd (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "rollbackd"], cwd=ROOT, check=True)
    rollbackd = os.path.join(ROOT, "target/release/rollbackd")

    work = tempfile.mkdtemp(prefix="rollbackd-dbbench.")
    if os.geteuid() == 0:
        shutil.chown(work, "postgres", "postgres")
    data = os.path.join(work, "data")
    port = free_port()
    subprocess.run(as_postgres([f"{BIN}/initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", data]),
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(as_postgres([f"{BIN}/pg_ctl", "-D", data, "-l", os.path.join(work, "log"), "-w", "-o",
                                f"-p {port} -k {work} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres", PGDATABASE="postgres")
    s3_port = free_port()
    moto = subprocess.Popen([os.path.join(ROOT, ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s3_env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
                  AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3_port}/bench", method="PUT"),
                                       timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        print(f"bench: loading {args.rows} rows", flush=True)
        subprocess.run(["psql", "-X", "-q", "-c",
                        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload, "
                        f"now() AS created FROM generate_series(1, {args.rows}) g",
                        "-c", "VACUUM ANALYZE big"],
                       env=env, check=True)
        size = subprocess.run(["psql", "-X", "-At", "-c", "SELECT pg_database_size('postgres')"],
                              env=env, check=True, capture_output=True, text=True).stdout.strip()
        config = os.path.join(work, "rollbackd.toml")
        database = (f'[database]\nurl = "postgres://postgres@127.0.0.1:{port}/postgres"\n'
                    f'backup_dir = "{work}/backups"\nkeep_backups = 1\n')
        with open(config, "w") as f:
            f.write(database)
        stored = os.path.join(work, "stored.toml")
        with open(stored, "w") as f:
            f.write(database + '\n[database.backup_store]\nurl = "s3://bench/rollbackd"\nkeep = 1\n')
        plain, total, dump, verify, with_store, upload = [], [], [], [], [], []
        for _ in range(args.rounds):
            started = time.monotonic()
            subprocess.run(["pg_dump", "--format=custom", "--file", os.path.join(work, "plain.dump")], env=env, check=True)
            plain.append(time.monotonic() - started)
            started = time.monotonic()
            out = subprocess.run([rollbackd, "--config", config, "backup", "create", "--reason", "benchmark"],
                                 check=True, capture_output=True, text=True).stdout
            total.append(time.monotonic() - started)
            m = re.search(r"pg_dump ([0-9.]+)s, verification ([0-9.]+)s", out)
            dump.append(float(m.group(1)))
            verify.append(float(m.group(2)))
            started = time.monotonic()
            out = subprocess.run([rollbackd, "--config", stored, "backup", "create", "--reason", "benchmark"],
                                 check=True, capture_output=True, text=True, env=s3_env).stdout
            with_store.append(time.monotonic() - started)
            m = re.search(r"read back \(sha256 matches\) in ([0-9.]+)s", out)
            upload.append(float(m.group(1)))
            ours = [p for p in os.listdir(os.path.join(work, "backups")) if p.endswith(".dump")]
            ours_size = os.path.getsize(os.path.join(work, "backups", ours[0]))
        dump_size = os.path.getsize(os.path.join(work, "plain.dump"))
    finally:
        moto.kill()
        subprocess.run(as_postgres([f"{BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    overhead = med(verify) / med(dump)
    print()
    print(f"database backup benchmark: {int(size) / 1e6:.0f} MB database, median of {args.rounds}")
    print(f"  dump size: plain -Fc {dump_size / 1e6:.1f} MB, rollbackd (--compress=9) {ours_size / 1e6:.1f} MB")
    print(f"  plain pg_dump -Fc            {med(plain):6.2f} s")
    print(f"  rollbackd backup create      {med(total):6.2f} s  (pg_dump {med(dump):.2f} s + verification {med(verify):.2f} s)")
    print(f"  verification / dump          {overhead * 100:6.1f} %  (target < 30 %: {'met' if overhead < 0.30 else 'MISSED'})")
    print(f"  whole backup / plain pg_dump {med(total) / med(plain):6.2f}")
    print(f"  with the copy to S3 (moto)   {med(with_store):6.2f} s  (upload and read-back {med(upload):.2f} s)")
    print(f"  with the copy / plain        {med(with_store) / med(plain):6.2f}")


if __name__ == "__main__":
    main()
