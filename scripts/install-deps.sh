#!/usr/bin/env bash
# Installs what rollbackd's demo, tests and benchmarks run against:
# - Debian packages: a real Prometheus (`prometheus`, with promtool), a real
#   Alertmanager (`prometheus-alertmanager`),
#   PostgreSQL 15 (`postgresql-15`: initdb/pg_ctl under /usr/lib/postgresql/15/bin,
#   psql, pg_dump, pg_restore), curl, openssl (the TLS tests make their
#   certificates with it), git (the [gitops] tests push to a bare
#   repository), python3 and its venv module;
# - PyPI packages, in ./.venv: Alembic and psycopg2 for the migration tests,
#   moto's S3-compatible server for the backup store tests, aiosmtpd (a real
#   SMTP server, with STARTTLS) for the email notifier's.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v git >/dev/null 2>&1 || need+=(git)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client-15)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
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
  # The Debian packages may start system services (Prometheus on :9090, a
  # PostgreSQL cluster on :5432); rollbackd's tests start their own on free
  # ports and never use them.
fi

if [ ! -x .venv/bin/alembic ] || ! .venv/bin/python -c 'import psycopg2, alembic' >/dev/null 2>&1; then
  echo "rollbackd: installing Alembic into .venv (PyPI)" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'alembic>=1.13,<2' 'psycopg2-binary>=2.9,<3'
fi
if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "rollbackd: installing moto[server] and aiosmtpd into .venv (PyPI)" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' 'aiosmtpd>=1.4,<2'
fi
