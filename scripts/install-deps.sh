#!/usr/bin/env bash
# Installs what rollbackd's demo, tests and benchmarks run against: a real
# Prometheus (Debian package `prometheus`, with promtool), curl and python3.
# Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "rollbackd: need ${need[*]} but not root and no sudo; install them with: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

echo "rollbackd: installing ${need[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian package may start a system Prometheus on :9090; rollbackd's
# tests start their own on free ports and never use it.
