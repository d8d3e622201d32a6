#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start their
# own real Prometheus and fake service on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
cargo test --locked --all-targets
