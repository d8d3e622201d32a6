#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start their
# own real Prometheus and fake service on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run against (Debian and PyPI packages) installs while the
# code compiles: nothing before `cargo test` needs it.
deps_log=$(mktemp)
scripts/install-deps.sh >"$deps_log" 2>&1 &
deps=$!
cargo fmt --all -- --check
# --all-targets: the benchmarks are checked too (so they cannot rot), and
# only run by `cargo bench`.
cargo clippy --locked --all-targets -- -D warnings
if ! wait "$deps"; then
  cat "$deps_log" >&2
  echo "rollbackd: scripts/install-deps.sh failed (above)" >&2
  exit 1
fi
cat "$deps_log" >&2
rm -f "$deps_log"
# --no-fail-fast: one failing test must not hide the others. The
# integration tests are one binary (tests/main.rs) and mostly wait on the
# real services they start, so six run at once on two cores; the
# decision logic is tested on tokio's paused clock and does not depend on it.
cargo test --locked --no-fail-fast -- --test-threads 6
