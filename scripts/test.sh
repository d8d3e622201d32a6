#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start their
# own real Prometheus and fake service on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# Benchmarks are compiled (so they cannot rot) but only run by `cargo bench`.
cargo build --locked --benches
# --no-fail-fast: one failing test binary must not hide the others.
# Four test threads on two cores: the integration tests mostly wait on the
# real services they start; the decision logic is tested on tokio's paused
# clock and does not depend on it.
cargo test --locked --no-fail-fast -- --test-threads 4
